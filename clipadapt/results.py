"""Results: reading an output tree's result.json files (or Dassl logs, through clipadapt.dassl_log),
CoOp's per-directory summary, the protocols' tables (markdown, csv, latex) with published reference rows, and plots.
parse_test_res.py is its command line."""
import csv
import io
import json
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np
from tabulate import tabulate

from . import runs
from .dassl_log import FINISH_TRAINING, LOG_NAME, TEST_RESULT, ResultError, parse_log
from .metrics import harmonic_mean
from .protocols import (DEFAULT_DATASETS, DG_TARGETS, FEWSHOT_SHOTS, LAYOUTS, PROTOCOLS, SOURCE_DATASET, WORLD_SOURCE,
                        XD_SOURCES)

REFERENCE_FILE = Path(__file__).resolve().parents[1] / "configs" / "reference_results.json"


# Output layouts below their protocol folder (clipadapt/protocols.py), where the run registry places runs; {shots} and {seed} are integers.
BASE2NEW_RUNS = LAYOUTS["base2new"][1]  # under base2new/<split>/
GZSL_RUNS = LAYOUTS["gzsl"][1]  # under gzsl/
XD_SOURCE_RUNS = LAYOUTS["xd_source"][1]  # under imagenet/
XD_TARGET_RUNS = LAYOUTS["xd_target"][1]  # under evaluation/
FEWSHOT_RUNS = LAYOUTS["fewshot"][1]  # under fewshot/

PARTIAL_MARK = "†"
UNCHECKED_MARK = "*"
MISSING_LABEL = " (missing)"  # after a dataset whose runs were all skipped or failed


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


# -------------------- CoOp-compatible directory summaries -----------------------------------

class DirectorySummary(NamedTuple):
    files: List[str]
    values: List[float]
    mean: float
    spread: float  # population std, or the 95% confidence interval half-width


def run_dirs(directory) -> List[str]:
    """Sorted, non-hidden subdirectories of ``directory`` (one per seed or experiment)."""
    if not os.path.isdir(directory):
        raise ResultError(f"not a directory: {directory}")
    names = sorted(n for n in os.listdir(directory)
                   if not n.startswith(".") and os.path.isdir(os.path.join(directory, n)))
    if not names:
        hint = " (it holds log.txt itself: pass its parent directory)" if os.path.isfile(
            os.path.join(directory, LOG_NAME)) else ""
        raise ResultError(f"no run directories (seed1, seed2, ...) in {directory}{hint}")
    return [os.path.join(directory, n) for n in names]


def run_log(run_dir: str) -> str:
    """``run_dir/log.txt``; re-run logs (``log.txt-YYYY-MM-DD-...``) are never read."""
    path = os.path.join(run_dir, LOG_NAME)
    if os.path.isfile(path):
        return path
    message = f"no {LOG_NAME} in {run_dir}"
    reruns = sorted(n for n in os.listdir(run_dir) if n.startswith(LOG_NAME + "-"))
    if reruns:
        message += f" (only re-run logs, which are ignored: {', '.join(reruns)})"
    elif any(os.path.isfile(os.path.join(run_dir, n, LOG_NAME)) for n in os.listdir(run_dir)):
        message += " (its subdirectories have one: did you mean --multi-exp?)"
    elif os.path.isfile(os.path.join(os.path.dirname(run_dir), LOG_NAME)):
        message += f" ({os.path.dirname(run_dir)} is itself a run: pass its parent directory)"
    raise ResultError(message)


def summarize(values: List[float], ci95: bool = False):
    """Mean and spread: np.std (population), or 1.96 * std / sqrt(n) with ci95."""
    std = float(np.std(values))
    return float(np.mean(values)), (1.96 * std / np.sqrt(len(values)) if ci95 else std)


def parse_directory(directory, keyword="accuracy", test_log=False, ci95=False, out=None) -> DirectorySummary:
    """Print CoOp's per-file lines and summary for the seed runs under ``directory``."""
    out = out or sys.stdout
    files, values = [], []
    for run_dir in run_dirs(directory):
        seed = re.fullmatch(r"seed(\d+)", os.path.basename(run_dir))
        disagreement = folder_disagreement(Path(run_dir), {"seed": seed.group(1)} if seed else {})
        if disagreement:
            warn(f"skipping {run_dir}: {disagreement}; it is not averaged")
            continue
        path = run_log(run_dir)
        metrics, used = parse_log(path, [keyword], TEST_RESULT if test_log else None)
        if not test_log and used == TEST_RESULT:
            print(f"note: {path} has no '{FINISH_TRAINING}' line (an eval-only log): "
                  f"reading the result after '{TEST_RESULT}' (as --test-log would)", file=sys.stderr)
        files.append(path)
        values.append(metrics[keyword])
        print(f"file: {path}. {keyword}: {metrics[keyword]:.2f}%. ", file=out)
    if not values:
        raise ResultError(f"no run in {directory} can be averaged: each one was skipped (see the warnings above)")
    mean, spread = summarize(values, ci95)
    print(f"===\nSummary of directory: {directory}\n* {keyword}: {mean:.2f}% +- {spread:.2f}%\n===", file=out)
    return DirectorySummary(files, values, mean, spread)


