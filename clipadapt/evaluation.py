"""The generalized zero-shot evaluator (seen / unseen / H), on top of Dassl's Classification (either engine)."""
import numpy as np

from .engine import Classification
from .metrics import harmonic_mean


class GZSLClassification(Classification):
    """Generalized zero-shot: predictions over all classes; labels < num_seen are seen (base) classes.

    Acc_S and Acc_U are per-class mean top-1 accuracies over the seen and the unseen classes'
    test images (Xian et al.'s protocol); H is their harmonic mean. Printed after Dassl's block as
    `* acc_seen: X%`, `* acc_unseen: X%`, `* hm: X%`.
    """

    def __init__(self, cfg, lab2cname=None, num_seen=None, **kwargs):
        super().__init__(cfg, lab2cname, **kwargs)
        if num_seen is None:
            raise ValueError("GZSLClassification needs num_seen (the number of seen classes)")
        self.num_seen = num_seen

    def evaluate(self):
        results = super().evaluate()
        y_true, y_pred = np.asarray(self._y_true), np.asarray(self._y_pred)

        def per_class_mean(mask):
            classes = np.unique(y_true[mask])
            if len(classes) == 0:
                return float("nan")
            return 100.0 * float(np.mean([np.mean(y_pred[y_true == c] == c) for c in classes]))

        seen = per_class_mean(y_true < self.num_seen)
        unseen = per_class_mean(y_true >= self.num_seen)
        hm = harmonic_mean(seen, unseen) if not (np.isnan(seen) or np.isnan(unseen)) else float("nan")
        print(f"* acc_seen: {seen:.1f}%\n* acc_unseen: {unseen:.1f}%\n* hm: {hm:.1f}%")
        results["acc_seen"], results["acc_unseen"], results["hm"] = seen, unseen, hm
        return results
