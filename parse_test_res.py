#!/usr/bin/env python
"""Collect results from Dassl-style ``log.txt`` files.

CoOp-compatible summary of one directory of seed runs (``seed1/log.txt``, ``seed2/log.txt``, ...)::

    python parse_test_res.py output/base2new/train_base/eurosat/shots_16/CoOp/vit_b16_ep50/
    python parse_test_res.py output/evaluation/CoOp/vit_b16_16shots/eurosat --test-log
    python parse_test_res.py output/eurosat/CoOp --multi-exp --ci95 --keyword macro_f1

Paper-style tables over a whole output tree (the folder layout of the scripts/ encodes
protocol / dataset / shots / trainer / config / seed)::

    python parse_test_res.py --table base2new [--root output] [--format markdown|csv|latex]
        [--trainers CoOp PVA] [--reference] [--plot base2new.png]

Protocols: base2new, gzsl, xd (cross-dataset), dg (domain generalisation), fewshot.
Missing results show as ``-``; averages over fewer entries than the table has are marked ``†``;
published numbers (``--reference``, from configs/reference_results.json) that were recalled rather
than read from their source are marked ``*``. The reading and the tables are clipadapt/results.py.
"""
import argparse
import shutil
import sys
from pathlib import Path

from clipadapt.protocols import PROTOCOLS
from clipadapt.results import (BASE2NEW_RUNS, FEWSHOT_RUNS, GZSL_RUNS, REFERENCE_FILE, XD_SOURCE_RUNS, XD_TARGET_RUNS,
                               TERMINAL_WIDTH, ResultError, build_table, format_footnotes, format_table, load_reference,
                               narrow_views, parse_directory, parse_multi_exp, row_cells, save_plot, warn)


# -------------------- Command line ----------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", nargs="?", help="directory of seed runs (with --table: the output root)")
    parser.add_argument("--ci95", action="store_true", help="report the 95%% confidence interval, not the std")
    parser.add_argument("--test-log", action="store_true", help="read results after '=> result' (eval-only logs)")
    parser.add_argument("--multi-exp", action="store_true", help="each subdirectory is an experiment of seeds")
    parser.add_argument("--keyword", default="accuracy", help="metric to read: '* KEYWORD: X%%' (default accuracy)")
    parser.add_argument("--table", choices=PROTOCOLS, help="build a protocol table over the output tree")
    parser.add_argument("--format", default="markdown", choices=("markdown", "csv", "latex"))
    parser.add_argument("--root", default=None, help="output root for --table (default: output)")
    parser.add_argument("--trainers", nargs="+", help="only these trainers, in this order")
    parser.add_argument("--reference", action="store_true", help="add published numbers, e.g. 'CoOp (paper)'")
    parser.add_argument("--reference-file", default=str(REFERENCE_FILE), help="published numbers (JSON)")
    parser.add_argument("--plot", metavar="FILE.png", help="fewshot curves or base2new bars")
    parser.add_argument("--wide", action="store_true",
                        help="one table with every column (default: a table wider than the terminal, or 80 "
                             "columns when output goes to a file, is split into views that fit, each method named "
                             "by a key the legend spells out)")
    return parser


def run_table(args) -> None:
    if args.directory and args.root and Path(args.directory) != Path(args.root):
        raise ResultError(f"two output roots given: {args.directory} and --root {args.root}")
    root = args.root or args.directory or "output"
    if not Path(root).is_dir():
        raise ResultError(f"output root not found: {root}")
    reference = load_reference(args.reference_file) if args.reference else None
    table = build_table(args.table, root, args.trainers, reference, args.keyword)
    if not any(c.seeds for c in row_cells(table.rows)):
        layout = {"base2new": "base2new/{train_base,test_base,test_new}/" + BASE2NEW_RUNS, "gzsl": "gzsl/" + GZSL_RUNS,
                  "fewshot": "fewshot/" + FEWSHOT_RUNS}.get(args.table, f"imagenet/{XD_SOURCE_RUNS}/log.txt and evaluation/{XD_TARGET_RUNS}")
        warn(f"no {args.table} results under {root} (expected {layout}/log.txt)")
    width = shutil.get_terminal_size((TERMINAL_WIDTH, 24)).columns
    views, legend = ([table], []) if args.wide or args.format != "markdown" else narrow_views(table, width)
    print("\n\n".join(format_table(view, args.format) for view in views))
    notes = "\n".join(legend + [format_footnotes(table, args.format)]).strip("\n")
    # csv stays machine-readable: notes go to stderr
    print("\n" + notes if args.format != "csv" else notes, file=sys.stderr if args.format == "csv" else sys.stdout)
    if args.plot:
        save_plot(table, args.plot)
        print(f"saved plot to {args.plot}", file=sys.stderr)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.table:
            run_table(args)
        elif not args.directory:
            build_parser().error("give a DIRECTORY of seed runs, or --table PROTOCOL")
        elif args.multi_exp:
            parse_multi_exp(args.directory, args.keyword, args.test_log, args.ci95)
        else:
            parse_directory(args.directory, args.keyword, args.test_log, args.ci95)
    except ResultError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
