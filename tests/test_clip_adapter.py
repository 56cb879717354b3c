"""CLIP-Adapter: the adapter's arithmetic, ratio 0 = zero-shot CLIP, D read from the backbone,
only the adapter trains, base -> new evaluation from a saved checkpoint, and the learned ratios
(RatioNet) by hand."""
import math

import pytest
import torch
import torch.nn.functional as F

from helpers import TINY_OPTS, make_cfg, run_train

from clipadapt.clip import embed_dim
from clipadapt.adapters import AdaptedClassifier, Adapter, RatioNet, adapter_logits, residual_blend

CFG = "configs/trainers/CLIPAdapter/vit_b16_base2new.yaml"
LEARNED_CFG = "configs/trainers/CLIPAdapter/vit_b16_base2new_learned_ratio.yaml"
ZS_CFG = "configs/trainers/ZeroshotCLIP/vit_b16.yaml"


def build_trainer(trainer, config_file, root, out, opts=()):
    """A trainer as train.py builds it (seed 1: the same random tiny CLIP every time)."""
    from clipadapt.engine import build_trainer as build, set_random_seed
    set_random_seed(1)
    return build(make_cfg(trainer, config_file, root, out, opts))


# ----- the modules, by hand ---------------------------------------------------------------------
def hand_adapter():
    adapter = Adapter(4, reduction=2)
    with torch.no_grad():
        adapter.fc[0].weight.copy_(torch.tensor([[1., 0., -1., 0.], [0., 2., 0., -1.]]))  # (2, 4)
        adapter.fc[2].weight.copy_(torch.tensor([[1., 0.], [0., 1.], [-1., 1.], [0., -2.]]))  # (4, 2)
    return adapter


def test_adapter_forward_matches_hand_computation():
    adapter = hand_adapter()
    x = torch.tensor([[3., 1., 1., 4.]])
    # hidden = relu([3 - 1, 2 - 4]) = [2, 0]; out = [2, 0, -2, 0]; final ReLU -> [2, 0, 0, 0]
    assert torch.equal(adapter(x), torch.tensor([[2., 0., 0., 0.]]))
    adapter.fc = adapter.fc[:3]  # the paper's equation: no final ReLU
    assert torch.equal(adapter(x), torch.tensor([[2., 0., -2., 0.]]))
    assert list(Adapter(4, reduction=2).state_dict()) == ["fc.0.weight", "fc.2.weight"]  # the released names
    assert len(Adapter(4, 2, final_relu=False).fc) == 3


def test_blend_and_logits_match_hand_computation():
    adapter = hand_adapter()
    x = torch.tensor([[3., 1., 1., 4.]])
    # 0.25 * [2, 0, 0, 0] + 0.75 * [3, 1, 1, 4] = [2.75, 0.75, 0.75, 3]
    assert torch.allclose(residual_blend(x, adapter, 0.25), torch.tensor([[2.75, 0.75, 0.75, 3.]]))
    assert residual_blend(x, None, 0.25) is x
    text = torch.tensor([[1., 0., 0., 0.], [0., 0., 0., 2.]])  # not unit-norm: normalised inside
    norm = (2.75 ** 2 + 2 * 0.75 ** 2 + 9) ** 0.5
    expected = 10 * torch.tensor([[2.75 / norm, 3. / norm]])
    assert torch.allclose(adapter_logits(x, text, 10.0, adapter, 0.25), expected)
    clf = AdaptedClassifier(4, ratio=0.25, reduction=2)
    clf.visual.load_state_dict(adapter.state_dict())
    assert torch.allclose(clf(x, text, 10.0), expected)
    # A text adapter blends the classifier weights the same way.
    both = AdaptedClassifier(4, ratio=0.25, reduction=2, text=True, text_ratio=0.5)
    both.visual.load_state_dict(adapter.state_dict())
    both.text.load_state_dict(adapter.state_dict())
    w = residual_blend(text, adapter, 0.5)
    assert torch.allclose(both(x, text, 10.0), 10 * F.normalize(residual_blend(x, adapter, 0.25), dim=-1)
                          @ F.normalize(w, dim=-1).t())