def parse_multi_exp(directory, keyword="accuracy", test_log=False, ci95=False, out=None) -> float:
    """Each subdirectory is one experiment holding seed runs; returns the mean of their means."""
    out = out or sys.stdout
    means = [parse_directory(exp, keyword, test_log, ci95, out).mean for exp in run_dirs(directory)]
    average = float(np.mean(means))
    print(f"Average performance\n* {keyword}: {average:.2f}%", file=out)
    return average


# -------------------- Finding runs in an output tree ----------------------------------------

class Method(NamedTuple):
    trainer: str
    cfg: str
    shots: int


def segment_regex(segment: str) -> "re.Pattern":
    """'{cfg}_{shots}shots' -> regex with named groups; shots and seed are integers."""
    parts = re.split(r"\{(\w+)\}", segment)
    regex = "".join(re.escape(p) if i % 2 == 0 else
                    (rf"(?P<{p}>\d+)" if p in ("shots", "seed") else rf"(?P<{p}>.+)")
                    for i, p in enumerate(parts))
    return re.compile(regex)


def match_run_dirs(base: Path, pattern: str):
    """Yield ``(fields, run_dir)`` for every directory under ``base`` matching ``pattern``."""
    regexes = [segment_regex(s) for s in pattern.split("/")]

    def walk(directory: Path, depth: int, fields: dict):
        if depth == len(regexes):
            yield fields, directory
            return
        for child in sorted(directory.iterdir()):
            match = regexes[depth].fullmatch(child.name)
            if match and child.is_dir() and not child.name.startswith("."):
                yield from walk(child, depth + 1, {**fields, **match.groupdict()})

    if base.is_dir():
        yield from walk(base, 0, {})


def read_run(run_dir: Path, keywords):
    """A run's metrics: from its result.json (written by train.py), else from log.txt (plain CoOp
    trees); None when it has neither. ResultError when they lack a keyword."""
    try:
        metrics = runs.read_result(str(run_dir), keywords)
    except KeyError as error:
        raise ResultError(error.args[0]) from None
    if metrics is not None:
        return metrics
    if (run_dir / runs.RUN_FILE).is_file():
        raise ResultError(f"{run_dir} has {runs.RUN_FILE} but no {runs.RESULT_FILE}: the run is not finished "
                          "(still running, or killed: run its command again to finish it)")
    log = run_dir / LOG_NAME
    if not log.is_file():
        return None
    return parse_log(log, keywords)[0]


def folder_disagreement(run_dir: Path, fields: dict) -> Optional[str]:
    """What a run's run.json records that its folder's name contradicts (trainer, seed, shots, config
    label), or None: a seed folder copied from another seed, or a run trained by hand with other options
    into a config folder, is not what its row says."""
    recorded, problem = runs.read_run_record(str(run_dir))
    if problem:
        return f"its {runs.RUN_FILE} is damaged ({problem}), so nothing says which run this is"
    if recorded is None:
        return None
    expected = {"trainer": recorded.get("trainer"), "seed": recorded.get("seed"), "shots": recorded.get("shots")}
    differ = [f"{key} {value!r} (the folder says {fields[key]!r})" for key, value in expected.items()
              if key in fields and value is not None and str(value) != str(fields[key])]
    # The folder's config label is CFG's name plus the options' tag (the few-shot recipe may train another
    # file of the same backbone under CFG's name): the tag must be there.
    tag = recorded.get("tag")
    if tag and "cfg" in fields and not str(fields["cfg"]).endswith("_" + tag):
        differ.append(f"options {tag!r} (the folder says {fields['cfg']!r})")
    return f"its {runs.RUN_FILE} records " + ", ".join(differ) if differ else None


# What a method's runs were run with, as their run.json records it (for the table's notes and the
# protocol checks against the published rows): {(trainer, cfg): [{"backbone", "epochs", "config"}, ...]}.
SETUP_KEYS = {"backbone": "MODEL.BACKBONE.NAME", "epochs": "OPTIM.MAX_EPOCH"}


