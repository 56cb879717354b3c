"""Tip-Adapter and Tip-Adapter-F against hand computations of the released code's math on tiny tensors
(the cache keys, the cache logits, the alpha/beta search, one Tip-Adapter-F update), and both trainers
end to end on the Shapes world."""
import math

import pytest
import torch

from clipadapt import cache_model
from helpers import make_cfg

CFG = {"TipAdapter": "configs/trainers/TipAdapter/shapes.yaml", "TipAdapterF": "configs/trainers/TipAdapterF/shapes.yaml"}


def build_trainer(trainer, root, out, opts=()):
    from clipadapt.engine import build_trainer as build, set_random_seed
    set_random_seed(1)
    return build(make_cfg(trainer, CFG[trainer], root, out, ["DATASET.NUM_SHOTS", "2", *opts]))


# ----- the math, by hand -------------------------------------------------------------------------
def test_keys_average_the_raw_views_before_normalising():
    torch.manual_seed(0)
    views = [torch.randn(5, 3) * (i + 1) for i in range(4)]
    keys = cache_model.cache_keys(views)
    for n in range(5):
        mean = [sum(v[n, d].item() for v in views) / 4 for d in range(3)]
        norm = math.sqrt(sum(x * x for x in mean))
        assert keys[n].tolist() == pytest.approx([x / norm for x in mean], rel=1e-6)
    # not the mean of normalised views
    assert not torch.allclose(keys, cache_model.cache_keys([v / v.norm(dim=-1, keepdim=True) for v in views]))


def test_cache_logits_are_alpha_exp_of_minus_beta_one_minus_affinity_times_values():
    torch.manual_seed(1)
    f = torch.nn.functional.normalize(torch.randn(2, 3), dim=-1)
    keys = torch.nn.functional.normalize(torch.randn(4, 3), dim=-1)
    labels = torch.tensor([0, 2, 1, 2])
    cache = cache_model.TipCache(4, 3, 3)
    cache.fill(keys, cache_model.cache_values(labels, 3), alpha=1.7, beta=5.5)
    got = cache(f)
    for b in range(2):
        for c in range(3):
            want = sum(1.7 * math.exp(-5.5 * (1 - sum(f[b, d].item() * keys[n, d].item() for d in range(3))))
                       for n in range(4) if labels[n] == c)
            assert got[b, c].item() == pytest.approx(want, rel=1e-5)


def test_search_grid_and_first_best_rule_are_the_released_ones():
    assert cache_model.search_grid(7, 200)[:3] == pytest.approx([0.1, 0.1 + 6.9 / 200, 0.1 + 2 * 6.9 / 200])
    assert len(cache_model.search_grid(3, 20)) == 20 and max(cache_model.search_grid(3, 20)) < 3
    torch.manual_seed(2)
    features = torch.nn.functional.normalize(torch.randn(12, 4), dim=-1)
    keys = torch.nn.functional.normalize(torch.randn(6, 4), dim=-1)
    values = cache_model.cache_values(torch.tensor([0, 1, 2, 0, 1, 2]), 3)
    weights = torch.nn.functional.normalize(torch.randn(3, 4), dim=-1)
    labels = torch.randint(3, (12,))
    clip_logits = 100 * features @ weights.t()
    affinity = features @ keys.t()
    beta, alpha, acc = cache_model.search_alpha_beta(affinity, values, clip_logits, labels, (5, 4), (6, 5),
                                                     log=lambda _: None)
    # brute force over the same grid, beta outer, alpha inner, strictly better wins
    best = (0.0, 0.0, 0.0)
    for b in [i * 4.9 / 6 + 0.1 for i in range(6)]:
        for a in [i * 3.9 / 5 + 0.1 for i in range(5)]:
            logits = clip_logits + a * torch.exp(-b * (1 - affinity)) @ values
            accuracy = 100 * (logits.argmax(1) == labels).float().mean().item()
            if accuracy > best[2]:
                best = (b, a, accuracy)
    assert (beta, alpha, acc) == pytest.approx(best)


