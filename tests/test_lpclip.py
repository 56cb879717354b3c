"""LinearProbeCLIP: CoOp's C search step by step, the fit against a direct scikit-learn fit on the same
features, C chosen on the validation split only, and what a linear probe refuses to evaluate."""
import math
import os.path as osp
import sys

import numpy as np
import pytest
import torch

from helpers import REPO, TINY_OPTS, make_cfg
from helpers import fails

pytest.importorskip("sklearn")
from sklearn.linear_model import LogisticRegression  # noqa: E402

import trainers.lpclip as lpclip  # noqa: E402

CFG = "configs/trainers/LinearProbeCLIP/vit_b16.yaml"
GRID = [1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6]


def build_trainer(root, out, opts=()):
    from clipadapt.engine import build_trainer as build, set_random_seed
    set_random_seed(1)
    return build(make_cfg("LinearProbeCLIP", CFG, root, out, opts))


# ----- the search, by hand ----------------------------------------------------------------------
class FakeFit:
    def __init__(self, c):
        self.c = c


def test_search_follows_coops_bisection(monkeypatch):
    # val accuracy peaks at log10 C = 1.3; CoOp's procedure, by hand:
    # grid -> 1e2; bracket log10 [1, 3]; steps keep 1, 1, 1.5, 1.25, 1.25, 1.3125, 1.3125, 1.296875.
    monkeypatch.setattr(lpclip, "fit_logistic_regression", lambda x, y, c, max_iter: FakeFit(c))
    monkeypatch.setattr(lpclip, "accuracy", lambda clf, x, y: 1 - abs(math.log10(clf.c) - 1.3))
    c, clf, trace = lpclip.search_c(None, None, None, None, GRID, steps=8, log=lambda *_: None)
    assert c == pytest.approx(10 ** 1.296875) and clf.c == c
    visited = [round(math.log10(c), 6) for c, _ in trace]
    assert visited[:7] == [6, 4, 2, 0, -2, -4, -6]
    assert visited[7:] == [1, 3, 1.5, 1.25, 1.375, 1.3125, 1.28125, 1.296875]  # new Cs only (fits are reused)


def test_search_ties_keep_the_first_grid_peak_and_the_left_end(monkeypatch):
    monkeypatch.setattr(lpclip, "fit_logistic_regression", lambda x, y, c, max_iter: FakeFit(c))
    monkeypatch.setattr(lpclip, "accuracy", lambda clf, x, y: 0.5)
    # grid: all equal -> 1e6 (first); every step a tie -> the left end: 1e5, then the bracket halves to it.
    c, _, _ = lpclip.search_c(None, None, None, None, GRID, steps=3, log=lambda *_: None)
    assert c == pytest.approx(1e5)
    c0, _, trace = lpclip.search_c(None, None, None, None, GRID, steps=0, log=lambda *_: None)
    assert c0 == 1e6 and len(trace) == 7


# ----- the sklearn classifier as a Linear layer ---------------------------------------------------
@pytest.mark.parametrize("n_classes", [2, 4])
def test_linear_layer_reproduces_sklearn_probabilities(n_classes):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6))
    y = np.arange(40) % n_classes
    x[np.arange(40), y] += 2.0
    clf = LogisticRegression(C=1.0, max_iter=1000).fit(x, y)
    layer = lpclip.linear_from_sklearn(clf, n_classes + 1, 6)  # one class never seen in training
    logits = layer(torch.as_tensor(x, dtype=torch.float32))
    probs = torch.softmax(logits, dim=1).detach().numpy()
    assert np.allclose(probs[:, :n_classes], clf.predict_proba(x), atol=1e-5)
    assert np.array_equal(logits.argmax(1).numpy(), clf.predict(x))


# ----- the trainer --------------------------------------------------------------------------------
def test_fit_equals_a_direct_sklearn_fit_and_round_trips_through_its_checkpoint(shapes_root, tmp_path):
    out = tmp_path / "lp"
    trainer = build_trainer(shapes_root, out, ["DATASET.NUM_SHOTS", "4", "TRAINER.LINEAR_PROBE.C", "0.5"])
    trainer.train()
    feats = trainer.cached_features("train_x").double().numpy()
    labels = np.array([d.label for d in trainer.dataset.train_x])
    direct = LogisticRegression(C=0.5, solver="lbfgs", max_iter=1000).fit(feats, labels)
    assert np.allclose(trainer.head.weight.detach().numpy(), direct.coef_, atol=1e-5)
    assert np.allclose(trainer.head.bias.detach().numpy(), direct.intercept_, atol=1e-5)
    test_feats = trainer.cached_features("test")
    with torch.no_grad():
        ours = trainer.model_inference(test_feats).argmax(1).numpy()
    assert np.array_equal(ours, direct.predict(test_feats.double().numpy()))
    accuracy = trainer.test()
    assert accuracy == pytest.approx(100 * np.mean(ours == np.array([d.label for d in trainer.dataset.test])))

    ckpt = torch.load(out / "linear_probe" / "model.pth.tar-1", weights_only=True)
    assert set(ckpt["state_dict"]) == {"weight", "bias"} and ckpt["meta"]["C"] == 0.5
    assert ckpt["meta"]["classnames"] == trainer.classnames
    fresh = build_trainer(shapes_root, tmp_path / "eval", ["DATASET.NUM_SHOTS", "4"])
    fresh.load_model(str(out), epoch=1)
    assert torch.equal(fresh.head.weight, trainer.head.weight) and fresh.test() == accuracy