def run_setup(run_dir: Path) -> dict:
    recorded, _ = runs.read_run_record(str(run_dir))
    config = (recorded or {}).get("config") or {}
    setup = {name: config[key] for name, key in SETUP_KEYS.items() if key in config}
    if recorded and recorded.get("config_name"):
        setup["config"] = recorded["config_name"]
    return setup


def load_runs(base: Path, pattern: str, keywords, trainers=None, dataset: Optional[str] = None,
              setups: Optional[Dict] = None) -> Dict:
    """``{(dataset, Method): {seed: {keyword: value}}}``; unreadable runs are skipped with a warning (a key
    whose runs were all skipped maps to ``{}``). `setups` (a dict) collects each method's run_setup."""
    found: Dict = {}
    for fields, run_dir in match_run_dirs(base, pattern):
        if trainers and fields["trainer"] not in trainers:
            continue
        key = (fields.get("dataset", dataset), Method(fields["trainer"], fields["cfg"], int(fields["shots"])))
        found.setdefault(key, {})  # a dataset whose runs are all skipped still gets its row, marked missing
        disagreement = folder_disagreement(run_dir, fields)
        if disagreement:
            warn(f"skipping {run_dir}: {disagreement}; it is not the run its folder names, so it is not averaged")
            continue
        try:
            metrics = read_run(run_dir, keywords)
        except ResultError as error:
            warn(f"skipping run: {error}")
            continue
        if metrics is None:
            warn(f"skipping {run_dir}: no {runs.RESULT_FILE} and no {LOG_NAME}")
            continue
        found[key][int(fields["seed"])] = metrics
        if setups is not None:
            setup = run_setup(run_dir)
            if setup:
                setups.setdefault((key[1].trainer, key[1].cfg), []).append(setup)
    return found


def read_methods(*found: Dict) -> List[Method]:
    """The methods with at least one readable run in `found` (load_runs' dicts): a method whose runs are
    all skipped gets no column, while a dataset whose runs are all skipped keeps its row, marked missing."""
    return [m for runs_found in found for (_, m), per_seed in runs_found.items() if per_seed]


def order_methods(methods, trainers=None) -> List[Method]:
    rank = {t: i for i, t in enumerate(trainers or [])}
    return sorted(set(methods), key=lambda m: (rank.get(m.trainer, len(rank)), m))


def method_labels(methods: List[Method]) -> Dict[Method, str]:
    """The shortest unambiguous label: trainer, trainer/cfg, or trainer/cfg/Nshots."""
    labels = {}
    for m in methods:
        same_trainer = [o for o in methods if o.trainer == m.trainer]
        if len(same_trainer) == 1:
            labels[m] = m.trainer
        elif len([o for o in same_trainer if o.cfg == m.cfg]) == 1:
            labels[m] = f"{m.trainer}/{m.cfg}"
        else:
            labels[m] = f"{m.trainer}/{m.cfg}/{m.shots}shots"
    return labels


# -------------------- Tables ----------------------------------------------------------------

@dataclass
class Cell:
    value: Optional[float] = None
    seeds: int = 0  # seeds averaged into the value; 0 for derived and published values
    mark: str = ""

    def text(self) -> str:
        return "-" if self.value is None else f"{self.value:.2f}{self.mark}"


@dataclass
class Table:
    protocol: str
    headers: List[str]
    rows: List[list]  # [label, Cell, ..., seeds text]
    footnotes: List[str] = field(default_factory=list)
    series: dict = field(default_factory=dict)  # numbers for --plot
    groups: list = field(default_factory=list)  # [(label, [sub-column names])] after the first column


def seed_mean(per_seed: Dict[int, dict], keyword: str, seeds=None) -> Cell:
    seeds = sorted(per_seed) if seeds is None else seeds
    if not seeds:
        return Cell()
    return Cell(float(np.mean([per_seed[s][keyword] for s in seeds])), len(seeds))


def mean_cell(cells: List[Cell], expected: int) -> Cell:
    """Mean over the cells that have a value, marked when fewer than ``expected`` do."""
    values = [c.value for c in cells if c.value is not None]
    if not values:
        return Cell()
    return Cell(float(np.mean(values)), mark=PARTIAL_MARK if len(values) < expected else "")


def average_label(protocol: str, datasets: List[str]) -> str:
    """'Average', or 'Average (3 of 11)' when the table holds some of the protocol's datasets but not all:
    such a mean is not comparable with a published Average (the world's datasets are not the protocol's)."""
    expected = DEFAULT_DATASETS.get(protocol, ())
    covered = [d for d in datasets if d in expected]
    return f"Average ({len(covered)} of {len(expected)})" if covered and len(covered) < len(expected) else "Average"


