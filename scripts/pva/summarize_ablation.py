"""Summarize scripts/pva/ablation.sh's output: one row per variant, means over the seeds found.

    python scripts/pva/summarize_ablation.py OUTPUT/pva_ablation [--losses]

Columns: base-to-new Base / New / HM, GZSL S / U / H, the GZSL routing AUROC of the configured
score and of each measure on the same latents (kl uses the variances; cosine and euclidean the
means only). --losses adds each loss term's running mean over the first logged batches of epoch 1
(warmup, learning rate 1e-5: the magnitudes at initialisation) and over the final epoch.
"""
import argparse
import glob
import os
import re
import statistics
import sys

RESULT = re.compile(r"^\* (\w+): ([-\d.,]+)%?$", re.M)
TRAIN_LINE = re.compile(r"^epoch \[(\d+)/(\d+)\] batch \[\d+/\d+\].*$", re.M)
TERM = re.compile(r"\b(loss|ce|kl|align) [-\d.e+]+ \(([-\d.e+]+)\)")


def last_results(text):
    """The last value of each `* key: value` line (the final test's)."""
    return {key: float(value.replace(",", "")) for key, value in RESULT.findall(text)}


def loss_terms(text):
    """Running means of the loss terms at the first logged line and the last line of the run."""
    lines = [m.group(0) for m in TRAIN_LINE.finditer(text)]
    if not lines:
        return {}, {}
    return ({k: float(v) for k, v in TERM.findall(lines[0])}, {k: float(v) for k, v in TERM.findall(lines[-1])})


def mean(values):
    return f"{statistics.mean(values):.2f}" if values else "-"


def summarize(root, show_losses=False):
    rows = []
    for variant_dir in sorted(glob.glob(os.path.join(root, "*"))):
        variant = os.path.basename(variant_dir)
        cols = {k: [] for k in ("base", "new", "hm", "S", "U", "H", "auroc", "auroc_kl", "auroc_cosine",
                                "auroc_euclidean")}
        first, final = {}, {}
        for log in glob.glob(os.path.join(variant_dir, "base2new", "train_base", "*", "*", "PVA", "*", "seed*",
                                          "log.txt")):
            base = last_results(open(log).read())
            new_log = log.replace(os.sep + "train_base" + os.sep, os.sep + "test_new" + os.sep)
            if "accuracy" not in base or not os.path.exists(new_log):
                continue
            new = last_results(open(new_log).read())
            cols["base"].append(base["accuracy"])
            cols["new"].append(new["accuracy"])
            cols["hm"].append(2 * base["accuracy"] * new["accuracy"] / (base["accuracy"] + new["accuracy"]))
            start, end = loss_terms(open(log).read())
            for store, terms in ((first, start), (final, end)):
                for key, value in terms.items():
                    store.setdefault(key, []).append(value)
        for log in glob.glob(os.path.join(variant_dir, "gzsl", "*", "*", "PVA", "*", "seed*", "log.txt")):
            gzsl = last_results(open(log).read())
            for col, key in (("S", "acc_seen"), ("U", "acc_unseen"), ("H", "hm"), ("auroc", "auroc"),
                             ("auroc_kl", "auroc_kl"), ("auroc_cosine", "auroc_cosine"),
                             ("auroc_euclidean", "auroc_euclidean")):
                if key in gzsl:
                    cols[col].append(gzsl[key])
        row = [variant, str(len(cols["base"]))] + [mean(v) for v in cols.values()]
        if show_losses:
            row += [" ".join(f"{k} {mean(v)}" for k, v in first.items()),
                    " ".join(f"{k} {mean(v)}" for k, v in final.items())]
        rows.append(row)
    header = ["variant", "seeds", "Base", "New", "HM", "GZSL S", "GZSL U", "GZSL H", "AUROC",
              "AUROC kl", "AUROC cos", "AUROC eucl"]
    if show_losses:
        header += ["losses, epoch 1 start", "losses, final epoch"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="the ablation tree, e.g. output/pva_ablation")
    parser.add_argument("--losses", action="store_true", help="add the loss terms at the start and end of training")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.root):
        sys.exit(f"summarize_ablation: {args.root} is not a directory; pass OUTPUT/pva_ablation")
    if not summarize(args.root, args.losses):
        sys.exit(f"summarize_ablation: no variant folders under {args.root}; run scripts/pva/ablation.sh first")


if __name__ == "__main__":
    main()