def test_c_is_chosen_on_val_features_only(shapes_root, tmp_path, monkeypatch):
    trainer = build_trainer(shapes_root, tmp_path / "lp", ["DATASET.NUM_SHOTS", "4", "TRAINER.LINEAR_PROBE.SEARCH_STEPS", "2",
                                                        "TRAINER.LINEAR_PROBE.MAX_ITER", "50"])
    requested, scored = [], []
    real_cached, real_accuracy = trainer.cached_features, lpclip.accuracy
    monkeypatch.setattr(trainer, "cached_features", lambda split, view=None: requested.append(split) or real_cached(split, view))
    monkeypatch.setattr(lpclip, "accuracy", lambda clf, x, y: scored.append(len(y)) or real_accuracy(clf, x, y))
    trainer.epoch = 0
    trainer.run_epoch()
    n_train, n_val = len(trainer.dataset.train_x), len(trainer.dataset.val)
    assert set(requested) == {"train_x", "val"}  # the fit never reads test features
    assert n_val != n_train and set(scored[:-1]) == {n_val} and scored[-1] == n_train  # last: the train-acc log line


def test_without_the_feature_cache_the_fit_is_the_same(shapes_root, tmp_path, monkeypatch):
    opts = ["DATASET.NUM_SHOTS", "2", "TRAINER.LINEAR_PROBE.C", "1.0"]
    cached = build_trainer(shapes_root, tmp_path / "cached", opts)
    online = build_trainer(shapes_root, tmp_path / "online", opts + ["FEATURES.CACHE", "False"])
    monkeypatch.setattr(online, "cached_features", lambda *a, **k: pytest.fail("FEATURES.CACHE False read the cache"))
    for trainer in (cached, online):
        trainer.epoch = 0
        trainer.run_epoch()
    assert torch.allclose(cached.head.weight, online.head.weight, atol=1e-4)


def test_refuses_classes_it_was_not_fitted_on(shapes_root, tmp_path, monkeypatch):
    from clipadapt.checkpoints import CheckpointError
    with pytest.raises(ValueError, match="no weights for unseen|only for the classes"):
        build_trainer(shapes_root, tmp_path / "new", ["DATASET.SUBSAMPLE_CLASSES", "new"])
    base = build_trainer(shapes_root, tmp_path / "base", ["DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", "base",
                                                          "TRAINER.LINEAR_PROBE.C", "1.0"])
    base.train()
    everything = build_trainer(shapes_root, tmp_path / "all", ["DATASET.NUM_SHOTS", "2"])
    with pytest.raises(CheckpointError, match="LinearProbeCLIP of 24 classes"):
        everything.load_model(str(tmp_path / "base"), epoch=1)
    # A validation split that is the test set (ImageNet's) is never searched.
    monkeypatch.setattr(type(everything.dataset), "val_is_test", True, raising=False)
    with pytest.raises(ValueError, match="validation split is its test set"):
        everything.run_epoch()


def test_missing_sklearn_is_one_line_naming_the_install(monkeypatch, shapes_root, tmp_path, train_main):
    from clipadapt.deps import MissingDependency
    monkeypatch.setitem(sys.modules, "sklearn.linear_model", None)
    with pytest.raises(MissingDependency, match=r"^LinearProbeCLIP needs scikit-learn, which is not installed .*"
                                                r"`pip install scikit-learn`"):
        lpclip.fit_logistic_regression(np.zeros((2, 2)), np.array([0, 1]), 1.0)
    # through train.py: one error line, no traceback
    message = fails(train_main, ["--root", shapes_root, "--seed", "1", "--trainer", "LinearProbeCLIP",
                          "--dataset-config-file", "configs/datasets/shapes.yaml", "--config-file",
                          "configs/trainers/LinearProbeCLIP/vit_b16.yaml", "--output-dir", str(tmp_path / "run"),
                          *TINY_OPTS, "DATASET.NUM_SHOTS", "1"])
    assert message.startswith("error: LinearProbeCLIP needs scikit-learn") and "\n" not in message


def test_every_trainers_dependency_is_a_plain_requirement():
    import re
    with open(osp.join(REPO, "setup.py")) as f:
        setup = f.read()
    requires = setup[setup.index("install_requires"):setup.index("extras_require")]
    assert re.search(r'"scikit-learn"', requires) and re.search(r'"scipy"', requires)


def test_config_keys_are_coops():
    import trainers  # noqa: F401
    from clipadapt.config import build_config
    for name in ("vit_b16", "rn50", "shapes"):
        cfg = build_config("LinearProbeCLIP", "", f"configs/trainers/LinearProbeCLIP/{name}.yaml")
        node = cfg.TRAINER.LINEAR_PROBE
        assert list(node.C_GRID) == GRID and node.SEARCH_STEPS == 8 and node.MAX_ITER == 1000
        assert cfg.OPTIM.MAX_EPOCH == 1 and not node.NORMALIZE
