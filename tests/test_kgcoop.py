"""KgCoOp: the loss CE + W * (1 - mean cos(w, w_clip)) by hand, W 0 trains exactly as CoOp, the
teacher is the dataset's template on the frozen CLIP already loaded, the released node and keys, and
a released checkpoint (with its unused meta_net / bias_vectors) evaluates."""
import pytest
import torch
import torch.nn.functional as F

from helpers import make_cfg, run_train

from clipadapt.clip import prompts_for

CFG = "configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml"
COOP_CFG = "configs/trainers/CoOp/vit_b16_ctxv1.yaml"
FAST = ["DATASET.NUM_SHOTS", "2", "DATALOADER.TRAIN_X.BATCH_SIZE", "16", "TRAINER.COOP.PREC", "fp32"]


def build(trainer, config_file, root, out, opts=()):
    from clipadapt.engine import TRAINER_REGISTRY, set_random_seed
    cfg = make_cfg(trainer, config_file, root, out, FAST + list(opts))
    set_random_seed(1)
    return TRAINER_REGISTRY.get(trainer)(cfg)


def one_step(trainer):
    from clipadapt.engine import set_random_seed
    trainer.set_model_mode("train")
    trainer.epoch, trainer.batch_idx, trainer.num_batches = 0, 0, 2  # not the last batch: no scheduler step
    set_random_seed(5)
    batch = next(iter(trainer.train_loader_x))
    return batch, trainer.forward_backward(batch)


def test_loss_matches_hand_computation(shapes_root, tmp_path):
    trainer = build("KgCoOp", CFG, shapes_root, tmp_path)
    assert trainer.method_cfg.W == 8.0
    with torch.no_grad():  # the teacher by hand: the dataset's template through the frozen CLIP's encode_text
        tokens = trainer.tokenizer(prompts_for(trainer.train_classnames, "Shapes")).to(trainer.device)
        teacher = F.normalize(trainer.clip_model.encode_text(tokens).float(), dim=-1)
    torch.testing.assert_close(trainer.hand_crafted_features(), teacher, rtol=1e-5, atol=1e-6)
    # "a photo of a" is the template itself here: the score starts at 0 (checked), so move the context away
    assert one_step(build("KgCoOp", CFG, shapes_root, tmp_path / "init"))[1]["score"] == pytest.approx(0, abs=1e-6)
    with torch.no_grad():
        trainer.prompt_learner.ctx.add_(0.05 * torch.randn_like(trainer.prompt_learner.ctx))
    ctx = trainer.prompt_learner.ctx.detach().clone()
    batch, summary = one_step(trainer)
    with torch.no_grad():
        trainer.prompt_learner.ctx.copy_(ctx)  # back to the weights the step started from
        feats, label = trainer.parse_batch_train(batch)
        text = F.normalize(trainer.text_encoder(*trainer.prompt_learner()), dim=-1)
        logits = trainer.logit_scale * F.normalize(feats, dim=-1) @ text.t()
        cos = (text * teacher).sum(-1)  # both unit-norm
        score = 1 - cos.mean()
        ce = F.cross_entropy(logits, label)
    assert set(summary) == {"loss", "ce", "score", "acc"}
    assert summary["score"] == pytest.approx(score.item(), rel=1e-5, abs=1e-7)
    assert summary["ce"] == pytest.approx(ce.item(), rel=1e-5)
    assert summary["loss"] == pytest.approx(ce.item() + 8.0 * score.item(), rel=1e-5)
    assert 0 < summary["score"] < 1


def test_zero_weight_trains_exactly_as_coop(shapes_root, tmp_path):
    kg = build("KgCoOp", CFG, shapes_root, tmp_path / "kg", ["TRAINER.COOP.W", "0.0", "OPTIM.LR", "0.002"])
    coop = build("CoOp", COOP_CFG, shapes_root, tmp_path / "coop", ["OPTIM.LR", "0.002"])
    kg8 = build("KgCoOp", CFG, shapes_root, tmp_path / "kg8", ["OPTIM.LR", "0.002"])
    torch.testing.assert_close(kg.prompt_learner.ctx, coop.prompt_learner.ctx, rtol=0, atol=0)
    shift = 0.05 * torch.randn_like(coop.prompt_learner.ctx)  # away from the template, where the score's gradient is 0
    for trainer in (kg, coop, kg8):
        with torch.no_grad():
            trainer.prompt_learner.ctx.add_(shift)
    _, kg_summary = one_step(kg)
    _, coop_summary = one_step(coop)
    assert kg_summary["loss"] == coop_summary["loss"]
    torch.testing.assert_close(kg.prompt_learner.ctx, coop.prompt_learner.ctx, rtol=0, atol=0)
    # and the score pulls the context: with W 8 the same step moves it elsewhere
    one_step(kg8)
    assert not torch.allclose(kg8.prompt_learner.ctx, coop.prompt_learner.ctx)


def test_negative_weight_is_refused_by_its_key(shapes_root, tmp_path):
    with pytest.raises(ValueError, match=r"^TRAINER\.COOP\.W is -1\.0"):
        build("KgCoOp", CFG, shapes_root, tmp_path, ["TRAINER.COOP.W", "-1.0"])


def test_released_checkpoint_evaluates(shapes_root, tmp_path):
    """A checkpoint as the released trainer saves it (its prompt learner's state: ctx, the unused
    bias_vectors and meta_net.linear1, the class-token buffers; no meta) loads with --model-dir."""
    trainer = build("KgCoOp", CFG, shapes_root, tmp_path / "build")
    ctx = torch.randn_like(trainer.prompt_learner.ctx) * 0.02
    state = {"ctx": ctx, "bias_vectors": torch.zeros(1, 512), "meta_net.linear1.weight": torch.zeros(512, 512),
             "meta_net.linear1.bias": torch.zeros(512), "token_prefix": torch.zeros(24, 1, 64),
             "token_suffix": torch.zeros(24, 72, 64)}
    run = tmp_path / "released"
    (run / "prompt_learner").mkdir(parents=True)
    torch.save({"state_dict": state, "epoch": 100, "optimizer": None, "scheduler": None},
               run / "prompt_learner" / "model.pth.tar-100")
    opts = ["MODEL.BACKBONE.NAME", "tiny-vit", "MODEL.BACKBONE.PRETRAINED", "False", "INPUT.SIZE", "(32,32)",
            "DATALOADER.NUM_WORKERS", "0", "TRAINER.COOP.PREC", "fp32", "DATASET.SUBSAMPLE_CLASSES", "new"]
    proc = run_train(["--root", shapes_root, "--seed", "1", "--trainer", "KgCoOp", "--dataset-config-file",
                      "configs/datasets/shapes.yaml", "--config-file", CFG, "--output-dir", str(tmp_path / "test"),
                      "--model-dir", str(run), "--load-epoch", "100", "--eval-only", *opts])
    assert "* accuracy:" in proc.stdout