def mark_missing_rows(table: "Table", protocol: str, datasets: List[str]) -> None:
    """Label the dataset rows where no run of ours has a value (all skipped or failed), and say what an
    Average over fewer datasets than the protocol's means."""
    ours = [i for i, h in enumerate(table.headers) if i and h != "seeds"]
    missing = []
    for row in table.rows:
        if row[0] in datasets and all(not isinstance(row[i], Cell) or row[i].value is None or row[i].seeds == 0
                                      for i in ours):
            missing.append(row[0])
            row[0] += MISSING_LABEL
    if missing:
        table.footnotes.append(f"{MISSING_LABEL.strip()}: no run of {', '.join(missing)} could be read (each was "
                               "skipped or failed; see the warnings), so the Average leaves it out")
    table.footnotes += partial_average_notes(protocol, datasets)


def partial_average_notes(protocol: str, datasets) -> List[str]:
    """The footnote of an Average labelled by `average_label` as covering part of the protocol (else none)."""
    label = average_label(protocol, datasets)
    if label == "Average":
        return []
    left_out = [d for d in DEFAULT_DATASETS[protocol] if d not in datasets]
    return [f"{label}: the mean over the protocol's datasets in the table; {', '.join(left_out)} have no runs, so "
            "it is not comparable with a published Average"]


def row_cells(rows: List[list]) -> List[Cell]:
    return [c for row in rows for c in row if isinstance(c, Cell)]


def seeds_text(cells: List[Cell]) -> str:
    counts = sorted({c.seeds for c in cells if c.value is not None and c.seeds})
    if not counts:
        return "-"
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"


def reference_cell(entry: dict, dataset: str, key: str) -> Cell:
    values = entry["results"].get(dataset, {})
    if key not in values:
        return Cell()
    return Cell(float(values[key]), mark="" if values.get("checked") else UNCHECKED_MARK)


def load_reference(path=REFERENCE_FILE) -> dict:
    with open(path) as f:
        return json.load(f)


def select_references(reference: Optional[dict], protocol: str, trainers=None, datasets=()) -> Dict[str, dict]:
    """``{'CoOp (paper)': entry}`` for the published methods of ``protocol`` (filtered by trainer, and, when
    the table has `datasets`, to the rows published for at least one of them, or for the average only:
    SHIP's joint-label-space rows of CoOp's datasets do not stand as empty columns beside a CUB table;
    beside a table of none of the protocol's datasets, every row with an Average). A trainer with several published
    rows (IVLP's variants, the SHIP combinations) labels each by its name in the reference file, so none
    hides another."""
    entries = {name: e for name, e in (reference or {}).get(protocol, {}).items()
               if not trainers or e["trainer"] in trainers}
    rows_of = Counter(e["trainer"] for e in entries.values())  # before the dataset filter: labels stay stable
    # A table of no dataset any paper reports (the built-in world) still gets the papers' Averages (marked).
    foreign = bool(datasets) and not any(d.lower() in DEFAULT_DATASETS.get(protocol, ()) for d in datasets)

    def shown(e):
        return (not datasets or set(e["results"]) <= {"average"} or any(d.lower() in e["results"] for d in datasets)
                or (foreign and "average" in e["results"]))
    return {f"{e['trainer'] if rows_of[e['trainer']] == 1 else name} (paper)": e for name, e in entries.items()
            if shown(e)}


def interleave(methods: List[Method], labels: Dict[Method, str], references: Dict[str, dict], trainers=None) -> list:
    """Column (or row) order: trainers as --trainers lists them (else ours first), each trainer's
    runs followed by its published numbers; items are (label, Method) or (label, reference entry)."""
    seen = [m.trainer for m in methods] + [e["trainer"] for e in references.values()]
    rank = {t: i for i, t in enumerate(trainers or [])}
    order = sorted(dict.fromkeys(seen), key=lambda t: (rank.get(t, len(rank)), seen.index(t)))
    return [item for t in order for item in
            [(labels[m], m) for m in methods if m.trainer == t] +
            [(name, e) for name, e in references.items() if e["trainer"] == t]]


PROTOCOL_SHOTS = 16  # the shots of every published base2new, xd, dg and gzsl row
NOT_SAME_MARK = "‡"


def averages_other_datasets(protocol: str, datasets) -> bool:
    """Whether our Average is over other datasets than a paper's (the protocol's own list)."""
    return set(datasets) != set(DEFAULT_DATASETS.get(protocol, ()))


def setup_text(setups: List[dict]) -> str:
    """"config shapes, backbone shapes-clip, 30 epochs" (several values joined by '/')."""
    parts = []
    for name in ("config", "backbone", "epochs"):
        values = sorted({str(s[name]) for s in setups if name in s})
        if values:
            parts.append(f"{name} {'/'.join(values)}" if name != "epochs" else f"{'/'.join(values)} epochs")
    return ", ".join(parts)


