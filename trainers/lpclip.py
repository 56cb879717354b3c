"""LinearProbeCLIP: logistic regression on frozen CLIP image features, the baseline of CoOp's few-shot
tables (CoOp's `lpclip/`, after the CLIP paper's Appendix A.3).

The solver is scikit-learn's `LogisticRegression` (L2, lbfgs, max_iter 1000). The inverse
regularisation strength C is chosen on the validation split only, by CoOp's search:

1. fit at each C of C_GRID (1e6, 1e4, ..., 1e-6) and keep the first C with the best val accuracy;
2. bracket it, [C/10, 10 C], and run SEARCH_STEPS (8) steps: fit at both ends, keep the better end
   (the left one on a tie) and halve the bracket in log10 towards it;
3. the end kept at the last step is the final C, and its classifier is the model.

The learned weights are a Linear(D, n_cls) layer (`linear_probe` in checkpoints), so saving, loading
and evaluation go through the same machinery as every other trainer. A linear probe has weights only
for the classes it was fitted on: evaluating on other classes (base-to-new's new half, GZSL,
cross-dataset) is refused with an error, not answered with a meaningless number.
"""
import math
import warnings

import numpy as np
import torch
import torch.nn as nn

from clipadapt.engine import TRAINER_REGISTRY
from clipadapt.deps import require
from clipadapt.trainer import ClipTrainer


# ----- the search (CoOp's lpclip procedure) ----------------------------------------------------------
def _require_sklearn():
    return require("sklearn.linear_model", "LinearProbeCLIP", package="scikit-learn").LogisticRegression


def fit_logistic_regression(features, labels, c, max_iter=1000):
    """scikit-learn's L2-regularised multinomial logistic regression (lbfgs) at inverse strength `c`."""
    LogisticRegression = _require_sklearn()
    from sklearn.exceptions import ConvergenceWarning
    # L2 is the default penalty (`penalty` itself is deprecated in scikit-learn >= 1.8). lbfgs stopping at
    # max_iter (usual at the weakly regularised end of the grid, as in CoOp's runs) is one log line, not a
    # page of warnings per fit.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        classifier = LogisticRegression(C=c, solver="lbfgs", max_iter=max_iter).fit(features, labels)
    if np.max(classifier.n_iter_) >= max_iter:
        print(f"note: lbfgs stopped at max_iter {max_iter} for C = {c:.6g} (not converged)")
    return classifier


def accuracy(classifier, features, labels):
    return float(np.mean(classifier.predict(features) == labels))


def search_c(train_features, train_labels, val_features, val_labels, c_grid, steps, max_iter=1000, log=print):
    """CoOp's C search on the validation split: returns (chosen C, its fitted classifier, trace).

    `trace` lists (C, val accuracy) of every fit in order, for the log and for tests.
    """
    fits, trace = {}, []

    def fit(c):
        if c not in fits:
            clf = fit_logistic_regression(train_features, train_labels, c, max_iter)
            fits[c] = (clf, accuracy(clf, val_features, val_labels))
            trace.append((c, fits[c][1]))
        return fits[c]

    grid_acc = [fit(c)[1] for c in c_grid]
    c_peak = c_grid[int(np.argmax(grid_acc))]  # the first C with the best accuracy
    log("C grid: " + ", ".join(f"{c:g}: {100 * a:.2f}%" for c, a in zip(c_grid, grid_acc)))
    c_left, c_right = 0.1 * c_peak, 10.0 * c_peak
    c_final, clf_final = c_peak, fit(c_peak)[0]
    for step in range(steps):
        (clf_left, acc_left), (clf_right, acc_right) = fit(c_left), fit(c_right)
        mid = 0.5 * (math.log10(c_left) + math.log10(c_right))
        if acc_left < acc_right:
            c_final, clf_final = c_right, clf_right
            c_left, c_right = 10.0 ** mid, 10.0 ** math.log10(c_right)
        else:
            c_final, clf_final = c_left, clf_left
            c_left, c_right = 10.0 ** math.log10(c_left), 10.0 ** mid
        log(f"C search step {step + 1}/{steps}: left {100 * acc_left:.2f}%, right {100 * acc_right:.2f}% "
            f"-> C = {c_final:.6g}")
    return c_final, clf_final, trace


