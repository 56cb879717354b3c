"""CLIP-Adapter: the adapter's arithmetic, ratio 0 = zero-shot CLIP, D read from the backbone,
only the adapter trains, and base -> new evaluation from a saved checkpoint."""
import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_OPTS, make_cfg, run_train

from clipadapt.clip import embed_dim
from trainers.clip_adapter import AdaptedClassifier, Adapter, adapter_logits, residual_blend

CFG = "configs/trainers/CLIPAdapter/vit_b16_base2new.yaml"
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
    for name in ("vit_b16", "rn50", "vit_b16_base2new", "rn50_base2new"):
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