def comparison_notes(protocol: str, labels: Dict, setups: Dict, references: Dict[str, dict], datasets) -> List[str]:
    """Footnotes naming what our rows ran (config, backbone, epochs), and warnings where a published
    row beside them ran another protocol (backbone, shots) or averages other datasets."""
    def of(m):
        return setups.get((m.trainer, m.cfg), [])

    def text(m):
        setups_of = of(m) if m.trainer not in runs.NON_LEARNING_TRAINERS else [
            {k: v for k, v in setup.items() if k != "epochs"} for setup in of(m)]  # nothing trains
        return setup_text(setups_of) + (f", {m.shots} shots" if m.shots else "")
    notes = [f"{labels[m]} (ours): {text(m)}" for m in labels if of(m)]
    if not references:
        return notes
    ours_backbones = {str(s.get("backbone")) for m in labels for s in of(m) if s.get("backbone")}
    for name, entry in references.items():
        theirs = entry.get("backbone", "")
        if ours_backbones and theirs and ours_backbones != {theirs}:
            warn(f"{protocol}: {name} ran {theirs}; ours ran {', '.join(sorted(ours_backbones))}: compare their "
                 "differences between methods, not their values")
            break
    if protocol in ("base2new", "xd", "dg", "gzsl"):
        other = sorted({f"{labels[m]} at {m.shots}" for m in labels if m.shots and m.shots != PROTOCOL_SHOTS})
        if other:
            warn(f"{protocol}: the published rows are {PROTOCOL_SHOTS}-shot; ours: {', '.join(other)} shots")
    if any("average" in e["results"] for e in references.values()) and averages_other_datasets(protocol, datasets):
        notes.append(f"{NOT_SAME_MARK} a paper's mean over its {len(DEFAULT_DATASETS[protocol])} datasets; ours average "
                     f"{', '.join(datasets) or 'no dataset'}: not the same datasets")
    return notes


def published_cell(entry: dict, dataset: str, key: str, protocol: str, datasets) -> Cell:
    """A published value; its 'average' marked when our table averages other datasets than the paper's."""
    cell = reference_cell(entry, dataset.lower(), key)
    if dataset.lower() == "average" and cell.value is not None and averages_other_datasets(protocol, datasets):
        cell.mark += NOT_SAME_MARK
    return cell


def reference_footnotes(used: Dict[str, dict], marked: bool) -> List[str]:
    notes = [f"{name}: {e['source']}; backbone {e['backbone']}" +
             (f"; Average: {e['results']['average']['source']}" if "source" in e["results"].get("average", {}) else "")
             for name, e in used.items()]
    if marked:
        notes.append(f"{UNCHECKED_MARK} recalled, not checked against its source "
                     "(see the notes in configs/reference_results.json)")
    return notes


def finish_table(table: Table, references: Dict[str, dict]) -> Table:
    cells = row_cells(table.rows)
    if any(c.mark == PARTIAL_MARK for c in cells):
        table.footnotes.append(f"{PARTIAL_MARK} mean over fewer entries than the table has (missing runs)")
    table.footnotes += reference_footnotes(references, any(c.mark == UNCHECKED_MARK for c in cells))
    table.footnotes.append("seeds: seeds averaged per cell (a range where cells differ)")
    return table


def build_pair_table(protocol, pairs, methods, datasets, names, ref_keys, references, trainers=None,
                     setups=None) -> Table:
    """Rows per dataset plus Average; per method (first, second, HM of the two).

    ``pairs[(dataset, method)] = (first Cell, second Cell)``. The Average row averages first and
    second over the datasets that have both, then takes the HM of those averages.
    """
    labels = method_labels(methods)
    columns = interleave(methods, labels, references, trainers)
    headers = ["Dataset"] + [f"{label} {n}" for label, _ in columns for n in names] + ["seeds"]
    rows, bars = [], {label: {} for label, _ in columns}
    for dataset in datasets + ["Average"]:
        row = [dataset]
        for label, source in columns:
            if isinstance(source, dict):  # published numbers
                cells = [published_cell(source, dataset, k, protocol, datasets) for k in ref_keys]
            elif dataset != "Average":
                first, second = pairs.get((dataset, source), (Cell(), Cell()))
                both = first.value is not None and second.value is not None
                hm = Cell(harmonic_mean(first.value, second.value), first.seeds) if both else Cell()
                cells = [first, second, hm]
            else:
                present = [pairs.get((d, source), (Cell(), Cell())) for d in datasets]
                complete = [p for p in present if None not in (p[0].value, p[1].value)]
                first = mean_cell([p[0] for p in complete], len(datasets))
                second = mean_cell([p[1] for p in complete], len(datasets))
                hm = Cell(harmonic_mean(first.value, second.value), mark=first.mark) if complete else Cell()
                cells = [first, second, hm]
            row += cells
            bars[label][dataset] = (cells[0].value, cells[1].value)
        rows.append(row + [seeds_text(row_cells(rows + [row] if dataset == "Average" else [row]))])
    rows[-1][0] = average_label(protocol, datasets)
    a, b, h = names
    table = Table(protocol, headers, rows, series={"rows": datasets + ["Average"], "bars": bars, "names": names})
    table.footnotes.append(f"{h} = 2*{a}*{b}/({a}+{b}); Average: {a} and {b} are means over datasets, "
                           f"{h} is the {h} of those means")
    table.groups = [(label, list(names)) for label, _ in columns]
    table.footnotes += comparison_notes(protocol, labels, setups or {}, references, datasets)
    mark_missing_rows(table, protocol, datasets)
    return finish_table(table, references)


