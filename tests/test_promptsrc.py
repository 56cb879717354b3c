"""PromptSRC: the three self-regularising terms and GPA's weights by hand, the fixed text features
(mean over the 60 templates), the final model is the GPA-weighted sum of the epochs' prompts, and the
training summary names each term as released."""
import math

import pytest
import torch
import torch.nn.functional as F

from helpers import make_cfg

from trainers.promptsrc import gaussian_weights, self_regularization

CFG = "configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml"
FAST = ["DATASET.NUM_SHOTS", "1", "DATALOADER.TRAIN_X.BATCH_SIZE", "16", "TRAINER.PROMPTSRC.PREC", "fp32",
        "TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT", "2", "TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION", "2",
        "OPTIM.MAX_EPOCH", "3", "TRAINER.PROMPTSRC.GPA_MEAN", "2.0", "TRAINER.PROMPTSRC.GPA_STD", "1.0",
        "TEST.NO_TEST", "True", "DATASET.SUBSAMPLE_CLASSES", "base"]


def test_gpa_weights_by_hand():
    w = gaussian_weights(3, 2.0, 1.0)
    e = math.exp(-0.5)  # the density at 1 and 3 relative to its peak at 2
    assert w == pytest.approx([e / (1 + 2 * e), 1 / (1 + 2 * e), e / (1 + 2 * e)])
    assert sum(gaussian_weights(20, 15, 1)) == pytest.approx(1.0)
    assert max(range(20), key=gaussian_weights(20, 15, 1).__getitem__) == 14  # epoch 15


def test_self_regularization_by_hand():
    text, fixed = torch.tensor([[0.6, 0.8], [1.0, 0.0]]), torch.tensor([[0.8, 0.6], [1.0, 0.0]])
    image, frozen = torch.tensor([[0.0, 1.0]]), torch.tensor([[0.6, 0.8]])
    logits, zero_shot = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 0.0]])
    terms = self_regularization(text, fixed, image, frozen, logits, zero_shot, text_weight=25, image_weight=10)
    assert terms["loss_scl_text"].item() == pytest.approx(25 * (0.2 + 0.2) / 4)  # mean |diff| over 4 entries
    assert terms["loss_scl_image"].item() == pytest.approx(10 * (0.6 + 0.2) / 2)
    p = torch.softmax(logits, 1)[0]  # KL(uniform || p) summed, / 2 logits
    assert terms["L_SCL_logits"].item() == pytest.approx((0.5 * math.log(0.5 / p[0]) + 0.5 * math.log(0.5 / p[1])) / 2)


def build(root, out, opts=()):
    from clipadapt.engine import TRAINER_REGISTRY, set_random_seed
    cfg = make_cfg("PromptSRC", CFG, root, out, FAST + list(opts))
    set_random_seed(1)
    return TRAINER_REGISTRY.get("PromptSRC")(cfg)


def test_fixed_text_features_average_the_60_templates(shapes_root, tmp_path):
    from clipadapt.clip import IMAGENET_TEMPLATES
    trainer = build(shapes_root, tmp_path)
    assert len(IMAGENET_TEMPLATES) == 60 and IMAGENET_TEMPLATES[0] == "a photo of a {}."
    names = trainer.train_classnames[:1]
    with torch.no_grad():
        feats = torch.stack([trainer.clip_model.encode_text(trainer.tokenizer([t.format(names[0])]))[0]
                             for t in IMAGENET_TEMPLATES])
    want = F.normalize(feats.mean(0), dim=-1)
    torch.testing.assert_close(trainer.fixed_text_features()[0], want, rtol=1e-5, atol=1e-6)


def test_final_prompts_are_the_gpa_sum_of_the_epochs(shapes_root, tmp_path):
    from trainers.promptsrc import PromptSRC
    trainer = build(shapes_root, tmp_path)
    seen = []
    original = PromptSRC.after_epoch

    def record(self):
        seen.append({k: v.detach().clone() for k, v in self.prompt_learner.named_parameters()})
        original(self)

    trainer.after_epoch = record.__get__(trainer)
    summaries = []
    forward_backward = trainer.forward_backward
    trainer.forward_backward = lambda batch: summaries.append(forward_backward(batch)) or summaries[-1]
    trainer.train()
    assert set(summaries[0]) == {"loss", "loss_ce", "loss_scl_text", "loss_scl_image", "L_SCL_logits", "acc"}
    s = summaries[0]
    assert s["loss"] == pytest.approx(s["loss_ce"] + s["loss_scl_text"] + s["loss_scl_image"] + s["L_SCL_logits"],
                                      rel=1e-5)
    weights = gaussian_weights(3, 2.0, 1.0)
    assert len(seen) == 3 and not torch.equal(seen[0]["ctx"], seen[2]["ctx"])
    for name, param in trainer.prompt_learner.named_parameters():
        want = sum(w * epoch[name] for w, epoch in zip(weights, seen))
        torch.testing.assert_close(param.detach(), want, rtol=1e-5, atol=1e-7)
    saved = torch.load(tmp_path / "VLPromptLearner" / "model.pth.tar-3", weights_only=False)["state_dict"]
    torch.testing.assert_close(saved["ctx"], trainer.prompt_learner.ctx.detach())  # the checkpoint is the GPA model