# ----- the trainers ------------------------------------------------------------------------------
def test_tip_adapter_builds_the_cache_from_the_views_and_deploys_the_searched_hparams(shapes_root, tmp_path):
    trainer = build_trainer("TipAdapter", shapes_root, tmp_path / "tip", ["TRAINER.TIP_ADAPTER.AUGMENT_EPOCH", "3"])
    trainer.train()
    views = [trainer.cached_features("train_x", v) for v in range(3)]
    assert torch.allclose(trainer.cache.adapter.weight, cache_model.cache_keys(views), atol=1e-6)
    labels = torch.tensor([d.label for d in trainer.dataset.train_x])
    assert torch.equal(trainer.cache.values.argmax(1), labels) and trainer.cache.values.sum() == len(labels)
    # the deployed alpha and beta are the search's on the val features
    val = torch.nn.functional.normalize(trainer.split_features("val"), dim=-1)
    val_labels = torch.tensor([d.label for d in trainer.dataset.val])
    weights = trainer.clip_weights(trainer.train_classnames)
    beta, alpha, _ = cache_model.search_alpha_beta(val @ trainer.cache.adapter.weight.t(), trainer.cache.values,
                                                   trainer.zero_shot_scale * val @ weights.t(), val_labels, (7, 10),
                                                   (50, 10), log=lambda _: None)
    assert (trainer.cache.alpha.item(), trainer.cache.beta.item()) == pytest.approx((alpha, beta))
    # a fresh trainer evaluates the checkpoint to the same logits
    fresh = build_trainer("TipAdapter", shapes_root, tmp_path / "eval", ["TRAINER.TIP_ADAPTER.AUGMENT_EPOCH", "3"])
    fresh.load_model(str(tmp_path / "tip"), epoch=1)
    for t in (trainer, fresh):
        t.prepare_eval()
    test = trainer.split_features("test")
    assert torch.allclose(trainer.model_inference(test), fresh.model_inference(test), atol=1e-5)


def test_tip_adapter_f_step_is_adamw_on_the_keys_with_the_hand_gradient(shapes_root, tmp_path):
    trainer = build_trainer("TipAdapterF", shapes_root, tmp_path / "tipf", ["OPTIM.MAX_EPOCH", "2"])
    trainer.before_train()
    keys = trainer.cache.adapter.weight.detach().clone()
    values = trainer.cache.values
    alpha, beta, scale = trainer.init_alpha, trainer.method_cfg.INIT_BETA, trainer.zero_shot_scale
    trainer.epoch, trainer.batch_idx = 0, 0
    batch = next(iter(trainer.train_loader_x))
    features, label = trainer.parse_batch_train(batch)
    f = torch.nn.functional.normalize(features, dim=-1)
    # the hand gradient of the mean cross-entropy with respect to the keys
    affinity_exp = torch.exp(-beta * (1 - f @ keys.t()))  # (B, N)
    logits = scale * f @ trainer.train_weights.t() + alpha * affinity_exp @ values
    g = (torch.softmax(logits, dim=1) - torch.nn.functional.one_hot(label, logits.shape[1])) / len(label)
    grad = (alpha * beta) * ((g @ values.t()) * affinity_exp).t() @ f  # (N, D)
    # AdamW's first step: decoupled decay, then lr * m_hat / (sqrt(v_hat) + eps) = lr * g / (|g| + eps)
    lr, eps, wd = 1e-3, 1e-4, 0.01
    want = keys * (1 - lr * wd) - lr * grad / (grad.abs() + eps)
    trainer.forward_backward(batch)
    assert torch.allclose(trainer.cache.adapter.weight, want, atol=1e-6)
    # the schedule is cosine over epochs x iterations, stepped once per iteration
    total = 2 * len(trainer.train_loader_x)
    assert trainer.sched.last_epoch == 1 and trainer.sched.T_max == total
    assert trainer.optim.param_groups[0]["lr"] == pytest.approx(lr * (1 + math.cos(math.pi / total)) / 2)


def test_new_classes_are_refused_and_a_checkpoint_evaluates_only_its_classes(shapes_root, tmp_path):
    from clipadapt.checkpoints import CheckpointError
    with pytest.raises(ValueError, match="cache holds only the classes it was built on"):
        build_trainer("TipAdapter", shapes_root, tmp_path / "new", ["DATASET.SUBSAMPLE_CLASSES", "new"])
    base = build_trainer("TipAdapter", shapes_root, tmp_path / "base", ["DATASET.SUBSAMPLE_CLASSES", "base",
                                                                        "TRAINER.TIP_ADAPTER.AUGMENT_EPOCH", "1"])
    base.train()
    everything = build_trainer("TipAdapter", shapes_root, tmp_path / "all", ["TRAINER.TIP_ADAPTER.AUGMENT_EPOCH", "1"])
    with pytest.raises(CheckpointError, match="TipAdapter of 24 classes"):
        everything.load_model(str(tmp_path / "base"), epoch=1)


def test_released_hparams_fill_unset_keys_and_an_unknown_dataset_must_set_them(shapes_root, tmp_path):
    from clipadapt.config import build_config
    import trainers  # noqa: F401
    cfg = build_config("TipAdapterF", "configs/datasets/eurosat.yaml", "configs/trainers/TipAdapterF/rn50.yaml")
    assert cfg.DATASET.NAME == "EuroSAT"
    from trainers.tip_adapter import TipAdapterF
    assert cache_model.released_value(cfg.DATASET.NAME, "init_alpha") == 2.0
    assert cache_model.released_value(cfg.DATASET.NAME, "search_scale") == (12, 10)
    TipAdapterF.check_cfg(cfg)
    with pytest.raises(ValueError, match="INIT_ALPHA is unset and the released code has no config for Shapes"):
        build_trainer("TipAdapter", shapes_root, tmp_path / "x", ["TRAINER.TIP_ADAPTER.INIT_ALPHA", "0.0"])