def linear_from_sklearn(classifier, num_classes, dim):
    """The fitted classifier as Linear(dim, num_classes): logits whose argmax is sklearn's prediction.

    sklearn orders rows by `classes_` and, for two classes, keeps one row w (class 1 iff w x + b > 0);
    that becomes the rows -w/2, +w/2 (same softmax as sklearn's sigmoid).
    """
    coef, intercept = np.asarray(classifier.coef_), np.asarray(classifier.intercept_)
    if coef.shape[0] == 1 and len(classifier.classes_) == 2:
        coef, intercept = np.concatenate([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    layer = nn.Linear(dim, num_classes)
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.fill_(-1e4)  # classes absent from training are never predicted
        rows = torch.as_tensor(np.asarray(classifier.classes_), dtype=torch.long)
        layer.weight[rows] = torch.as_tensor(coef, dtype=torch.float32)
        layer.bias[rows] = torch.as_tensor(intercept, dtype=torch.float32)
    return layer


# ----- trainer -------------------------------------------------------------------------------------
@TRAINER_REGISTRY.register()
class LinearProbeCLIP(ClipTrainer):
    CONFIG_NODE = "LINEAR_PROBE"
    CLASS_BOUND = True  # weights for the classes it was fitted on only

    @staticmethod
    def config_defaults(node):
        node.C_GRID = [1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6]  # CoOp lpclip's initial search
        node.SEARCH_STEPS = 8  # CoOp lpclip's --num_step
        node.C = 0.0  # > 0: use this C and skip the search (no validation split needed)
        node.MAX_ITER = 1000  # lbfgs iterations (CoOp lpclip)
        node.NORMALIZE = False  # CoOp lpclip fits the raw image features (clip_model.visual output)
        node.PREC = "fp16"  # frozen CLIP's precision, as CoOp's feature extractor (fp16 on GPU)

    @classmethod
    def check_cfg(cls, cfg):
        super().check_cfg(cfg)
        node = cfg.TRAINER.LINEAR_PROBE
        if cfg.DATASET.SUBSAMPLE_CLASSES in ("new", "gzsl"):
            raise ValueError(
                f"LinearProbeCLIP cannot evaluate DATASET.SUBSAMPLE_CLASSES {cfg.DATASET.SUBSAMPLE_CLASSES}: a linear "
                "probe has weights only for the classes it was fitted on, none for unseen ones. Use 'base' or 'all'.")
        if node.C <= 0 and (not node.C_GRID or min(node.C_GRID) <= 0 or node.SEARCH_STEPS < 0):
            raise ValueError("TRAINER.LINEAR_PROBE: C_GRID must hold positive values and SEARCH_STEPS be >= 0 "
                             "(or set C > 0 to skip the search)")
        if cfg.OPTIM.MAX_EPOCH != 1:
            raise ValueError(f"OPTIM.MAX_EPOCH = {cfg.OPTIM.MAX_EPOCH}: LinearProbeCLIP fits once; set it to 1 "
                             "(the test scripts load checkpoint model.pth.tar-1)")

    def build_model(self):
        _require_sklearn()  # fail before any feature is extracted
        self.load_clip()
        self.head = nn.Linear(self.embed_dim, len(self.train_classnames)).to(self.device)  # (n_cls, D) + (n_cls,)
        self.register_model("linear_probe", self.head, None, None)

    def probe_input(self, image_features):
        image_features = image_features.float()
        return self.normalize(image_features) if self.method_cfg.NORMALIZE else image_features

    def split_arrays(self, split):
        """(features, labels) of a whole split as float64 / int64 numpy arrays, test transform."""
        feats = self.probe_input(self.split_features(split)).cpu().double().numpy()
        labels = np.array([item.label for item in self._split_data[split]], dtype=np.int64)
        return feats, labels

    def run_epoch(self):
        """The whole fit: features of the few-shot train split (test transform, as CoOp's extractor), C
        from the validation split, then the classifier at that C."""
        node = self.method_cfg
        train_x, train_y = self.split_arrays("train_x")
        if node.C > 0:
            c = node.C
            classifier = fit_logistic_regression(train_x, train_y, c, node.MAX_ITER)
            print(f"C = {c:g} (fixed by TRAINER.LINEAR_PROBE.C)")
        else:
            if not self._split_data.get("val"):
                raise ValueError(f"LinearProbeCLIP chooses C on the validation split, and {self.cfg.DATASET.NAME} "
                                 "has none: set TRAINER.LINEAR_PROBE.C to a value > 0")
            if getattr(self.dataset, "val_is_test", False):
                raise ValueError(f"{self.cfg.DATASET.NAME}'s validation split is its test set: choosing C on it "
                                 "would tune on test data. Set TRAINER.LINEAR_PROBE.C to a value > 0 (chosen elsewhere)")
            val_x, val_y = self.split_arrays("val")
            c, classifier, _ = search_c(train_x, train_y, val_x, val_y, list(node.C_GRID), node.SEARCH_STEPS,
                                        node.MAX_ITER)
        train_acc = 100 * accuracy(classifier, train_x, train_y)
        print(f"epoch [1/1] C = {c:.6g}, train acc {train_acc:.2f}%, {len(train_y)} images")
        fitted = linear_from_sklearn(classifier, len(self.train_classnames), self.embed_dim).to(self.device)
        self.head.load_state_dict(fitted.state_dict())
        self.fitted_c = c

    def model_inference(self, image_features):
        return self.head(self.probe_input(image_features))  # (B, n_cls)

    def checkpoint_meta(self):
        meta = super().checkpoint_meta()
        if hasattr(self, "fitted_c"):
            meta["C"] = self.fitted_c
        return meta