def test_adapters_are_positively_homogeneous_so_feature_scale_does_not_matter():
    torch.manual_seed(0)
    clf = AdaptedClassifier(16, ratio=0.6, text=True)
    f, w = torch.randn(5, 16), torch.randn(3, 16)
    assert torch.allclose(clf(f, w, 1.0), clf(7.0 * f, 0.1 * w, 1.0), atol=1e-6)


# ----- D follows the backbone -------------------------------------------------------------------
@pytest.mark.parametrize("name,dim", [("tiny-vit", 32), ("tiny-rn", 48), ("ViT-B/16", 512), ("RN50", 1024)])
def test_feature_dim_is_read_from_the_backbone(name, dim):
    from clipadapt.clip import load_clip
    model, _, _ = load_clip(name, pretrained=False)
    assert embed_dim(model) == dim
    clf = AdaptedClassifier(embed_dim(model), text=True)
    assert clf.visual.fc[0].weight.shape == (dim // 4, dim) and clf.text.fc[2].weight.shape == (dim, dim // 4)
    assert clf(torch.randn(2, dim), torch.randn(5, dim), 1.0).shape == (2, 5)


# ----- the trainer ------------------------------------------------------------------------------
def test_ratio_zero_reproduces_zeroshot_predictions(shapes_root, tmp_path):
    zs = build_trainer("ZeroshotCLIP", ZS_CFG, shapes_root, tmp_path / "zs")
    ca = build_trainer("CLIPAdapter", CFG, shapes_root, tmp_path / "ca", ["TRAINER.CLIP_ADAPTER.RATIO", "0.0"])
    with torch.no_grad():
        for p in ca.classifier.parameters():  # a trained-looking adapter: ratio 0 must still ignore it
            p.add_(torch.randn_like(p))
    feats = zs.cached_features("test")
    ca.prepare_eval()
    with torch.no_grad():
        zs_logits, ca_logits = zs.model_inference(feats), ca.model_inference(feats)
    assert torch.equal(zs_logits.argmax(1), ca_logits.argmax(1))
    assert torch.allclose(zs_logits, ca_logits, rtol=0, atol=1e-5)
    assert zs.test() == ca.test()


def test_only_the_adapter_trains(shapes_root, tmp_path):
    ca = build_trainer("CLIPAdapter", CFG, shapes_root, tmp_path / "ca",
                       ["TRAINER.CLIP_ADAPTER.TEXT_ADAPTER", "True", "DATASET.NUM_SHOTS", "2",
                        "DATASET.SUBSAMPLE_CLASSES", "base", "OPTIM.WARMUP_EPOCH", "0"])
    assert ca.get_model_names() == ["clip_adapter"]
    assert not any(p.requires_grad for p in ca.clip_model.parameters())
    clip_before = {k: v.clone() for k, v in ca.clip_model.state_dict().items()}
    adapter_before = {k: v.clone() for k, v in ca.classifier.state_dict().items()}
    assert set(adapter_before) == {"visual.fc.0.weight", "visual.fc.2.weight", "text.fc.0.weight", "text.fc.2.weight"}
    ca.set_model_mode("train")
    ca.num_batches, ca.batch_idx = 2, 0
    batch = next(iter(ca.train_loader_x))
    ca.forward_backward(batch)
    assert all(torch.equal(v, ca.clip_model.state_dict()[k]) for k, v in clip_before.items())
    assert all(not torch.equal(v, ca.classifier.state_dict()[k]) for k, v in adapter_before.items())


def test_config_errors_name_the_key(shapes_root, tmp_path):
    with pytest.raises(ValueError, match="VISUAL_ADAPTER and TEXT_ADAPTER"):
        build_trainer("CLIPAdapter", CFG, shapes_root, tmp_path / "x", ["TRAINER.CLIP_ADAPTER.VISUAL_ADAPTER", "False"])
    with pytest.raises(ValueError, match="RATIO"):
        build_trainer("CLIPAdapter", CFG, shapes_root, tmp_path / "y", ["TRAINER.CLIP_ADAPTER.RATIO", "1.5"])


def test_shapes_config_matches_the_builtin_world():
    import trainers  # noqa: F401
    from clipadapt.config import build_config
    cfg = build_config("CLIPAdapter", "configs/datasets/shapes.yaml", "configs/trainers/CLIPAdapter/shapes.yaml")
    assert cfg.MODEL.BACKBONE.NAME == "shapes-clip" and tuple(cfg.INPUT.SIZE) == (32, 32)
    for name in ("vit_b16", "rn50", "vit_b16_base2new", "rn50_base2new", "rn50_learned_ratio",
                 "vit_b16_base2new_learned_ratio"):
        cfg = build_config("CLIPAdapter", "", f"configs/trainers/CLIPAdapter/{name}.yaml")
        assert cfg.DATALOADER.TRAIN_X.BATCH_SIZE == 32 and cfg.OPTIM.MAX_EPOCH in (50, 200)


def test_base_to_new_from_saved_checkpoint(shapes_root, tmp_path):
    opts = ["OPTIM.MAX_EPOCH", "2", "DATASET.NUM_SHOTS", "4", "DATALOADER.TRAIN_X.BATCH_SIZE", "16"]
    base_dir = tmp_path / "train_base"
    base = build_trainer("CLIPAdapter", CFG, shapes_root, base_dir, opts + ["DATASET.SUBSAMPLE_CLASSES", "base"])
    base.train()
    ckpt = torch.load(base_dir / "clip_adapter" / "model.pth.tar-2", weights_only=True)
    assert set(ckpt["state_dict"]) == {"visual.fc.0.weight", "visual.fc.2.weight"}  # nothing class-dependent
    assert all(torch.equal(base.classifier.state_dict()[k], v) for k, v in ckpt["state_dict"].items())

    # As the test script runs it: train.py --eval-only on the new classes from the saved epoch.
    new_dir = tmp_path / "test_new"
    proc = run_train(["--root", shapes_root, "--seed", "1", "--trainer", "CLIPAdapter", "--dataset-config-file",
                      "configs/datasets/shapes.yaml", "--config-file", CFG, "--output-dir", str(new_dir),
                      "--eval-only", "--model-dir", str(base_dir), "--load-epoch", "2"]
                     + TINY_OPTS + opts + ["DATASET.SUBSAMPLE_CLASSES", "new"])
    log = (new_dir / "log.txt").read_text()
    assert "model.pth.tar-2" in log and "* total: 96" in log and "Finish training" not in log  # 24 new x 4
    assert "SUBSAMPLE NEW CLASSES!" in proc.stdout
    assert "a photo of a" in log and "D = 32" in log


# ----- learned ratios (RatioNet) ----------------------------------------------------------------
def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def hand_ratio_net():
    net = RatioNet(4, reduction=2)
    with torch.no_grad():
        net.fc[0].weight.copy_(torch.tensor([[1., 1., 0., 0.], [1., -1., 0., 0.]]))
        net.fc[0].bias.copy_(torch.tensor([0., 0.5]))
        net.fc[2].weight.copy_(torch.tensor([[1., 0.], [0., -2.]]))
        net.fc[2].bias.copy_(torch.tensor([-1., 0.]))
    return net


def test_ratio_net_forward_matches_hand_computation():
    text = torch.tensor([[2., 0., 0., 0.], [0., 5., 0., 0.]])
    # rows -> e1, e2; mean (1/2, 1/2, 0, 0) -> descriptor (1/sqrt2, 1/sqrt2, 0, 0)
    # hidden = relu([sqrt2, 0 + 0.5]); out = [sqrt2 - 1, -2 * 0.5] -> sigmoid
    alpha, beta = hand_ratio_net()(text)
    assert alpha.item() == pytest.approx(sigmoid(math.sqrt(2) - 1), abs=1e-6)
    assert beta.item() == pytest.approx(sigmoid(-1.0), abs=1e-6)
    # the descriptor ignores each class feature's norm and the number of copies of the class list
    assert torch.allclose(torch.stack(hand_ratio_net()(torch.cat([3 * text, text]))), torch.stack((alpha, beta)))


def test_learned_ratios_enter_the_blend_as_alpha_and_beta():
    torch.manual_seed(0)
    clf = AdaptedClassifier(4, reduction=2, text=True, learn_ratio=True, ratio_reduction=2)
    clf.ratio_net.load_state_dict(hand_ratio_net().state_dict())
    x, text = torch.randn(3, 4), torch.tensor([[2., 0., 0., 0.], [0., 5., 0., 0.]])
    alpha, beta = sigmoid(math.sqrt(2) - 1), sigmoid(-1.0)
    expected = adapter_logits(x, text, 10.0, clf.visual, alpha, clf.text, beta)
    assert torch.allclose(clf(x, text, 10.0), expected, atol=1e-6)


def test_untrained_ratio_net_starts_at_the_configured_ratios():
    torch.manual_seed(0)
    learned = AdaptedClassifier(16, ratio=0.3, text=True, text_ratio=0.7, learn_ratio=True)
    fixed = AdaptedClassifier(16, ratio=0.3, text=True, text_ratio=0.7)
    fixed.load_state_dict({k: v for k, v in learned.state_dict().items() if not k.startswith("ratio_net.")})
    f, w = torch.randn(5, 16), torch.randn(3, 16)
    assert [r.item() for r in learned.ratios(w)] == pytest.approx([0.3, 0.7], abs=1e-6)
    assert torch.allclose(learned(f, w, 5.0), fixed(f, w, 5.0), atol=1e-5)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        AdaptedClassifier(16, ratio=0.0, learn_ratio=True)


def test_gradient_reaches_the_ratio_net_and_ratios_stay_in_0_1():
    torch.manual_seed(0)
    clf = AdaptedClassifier(16, ratio=0.5, text=True, text_ratio=0.5, learn_ratio=True)
    f, w, y = torch.randn(8, 16), torch.randn(4, 16), torch.arange(8) % 4
    optim = torch.optim.SGD(clf.parameters(), lr=0.5)
    for step in range(3):
        optim.zero_grad()
        F.cross_entropy(clf(f, w, 10.0), y).backward()
        if step == 0:  # the zero-initialised last layer gets a gradient at once, the first layer after it moves
            assert clf.ratio_net.fc[2].bias.grad.abs().min() > 0 and clf.ratio_net.fc[2].weight.grad.abs().sum() > 0
        optim.step()
    assert clf.ratio_net.fc[0].weight.grad.abs().sum() > 0
    alpha, beta = clf.ratios(w)
    assert 0 < alpha.item() < 1 and 0 < beta.item() < 1 and abs(alpha.item() - 0.5) > 1e-4


def test_learned_ratio_trains_saves_and_evaluates_on_new_classes(shapes_root, tmp_path):
    opts = ["OPTIM.MAX_EPOCH", "1", "DATASET.NUM_SHOTS", "4", "DATALOADER.TRAIN_X.BATCH_SIZE", "16",
            "OPTIM.WARMUP_EPOCH", "0", "OPTIM.LR", "0.5"]
    base_dir = tmp_path / "train_base"
    base = build_trainer("CLIPAdapter", LEARNED_CFG, shapes_root, base_dir, opts + ["DATASET.SUBSAMPLE_CLASSES", "base"])
    assert base.method_cfg.LEARN_RATIO and base.method_cfg.RATIO == 0.2
    start = base.classifier.ratios(base.train_text_weights)[0].item()
    base.train()
    trained = base.classifier.ratios(base.train_text_weights)[0].item()
    assert start == pytest.approx(0.2, abs=1e-6) and trained != pytest.approx(0.2, abs=1e-5)  # learned in the loop
    ckpt = torch.load(base_dir / "clip_adapter" / "model.pth.tar-1", weights_only=True)
    assert {k for k in ckpt["state_dict"] if k.startswith("ratio_net.")} == {
        "ratio_net.fc.0.weight", "ratio_net.fc.0.bias", "ratio_net.fc.2.weight", "ratio_net.fc.2.bias"}

    new = build_trainer("CLIPAdapter", LEARNED_CFG, shapes_root, tmp_path / "test_new",
                        opts + ["DATASET.SUBSAMPLE_CLASSES", "new"])
    new.load_model(str(base_dir), epoch=1)
    new.prepare_eval()
    new_text = new.text_weights(new.classnames)
    assert float(new.eval_ratio) == pytest.approx(base.classifier.ratios(new_text)[0].item(), abs=1e-6)
    assert 0 < float(new.eval_ratio) < 1


def test_learned_ratio_config_errors(shapes_root, tmp_path):
    with pytest.raises(ValueError, match="RATIO = 1.0: with LEARN_RATIO"):
        build_trainer("CLIPAdapter", LEARNED_CFG, shapes_root, tmp_path / "x", ["TRAINER.CLIP_ADAPTER.RATIO", "1.0"])


def test_few_shot_script_follows_the_released_recipe(tmp_path):
    """scripts/clip_adapter/few_shot.sh: RN50 (or the learned-ratio config) with CoOp's epochs per shot count,
    the run folder named after CFG (a stub `python` records the calls; the epochs are read from the configs)."""
    import os
    import stat
    import subprocess
    import sys
    from helpers import REPO
    from clipadapt.config import build_config
    log = tmp_path / "calls.txt"
    stub = tmp_path / "bin" / "python"
    stub.parent.mkdir()
    # the scripts' planning step (python -m clipadapt.runs) runs for real; train.py calls are recorded
    stub.write_text(f'#!/usr/bin/env bash\nif [ "$1" != train.py ]; then exec "{sys.executable}" "$@"; fi\n'
                    f'echo "$@" >> {log}\n')
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    for cfg_name, dataset, epochs in (("rn50", "eurosat", [50, 100, 100, 200, 200]), ("rn50", "imagenet", [50] * 5),
                                      ("rn50_learned_ratio", "eurosat", [50, 100, 100, 200, 200])):
        env = dict(os.environ, PATH=f"{stub.parent}:{os.environ['PATH']}", OUTPUT=str(tmp_path / "out"), CFG=cfg_name)
        log.write_text("")
        subprocess.run(["bash", os.path.join(REPO, "scripts/clip_adapter/few_shot.sh"), dataset], env=env, check=True,
                       capture_output=True)
        calls = [line.split() for line in log.read_text().splitlines()]
        assert len(calls) == 15
        for call in calls:
            shots = int(call[call.index("DATASET.NUM_SHOTS") + 1])
            config = os.path.join(REPO, call[call.index("--config-file") + 1])
            cfg = build_config("CLIPAdapter", "", config)
            assert cfg.OPTIM.MAX_EPOCH == epochs[[1, 2, 4, 8, 16].index(shots)]
            assert cfg.MODEL.BACKBONE.NAME == "RN50" and cfg.TRAINER.CLIP_ADAPTER.LEARN_RATIO == ("learned" in cfg_name)
            assert call[call.index("--output-dir") + 1].endswith(f"/CLIPAdapter/{cfg_name}_{shots}shots/seed{call[call.index('--seed') + 1]}")