def build_base2new_table(root="output", trainers=None, reference=None, keyword="accuracy") -> Table:
    base_dir = Path(root) / "base2new"
    setups: Dict = {}
    trained = load_runs(base_dir / "train_base", BASE2NEW_RUNS, [keyword], trainers, setups=setups)
    tested_base = load_runs(base_dir / "test_base", BASE2NEW_RUNS, [keyword], trainers)
    tested_new = load_runs(base_dir / "test_new", BASE2NEW_RUNS, [keyword], trainers)
    keys = set(trained) | set(tested_base) | set(tested_new)
    pairs = {}
    for key in keys:
        base = {**trained.get(key, {}), **tested_base.get(key, {})}  # a base-class eval log wins
        new = tested_new.get(key, {})
        common = sorted(set(base) & set(new))
        if set(base) != set(new):
            warn(f"base2new {key[0]} {'/'.join(map(str, key[1]))}: base seeds {sorted(base)} vs new seeds "
                 f"{sorted(new)}; " + (f"averaging seeds {common}" if common else "no seed has both"))
        if common:
            pairs[key] = (seed_mean(base, keyword, common), seed_mean(new, keyword, common))
        else:
            pairs[key] = (seed_mean(base, keyword), seed_mean(new, keyword))
    methods = order_methods(read_methods(trained, tested_base, tested_new), trainers)
    datasets = sorted({d for d, _ in keys})
    references = select_references(reference, "base2new", trainers, datasets)
    return build_pair_table("base2new", pairs, methods, datasets, ("Base", "New", "HM"),
                            ("base", "new", "hm"), references, trainers, setups)


def build_gzsl_table(root="output", trainers=None, reference=None) -> Table:
    setups: Dict = {}
    runs = load_runs(Path(root) / "gzsl", GZSL_RUNS, ["acc_seen", "acc_unseen"], trainers, setups=setups)
    pairs = {key: (seed_mean(r, "acc_seen"), seed_mean(r, "acc_unseen")) for key, r in runs.items()}
    methods = order_methods(read_methods(runs), trainers)
    datasets = sorted({d for d, _ in runs})
    references = select_references(reference, "gzsl", trainers, datasets)
    return build_pair_table("gzsl", pairs, methods, datasets, ("S", "U", "H"), ("s", "u", "h"), references, trainers,
                            setups)


def transfer_source(root: Path) -> str:
    """The xd/dg source of an output tree: ImageNet, or the built-in world's Shapes when only it is there."""
    if not (root / SOURCE_DATASET).is_dir() and (root / WORLD_SOURCE).is_dir():
        return WORLD_SOURCE
    return SOURCE_DATASET


