"""SHIP's ablations (its Tables 4-6): the variants, and the summary of scripts/ship/ablation.sh's output.

    python scripts/ship/summarize_ablation.py OUTPUT/ship_ablation [--reference]
    python scripts/ship/summarize_ablation.py --list            # the variants, one per line
    python scripts/ship/summarize_ablation.py --switch VARIANT  # its KEY VALUE options

One row per variant: the base-to-new Base / New / HM of our runs (means over the seeds and datasets
found, read by clipadapt/results.py as `parse_test_res.py --table base2new` reads them), and with
--reference the paper's row for the same switch (ViT-B/16, 16 shots, 11-dataset averages, from
configs/reference_results.json). Our HM is the HM of the mean Base and New; the paper's ablation
H is printed as it stands (it is not the HM of its Base and New).
"""
import argparse
import os
import sys

from clipadapt.results import build_base2new_table, load_reference

# variant -> the TRAINER.SHIP switch that gives it (Table 4: generator; 5: global prompts, bias; 6: L).
VARIANTS = {
    "full": {},
    "no_synthesis": {"TRAINER.SHIP.SYN_PER_REAL": 0.0},
    "mlp_generator": {"TRAINER.SHIP.GENERATOR": "mlp"},
    "no_global": {"TRAINER.SHIP.GLOBAL_PROMPT": False},
    "no_global_sequential": {"TRAINER.SHIP.GLOBAL_PROMPT": False, "TRAINER.SHIP.BIAS": "sequential"},
    "sequential": {"TRAINER.SHIP.BIAS": "sequential"},
    "L1": {"TRAINER.SHIP.N_CTX_VAE": 1},
    "L2": {"TRAINER.SHIP.N_CTX_VAE": 2},
    "L8": {"TRAINER.SHIP.N_CTX_VAE": 8},
}


def switch_options(variant):
    """KEY VALUE ... of a variant, as train.py's options."""
    return " ".join(f"{k} {v}" for k, v in VARIANTS[variant].items())


def paper_row(reference, switch):
    """(label, value-set) of the paper's ablation row with this switch (the first, for the default)."""
    for label, entry in (reference or {}).get("ablation", {}).items():
        if "switch" in entry and entry["switch"] == switch:
            return label, entry["results"]["average"]
    return None, None


def summarize(root, with_reference=False):
    reference = load_reference() if with_reference else None
    header = ["variant", "switch", "datasets", "seeds", "Base", "New", "HM"]
    if with_reference:
        header += ["paper row", "paper Base", "paper New", "paper H"]
    rows = []
    for variant in [v for v in VARIANTS if os.path.isdir(os.path.join(root, v))]:
        table = build_base2new_table(os.path.join(root, variant), trainers=["SHIP"])
        average, datasets = table.rows[-1], [r[0] for r in table.rows[:-1]]
        switch = switch_options(variant) or "(defaults)"
        row = [variant, switch, ", ".join(datasets), average[-1]] + [c.text() for c in average[1:4]]
        if with_reference:
            label, values = paper_row(reference, VARIANTS[variant])
            row += [label or "-"] + ([f"{values[k]:.2f}" for k in ("base", "new", "hm")] if values else ["-"] * 3)
        rows.append(row)
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if with_reference and rows:
        print("\nPaper rows: SHIP Tables 4-6, ViT-B/16, 16 shots, averages over its 11 datasets; ours average "
              "only the datasets named in the row, so the two are comparable in their differences between "
              "variants, not in their values.")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", help="the ablation tree, e.g. output/ship_ablation")
    parser.add_argument("--reference", action="store_true", help="add the paper's row for each variant")
    parser.add_argument("--list", action="store_true", help="print the variants")
    parser.add_argument("--switch", metavar="VARIANT", help="print a variant's KEY VALUE options")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(VARIANTS))
        return
    if args.switch is not None:
        if args.switch not in VARIANTS:
            sys.exit(f"summarize_ablation: unknown variant '{args.switch}'; choose from: {' '.join(VARIANTS)}")
        print(switch_options(args.switch))
        return
    if not args.root or not os.path.isdir(args.root):
        sys.exit(f"summarize_ablation: {args.root} is not a directory; pass OUTPUT/ship_ablation")
    if not summarize(args.root, args.reference):
        sys.exit(f"summarize_ablation: no variant folders under {args.root}; run scripts/ship/ablation.sh first")


if __name__ == "__main__":
    main()