def build_transfer_table(protocol, root="output", trainers=None, reference=None, keyword="accuracy") -> Table:
    """xd / dg: one row per method; the source (ImageNet, or the world's Shapes), then targets, then
    the mean over targets."""
    root = Path(root)
    source_name = transfer_source(root) if protocol == "xd" else SOURCE_DATASET
    targets_of_source = XD_SOURCES[source_name]
    setups: Dict = {}
    source = load_runs(root / source_name, XD_SOURCE_RUNS, [keyword], trainers, dataset=source_name, setups=setups)
    targets = load_runs(root / "evaluation", XD_TARGET_RUNS, [keyword], trainers)
    known = targets_of_source if protocol == "xd" else DG_TARGETS
    found = {d for d, _ in targets}
    if protocol == "xd":
        known = tuple(d for d in targets_of_source if d in found)
        others = sorted(found - set(targets_of_source) - set(DG_TARGETS) - {source_name})
        if others:
            warn(f"xd: ignoring evaluations outside the protocol's targets: {', '.join(others)}")
    runs = {**source, **{k: v for k, v in targets.items() if k[0] in known}}
    methods = order_methods(read_methods(runs), trainers)
    references = select_references(reference, protocol, trainers, (source_name, *known))
    headers = ["Method", f"{source_name} (source)", *known, average_label(protocol, list(known)), "seeds"]
    rows = []
    labels = method_labels(methods)
    for label, item in interleave(methods, labels, references, trainers):
        if isinstance(item, dict):
            cells = [published_cell(item, d, "accuracy", protocol, known) for d in (source_name, *known, "average")]
        else:
            cells = [seed_mean(runs.get((d, item), {}), keyword) for d in (source_name, *known)]
            cells.append(mean_cell(cells[1:], len(known)))
        rows.append([label, *cells, seeds_text(cells)])
    table = Table(protocol, headers, rows)
    table.footnotes.append(f"Average: mean over the {len(known)} target datasets (source excluded)")
    table.footnotes += comparison_notes(protocol, labels, setups, references, known)
    table.footnotes += partial_average_notes(protocol, list(known))
    return finish_table(table, references)


def build_fewshot_table(root="output", trainers=None, reference=None, keyword="accuracy") -> Table:
    setups: Dict = {}
    runs = load_runs(Path(root) / "fewshot", FEWSHOT_RUNS, [keyword], trainers, setups=setups)
    by_method: Dict = {}
    for (dataset, m), per_seed in runs.items():  # one column group per trainer/cfg, shots as columns
        by_method.setdefault(m._replace(shots=0), {})[(dataset, m.shots)] = seed_mean(per_seed, keyword)
    shots = sorted(set(FEWSHOT_SHOTS) | {m.shots for _, m in runs})
    methods = order_methods({m._replace(shots=0) for m in read_methods(runs)}, trainers)
    labels = method_labels(methods)
    datasets = sorted({d for d, _ in runs})
    references = select_references(reference, "fewshot", trainers, datasets)
    columns = interleave(methods, labels, references, trainers)
    headers = ["Dataset"] + [f"{label} {s}-shot" for label, _ in columns for s in shots] + ["seeds"]
    rows, lines = [], {label: {} for label, _ in columns}
    for dataset in datasets + ["Average"]:
        row = [dataset]
        for label, item in columns:
            if isinstance(item, dict):
                cells = [published_cell(item, dataset, str(s), "fewshot", datasets) for s in shots]
            elif dataset != "Average":
                cells = [by_method[item].get((dataset, s), Cell()) for s in shots]
            else:
                cells = [mean_cell([by_method[item].get((d, s), Cell()) for d in datasets], len(datasets))
                         for s in shots]
            row += cells
            lines[label][dataset] = {s: c.value for s, c in zip(shots, cells)}
        rows.append(row + [seeds_text(row_cells(rows + [row] if dataset == "Average" else [row]))])
    rows[-1][0] = average_label("fewshot", datasets)
    table = Table("fewshot", headers, rows, series={"rows": datasets + ["Average"], "shots": shots, "lines": lines})
    table.groups = [(label, [f"{s}-shot" for s in shots]) for label, _ in columns]
    table.footnotes += comparison_notes("fewshot", labels, setups, references, datasets)
    mark_missing_rows(table, "fewshot", datasets)
    return finish_table(table, references)


def build_table(protocol, root="output", trainers=None, reference=None, keyword="accuracy") -> Table:
    if protocol in ("xd", "dg"):
        return build_transfer_table(protocol, root, trainers, reference, keyword)
    if protocol == "gzsl":  # reads acc_seen and acc_unseen whatever the keyword
        return build_gzsl_table(root, trainers, reference)
    builders = {"base2new": build_base2new_table, "fewshot": build_fewshot_table}
    if protocol not in builders:
        raise ResultError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    return builders[protocol](root, trainers, reference, keyword)


def format_table(table: Table, fmt="markdown") -> str:
    body = [[c.text() if isinstance(c, Cell) else c for c in row] for row in table.rows]
    if fmt == "csv":
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows([table.headers] + body)
        return buffer.getvalue().rstrip("\n")
    tablefmt = {"markdown": "github", "latex": "latex_booktabs"}[fmt]
    return tabulate(body, headers=table.headers, tablefmt=tablefmt, disable_numparse=True)


TERMINAL_WIDTH = 80  # when the terminal's width is unknown (output to a file or pipe, COLUMNS unset)


def _width(table: Table) -> int:
    return max(len(line) for line in format_table(table).splitlines())


def _key(i: int) -> str:
    """A, B, ..., Z, AA, AB, ...: the short name of column group i in a narrow view."""
    return _key(i // 26 - 1) + chr(65 + i % 26) if i >= 26 else chr(65 + i)


def narrow_views(table: Table, width: int = TERMINAL_WIDTH) -> Tuple[List[Table], List[str]]:
    """(tables, legend): the table as it is when it fits `width` columns; else views that do. A table
    of column groups (each method's Base / New / HM, or its shots) gives one view per sub-column
    ("Dataset (HM)"), a column per method named by a key ("A") that the legend spells out; any view
    still too wide, and a table without groups, is split by columns. Every view keeps the first and
    the seeds column."""
    if _width(table) <= width:
        return [table], []
    last = len(table.headers) - 1 if table.headers[-1] == "seeds" else len(table.headers)

    def view(first, chosen):
        """The first column headed `first`, the `chosen` (header, column index) pairs, the seeds column."""
        return Table(table.protocol, [first] + [h for h, _ in chosen] + table.headers[last:],
                     [[row[0]] + [row[c] for _, c in chosen] + row[last:] for row in table.rows])

    legend, pieces = [], []  # pieces: (first header, [(header, column index)])
    if table.groups:
        start, starts = 1, []
        for i, (label, subs) in enumerate(table.groups):
            legend.append(f"{_key(i)} = {label}")
            starts.append(start)
            start += len(subs)
        whole = view(table.headers[0], [(f"{_key(i)} {sub}", starts[i] + j) for i, (_, subs) in enumerate(table.groups)
                                        for j, sub in enumerate(subs)])
        if _width(whole) <= width:  # the methods' keys are enough: one table
            return [whole], legend
        for j, sub in enumerate(table.groups[0][1]):
            pieces.append((f"{table.headers[0]} ({sub})", [(_key(i), starts[i] + j) for i in range(len(starts))]))
    else:
        pieces.append((table.headers[0], [(table.headers[c], c) for c in range(1, last)]))

    views = []
    for first, columns in pieces:
        current = []
        for column in columns:
            if current and _width(view(first, current + [column])) > width:
                views.append(view(first, current))
                current = []
            current.append(column)
        views.append(view(first, current))
    return views, legend


def format_footnotes(table: Table, fmt="markdown") -> str:
    prefix = "% " if fmt == "latex" else ""
    return "\n".join(prefix + note for note in table.footnotes)


# -------------------- Plots (matplotlib is optional and imported only here) -----------------

def save_plot(table: Table, path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ResultError("--plot needs matplotlib: pip install matplotlib") from error
    if table.protocol == "fewshot":
        figure = plot_fewshot_curves(plt, table.series)
    elif table.protocol == "base2new":
        figure = plot_base2new_bars(plt, table.series)
    else:
        raise ResultError("--plot draws fewshot curves and base2new bars only")
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)


def plot_fewshot_curves(plt, series: dict):
    rows, shots, lines = series["rows"], series["shots"], series["lines"]
    n_cols = min(4, len(rows))
    n_rows = -(-len(rows) // n_cols)
    figure, axes = plt.subplots(n_rows, n_cols, figsize=(4 * n_cols, 3.2 * n_rows), squeeze=False)
    for ax, dataset in zip(axes.flat, rows):
        for label, per_row in lines.items():
            points = [(i, v) for i, v in enumerate(per_row[dataset].values()) if v is not None]
            if points:
                style = "--" if label.endswith("(paper)") else "-"
                ax.plot(*zip(*points), style, marker="o", label=label)
        ax.set_xticks(range(len(shots)), [str(s) for s in shots])
        ax.set(title=dataset, xlabel="shots per class", ylabel="accuracy (%)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    figure.tight_layout()
    return figure


def plot_base2new_bars(plt, series: dict):
    rows, bars, names = series["rows"], series["bars"], series["names"]
    figure, ax = plt.subplots(figsize=(max(8, 1.3 * len(rows) * max(1, len(bars)) ** 0.5), 4))
    width = 0.8 / (2 * max(1, len(bars)))
    for i, (label, per_row) in enumerate(bars.items()):
        for j, name in enumerate(names[:2]):
            present = [(k, per_row[r][j]) for k, r in enumerate(rows) if per_row[r][j] is not None]
            xs = [k + (2 * i + j + 0.5) * width - 0.4 for k, _ in present]  # missing values: no bar
            ax.bar(xs, [v for _, v in present], width, label=f"{label} {name}", color=f"C{i}", hatch="//" if j else None,
                   alpha=0.6 if j else 1.0)
    ax.set_xticks(range(len(rows)), rows, rotation=30, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=8, ncol=2)
    figure.tight_layout()
    return figure
