"""The run registry: a run's identity -> its output folder, whether it is finished, and its result file.

Written once and used by the scripts (through ``python -m clipadapt.runs plan``), by train.py, by the
sweep launchers (clipadapt/sweep.py) and by parse_test_res.py.

A run is (protocol, dataset, trainer, config file, shots, seed) plus the merged config. Options given
on top of the config file that change it (``TRAINER.COOP.N_CTX 4``) are the run's *overrides*; they
get a short readable tag in the folder name (``vit_b16_nctx4``, as CoOp's scripts put
``nctx16_cscFalse_ctpend`` there), so two different configs never share a folder. Each run folder holds:

- ``run.json``: the identity, written by train.py when the run starts (full merged config and its digest);
- ``log.txt``: Dassl's log;
- ``result.json``: written when the run finished: metrics per split, GZSL S/U/H, config digest, wall
  time, library versions, device.

A run is finished when its ``result.json`` is there; a folder without ``run.json`` (a plain CoOp tree)
is judged from ``log.txt`` as CoOp's scripts do. A folder whose ``run.json`` holds another config is
never finished: ``RunMismatch`` names the keys that differ.

This module imports no torch at import time (parse_test_res.py reads result files without it).
"""
import hashlib
import json
import math
import os
import os.path as osp
import re
import sys
import time

from .atomic import atomic_write_text
from .dassl_log import LOG_NAME, final_metrics, has_final_result
from .protocols import KIND_PROTOCOL, LAYOUTS, RELEASED_EPOCH_CONFIGS, ProtocolError, default_config, recipe_config
from .weights_identity import canonical_backbone

RUN_FILE = "run.json"
RESULT_FILE = "result.json"
RESULT_FORMAT = 1

# Keys that are part of the identity through the path (shots, seed, classes): in the digest, not in the tag.
PATH_KEYS = ("SEED", "DATASET.NUM_SHOTS", "DATASET.SUBSAMPLE_CLASSES")
# Keys that are not part of a run's identity, with why: they say where things are, or how fast or how
# verbosely a run goes, never what it computes. Neither the folder tag, the config digest, the folder
# check nor the resume check looks at them.
NON_IDENTITY_KEYS = {
    "OUTPUT_DIR": "where the run is written",
    "RESUME": "where a checkpoint is read from",
    "MODEL.INIT_RUN": "where the source run's checkpoints are read from (its config is the run's own)",
    "MODEL.INIT_RUN_EPOCH": "which of the source run's checkpoints: the protocol passes its last epoch",
    "DATASET.ROOT": "where the data lives",
    "FEATURES.CACHE_DIR": "where cached features live",
    "FEATURES.CACHE": "cached features are the features computed without the cache",
    "DATALOADER.NUM_WORKERS": "loader processes: speed only",
    "DATALOADER.TEST.BATCH_SIZE": "evaluation batch size: speed and memory only",
    "TRAIN.PRINT_FREQ": "how often the log prints",
    "TRAIN.CHECKPOINT_FREQ": "how often checkpoints are written",
    "VERBOSE": "how much the log prints",
    "USE_CUDA": "the device; result.json records which one ran",
    "MODEL.COMPILE_IMAGE_ENCODER": "torch.compile of a frozen encoder: speed only",
    "DATASET.VERIFY_MANIFEST": "a check of the data, not a change to it",
    "DATASET.SKIP_UNREADABLE": "lets a run finish past unreadable images, each named in the log",
    "TEST.NO_TEST": "whether the final test runs, not what is learned",
    "TEST.PER_CLASS_RESULT": "extra report lines beside the result",
    "TEST.COMPUTE_CMAT": "an extra confusion matrix beside the result",
    "TRAINER.COCOOP.EVAL_TEXT_BATCH": "prompts per text-encoder pass at evaluation: memory only",
}
TAG_MAX_CHARS = 64
# Trainers whose class says LEARNS = False (the planner stays light: no trainer import per plan call;
# tests/test_reliability_round3.py checks that this set and the classes agree).
NON_LEARNING_TRAINERS = frozenset({"ZeroshotCLIP", "ZeroshotCLIP2"})


class RunMismatch(Exception):
    """A run folder holds a run of another config."""


# -------------------- identity ------------------------------------------------------------------

def flatten(cfg, prefix=""):
    """{"A.B": leaf} of a (yacs) config or nested dict; tuples become lists (json-comparable)."""
    flat = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = list(value) if isinstance(value, tuple) else value
    return flat


BACKBONE_KEYS = ("MODEL.BACKBONE.NAME", "MODEL.BACKBONE.PRETRAINED_TAG")


def identity_config(cfg):
    """The flat config without NON_IDENTITY_KEYS (`cfg` a config, a nested dict or a flat dict), a
    weights file named by what it holds, not where it is (weights_identity.canonical_backbone)."""
    flat = {k: v for k, v in flatten(cfg).items() if k not in NON_IDENTITY_KEYS}
    if BACKBONE_KEYS[0] in flat:
        name, tag = canonical_backbone(flat[BACKBONE_KEYS[0]], flat.get(BACKBONE_KEYS[1], ""))
        flat[BACKBONE_KEYS[0]] = name
        if BACKBONE_KEYS[1] in flat:
            flat[BACKBONE_KEYS[1]] = tag
    return flat


def config_digest(cfg):
    """16 hex digits that change whenever anything that decides a run's numbers changes."""
    blob = json.dumps(identity_config(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


ABSENT = "<absent>"


def config_diff(theirs, mine, shared_only=False):
    """[(key, their value, my value)] of the identity keys whose values differ between two configs
    (configs, nested or flat dicts). A key one side lacks shows as ABSENT, or is not compared when
    `shared_only` (a checkpoint of an older or newer clipadapt has other keys)."""
    a, b = identity_config(theirs), identity_config(mine)
    keys = (a.keys() & b.keys()) if shared_only else (a.keys() | b.keys())
    return [(k, a.get(k, ABSENT), b.get(k, ABSENT)) for k in sorted(keys) if a.get(k, ABSENT) != b.get(k, ABSENT)]


def differences_text(diffs, limit=6):
    """The one phrase for config_diff's result: "KEY old -> new, ..." (at most `limit` keys named)."""
    shown = ", ".join(f"{k} {a!r} -> {b!r}" for k, a, b in diffs[:limit])
    return shown + (f" and {len(diffs) - limit} more" if len(diffs) > limit else "")


def config_overrides(base_cfg, cfg):
    """{key: value} of `cfg` that differ from `base_cfg` (the config files alone), path keys excluded."""
    return {k: mine for k, _, mine in config_diff(base_cfg, cfg) if k not in PATH_KEYS and mine != ABSENT}


def _key_abbrev(key):
    """N_CTX -> nctx, CSC -> csc, CLASS_TOKEN_POSITION -> ctp: CoOp's style of short names."""
    leaf = key.split(".")[-1]
    joined = leaf.replace("_", "").lower()
    return joined if len(joined) <= 9 else "".join(p[0] for p in leaf.split("_") if p).lower()


def _value_text(value):
    if isinstance(value, (list, tuple)):
        return "x".join(_value_text(v) for v in value) or "none"
    if isinstance(value, float):
        value = f"{value:g}"
    return re.sub(r"[^A-Za-z0-9.+-]", "", str(value)) or "none"


def override_tag(overrides):
    """A short readable tag for the overrides ('' for none), e.g. 'nctx4_cscTrue'.

    Too long a tag keeps its start and ends with a hash of all overrides, so it stays unique."""
    if not overrides:
        return ""
    names = {k: _key_abbrev(k) for k in overrides}
    clashes = {n for n in names.values() if list(names.values()).count(n) > 1}
    parts = []
    for key in sorted(overrides):
        name = names[key]
        if name in clashes:  # BACKBONE.NAME and HEAD.NAME: add the parent's short name
            name = _key_abbrev(key.rsplit(".", 1)[0]) + name
        parts.append(name + _value_text(overrides[key]))
    tag = "_".join(parts)
    if len(tag) > TAG_MAX_CHARS:
        digest = hashlib.sha256(json.dumps(overrides, sort_keys=True, default=str).encode()).hexdigest()[:8]
        tag = tag[:TAG_MAX_CHARS - 9].rstrip("_") + "_" + digest
    return tag


def config_label(config_name, overrides):
    tag = override_tag(overrides)
    return f"{config_name}_{tag}" if tag else config_name


def run_dir(root, layout, **fields):
    """The output folder of a run: `root` / LAYOUTS[layout] filled with `fields`."""
    prefix, pattern = LAYOUTS[layout]
    return osp.join(root, prefix.format(**fields), pattern.format(**fields))


# -------------------- building a run's config (imports the trainers) ----------------------------

def trainer_config_file(trainer, config_name):
    return osp.join("configs", "trainers", trainer, f"{config_name}.yaml")


def dataset_config_file(dataset):
    return osp.join("configs", "datasets", f"{dataset}.yaml")


def build_run_config(trainer, config_file, dataset_file, opts=(), cli=None):
    """(merged config, config of the files alone) for a run, as train.py merges it."""
    import datasets  # noqa: F401  (registers every dataset; the repository root is on sys.path)
    import trainers  # noqa: F401
    from .config import build_config
    cfg = build_config(trainer, dataset_file, config_file, list(opts), cli or {})
    base = build_config(trainer, dataset_file, config_file, [], cli or {})
    return cfg, base


# -------------------- the finished judgement ----------------------------------------------------

def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


# The keys of a run.json that readers use, with their types (older records may lack some; none may hold
# another type: a hand-edited or crafted file of another shape is damaged, never half-trusted).
RUN_RECORD_TYPES = {"trainer": str, "dataset": str, "seed": int, "shots": int, "subsample": str, "tag": str,
                    "config": dict, "config_digest": str, "eval_only": bool, "overrides": dict}
KIND_NAMES = {str: "a string", int: "a whole number", dict: "a JSON object", bool: "true or false"}


def run_record_problem(recorded):
    """Why a run.json's content is not a run record (None when it is one)."""
    if not isinstance(recorded, dict):
        return "it is not a readable JSON object"
    for key, kind in RUN_RECORD_TYPES.items():
        value = recorded.get(key)
        if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
            return f"its {key!r} is {value!r}, not {KIND_NAMES[kind]}"
    return None


def read_run_record(directory):
    """(record, problem) of `directory`'s run.json: (None, None) when there is none, (None, why) when it
    is damaged (unreadable or of another shape), (dict, None) otherwise. The one reader of run.json."""
    path = osp.join(directory, RUN_FILE)
    if not osp.isfile(path):
        return None, None
    recorded = read_json(path)
    problem = run_record_problem(recorded)
    return (None, problem) if problem else (recorded, None)


def write_json(path, data):
    """Atomic and fsynced: readers, and a machine that loses power, see the old file or the new one."""
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")


def recorded_diff(recorded, cfg):
    """config_diff between a run.json's config and `cfg` (a matching digest needs no comparison)."""
    if recorded.get("config_digest") == config_digest(cfg):
        return []
    return config_diff(recorded.get("config") or {}, cfg)


def mismatch_message(directory, diffs):
    """One line naming the keys whose values differ between the folder's run and this one."""
    return (f"{directory} holds a run of another config (there -> here: {differences_text(diffs)}). "
            "It is not this run: pass the options that made it, or move that folder away.")


def check_folder(directory, cfg):
    """Raise RunMismatch when `directory` holds a run whose config differs from `cfg`."""
    recorded, _ = read_run_record(directory)  # a damaged record tells nothing: train.py rewrites it
    if recorded and cfg is not None:
        diffs = recorded_diff(recorded, cfg)
        if diffs:
            raise RunMismatch(mismatch_message(directory, diffs))


def result_problem(result, split="test"):
    """Why a result.json's content cannot be a finished run's record (None when it can): it must be a JSON
    object whose results[split] holds an accuracy, every metric a finite percentage in [0, 100]."""
    if not isinstance(result, dict):
        return "it is not a readable JSON object"
    metrics = (result.get("results") or {}).get(split) if isinstance(result.get("results"), dict) else None
    if not isinstance(metrics, dict) or "accuracy" not in metrics:
        return f"it has no accuracy for split {split!r}"
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not 0 <= value <= 100:
            return f"its {name} is {value!r}, not a percentage in [0, 100]"
    return None


def is_finished(directory, cfg=None):
    """True when `directory` holds a finished run (of `cfg`, when given: RunMismatch otherwise): a
    result.json that reads and holds valid metrics, and a run.json (when there is one) that is a record.
    A damaged one is not finished, so its command runs the run again and writes a new one."""
    check_folder(directory, cfg)
    if read_run_record(directory)[1]:
        return False  # a damaged run.json: the tables skip the run, so its command must run it again
    result = osp.join(directory, RESULT_FILE)
    if osp.isfile(result):
        return result_problem(read_json(result), cfg.TEST.SPLIT if cfg is not None else "test") is None
    if osp.isfile(osp.join(directory, RUN_FILE)):
        return False  # one of ours, started but without its result
    log = osp.join(directory, LOG_NAME)
    return osp.isfile(log) and has_final_result(log)


# -------------------- what train.py writes -------------------------------------------------------

def describe_run(cfg, base_cfg, config_file, eval_only=False, model_dir="", load_epoch=None):
    """The identity written to run.json when a run starts."""
    overrides = config_overrides(base_cfg, cfg)
    return {
        "format": RESULT_FORMAT,
        "protocol": os.environ.get("CLIPADAPT_PROTOCOL", ""),
        "trainer": cfg.TRAINER.NAME,
        "dataset": cfg.DATASET.NAME,
        "config_file": config_file,
        "config_name": osp.splitext(osp.basename(config_file))[0] if config_file else "",
        "shots": cfg.DATASET.NUM_SHOTS,
        "seed": cfg.SEED,
        "subsample": cfg.DATASET.SUBSAMPLE_CLASSES,
        "overrides": overrides,
        "tag": override_tag(overrides),
        "eval_only": bool(eval_only),
        "model_dir": model_dir,
        "load_epoch": load_epoch,
        "config_digest": config_digest(cfg),
        "config": identity_config(cfg),
    }


def start_run(directory, identity):
    """Record the run's identity; a result of another config in the folder no longer belongs there."""
    os.makedirs(directory, exist_ok=True)
    previous, _ = read_run_record(directory)
    if previous and config_diff(previous.get("config") or {}, identity["config"]):
        result = osp.join(directory, RESULT_FILE)
        if osp.isfile(result):
            os.replace(result, result + f".{previous.get('config_digest', 'old')}")
    write_json(osp.join(directory, RUN_FILE), identity)


def library_versions():
    import platform
    versions = {"python": platform.python_version()}
    for name in ("torch", "torchvision", "open_clip", "numpy", "clipadapt"):
        module = sys.modules.get(name)
        if module is None:
            try:
                module = __import__(name)
            except ImportError:
                continue
        versions[name] = str(getattr(module, "__version__", "?"))
    return versions


def device_description(cfg):
    import platform

    import torch
    if cfg.USE_CUDA and torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)}"
    return f"cpu: {platform.machine()} {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def write_result(directory, cfg, log_path, wall_time_s, engine=""):
    """Write result.json from the run's final evaluation; returns its content (None if no result)."""
    metrics = final_metrics(log_path) if log_path and osp.isfile(log_path) else {}
    if "accuracy" not in metrics:
        return None
    split = cfg.TEST.SPLIT
    result = {
        "format": RESULT_FORMAT,
        "results": {split: metrics},
        "config_digest": config_digest(cfg),
        "wall_time_s": round(wall_time_s, 2),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": library_versions(),
        "engine": engine,
        "device": device_description(cfg),
        "log": osp.basename(log_path),
    }
    if "acc_seen" in metrics and "acc_unseen" in metrics:
        result["gzsl"] = {"S": metrics["acc_seen"], "U": metrics["acc_unseen"], "H": metrics.get("hm")}
    write_json(osp.join(directory, RESULT_FILE), result)
    return result


def read_result(directory, keywords, split="test"):
    """{keyword: value} from a finished run's result.json; None when there is none; KeyError naming
    what is missing."""
    path = osp.join(directory, RESULT_FILE)
    if not osp.isfile(path):
        return None
    result = read_json(path)
    problem = result_problem(result, split)
    if problem:
        raise KeyError(f"{path} is damaged ({problem}): the run does not count; run its command again to "
                       "redo it")
    metrics = result["results"][split]
    missing = [k for k in keywords if k not in metrics]
    if missing:
        raise KeyError(f"{osp.join(directory, RESULT_FILE)} has no {', '.join(missing)} for split {split!r} "
                       f"(it has {', '.join(sorted(metrics)) or 'no metrics'})")
    return {k: metrics[k] for k in keywords}


# -------------------- planning one run for the shell scripts ------------------------------------

class RunSpec:
    """One run of a protocol: what train.py is called with, and where it writes.

    `layout` picks the folder layout; `model_from` is the RunSpec of the training run that an
    evaluation loads (its folder is the --model-dir)."""

    def __init__(self, protocol, layout, trainer, config_name, dataset, seed, shots, opts=(), split="",
                 source="imagenet", model_from=None, subsample=None, label="", run_config=""):
        self.protocol, self.layout, self.trainer, self.config_name = protocol, layout, trainer, config_name
        self.run_config = run_config or config_name  # the file it trains with; config_name names the folder
        self.dataset, self.seed, self.shots, self.opts = dataset, int(seed), int(shots), list(opts)
        self.split, self.source, self.model_from, self.subsample = split, source, model_from, subsample
        self.label = label or f"{dataset} seed {seed}"
        self._cfg = None

    @property
    def config_file(self):
        return trainer_config_file(self.trainer, self.run_config)

    def path_opts(self):
        """The KEY VALUE pairs the protocol itself sets (shots, class subset)."""
        opts = ["DATASET.NUM_SHOTS", str(self.shots)]
        if self.subsample:
            opts += ["DATASET.SUBSAMPLE_CLASSES", self.subsample]
        return opts

    def all_opts(self):
        return self.path_opts() + self.opts

    def configs(self):
        """(merged config, config of the files alone), built once."""
        if self._cfg is None:
            from .config import ConfigError
            given = dict(zip(self.opts[::2], self.opts[1::2]))
            for key, value in zip(self.path_opts()[::2], self.path_opts()[1::2]):
                if key in given and str(given[key]) != value:
                    raise ConfigError(f"{key} {given[key]} in the options contradicts the protocol's {value} (the "
                                      f"run's folder says {value}): drop it from the options and set SHOTS, "
                                      "SHOTS_LIST or SUB instead.")
            self._cfg = build_run_config(self.trainer, self.config_file, dataset_config_file(self.dataset),
                                         self.all_opts(), {"SEED": self.seed})
        return self._cfg

    @property
    def overrides(self):
        if not self.opts:  # only options can override the files (the protocol's own are path keys)
            return {}
        cfg, base = self.configs()
        return config_overrides(base, cfg)

    def output_dir(self, root):
        return run_dir(root, self.layout, split=self.split, dataset=self.dataset, shots=self.shots,
                       trainer=self.trainer, cfg=config_label(self.config_name, self.overrides), seed=self.seed,
                       source=self.source)

    @property
    def trains(self):
        return self.trainer not in NON_LEARNING_TRAINERS

    def last_epoch(self):
        return self.configs()[0].OPTIM.MAX_EPOCH

    @property
    def fine_tunes_from_source(self):
        """A cross-dataset target run that trains, starting from the source run (SHIP's per-target
        protocol, TRAINER.<node>.XD_PROTOCOL per_target), rather than evaluating the source's model."""
        if self.layout != "xd_target" or not self.trains:
            return False
        trainer_nodes = self.configs()[0].TRAINER.values()
        return any(isinstance(node, dict) and node.get("XD_PROTOCOL") == "per_target" for node in trainer_nodes)

    def train_args(self, data_root, output_root, load_epoch=None):
        """train.py's arguments for this run."""
        args = ["--root", data_root, "--seed", str(self.seed), "--trainer", self.trainer,
                "--dataset-config-file", dataset_config_file(self.dataset), "--config-file", self.config_file,
                "--output-dir", self.output_dir(output_root)]
        if self.model_from is not None and self.fine_tunes_from_source:
            epoch = load_epoch if load_epoch is not None else self.model_from.last_epoch()
            return args + self.all_opts() + ["MODEL.INIT_RUN", self.model_from.output_dir(output_root),
                                             "MODEL.INIT_RUN_EPOCH", str(epoch)]
        if self.model_from is not None and self.trains:
            epoch = load_epoch if load_epoch is not None else self.model_from.last_epoch()
            args += ["--model-dir", self.model_from.output_dir(output_root), "--load-epoch", str(epoch), "--eval-only"]
        elif not self.trains:
            args += ["--eval-only"]
        return args + self.all_opts()

    def status(self, output_root):
        """'finished' or 'todo'; RunMismatch when the folder holds another config's run. The config
        is built only when there is something to compare it with (a fresh folder needs none)."""
        folder = self.output_dir(output_root)
        cfg = self.configs()[0] if osp.isfile(osp.join(folder, RUN_FILE)) else None
        return "finished" if is_finished(folder, cfg) else "todo"


def protocol_run(kind, trainer, config_name, dataset, seed, shots, opts, source="imagenet", sub="new",
                 recipe="published"):
    """The RunSpec of one script of scripts/common/ (kind: base2new_train, base2new_test, few_shot,
    gzsl, xd_train, xd_test). An empty `config_name` is the trainer's default for the kind's protocol."""
    if not config_name:
        if kind not in KIND_PROTOCOL:
            raise ValueError(f"unknown run kind {kind!r}")
        config_name = default_config(trainer, KIND_PROTOCOL[kind])
    def train_base():
        return RunSpec("base2new", "base2new", trainer, config_name, dataset, seed, shots, opts,
                       split="train_base", subsample="base", label=f"{dataset} seed {seed} (train on base)")
    if kind == "base2new_train":
        return train_base()
    if kind == "base2new_test":
        return RunSpec("base2new", "base2new", trainer, config_name, dataset, seed, shots, opts, split=f"test_{sub}",
                       subsample=sub, model_from=train_base(), label=f"{dataset} seed {seed} (test on {sub})")
    if kind == "few_shot":
        return RunSpec("fewshot", "fewshot", trainer, config_name, dataset, seed, shots, opts,
                       label=f"{dataset} {shots} shots seed {seed}",
                       run_config=recipe_config(trainer, config_name, dataset, shots, recipe))
    if kind == "gzsl":
        return RunSpec("gzsl", "gzsl", trainer, config_name, dataset, seed, shots, opts, subsample="gzsl")
    source_run = RunSpec("xd", "xd_source", trainer, config_name, source, seed, shots, opts, source=source,
                         label=f"{source} seed {seed} (source)")
    if kind == "xd_train":
        return source_run
    if kind == "xd_test":
        return RunSpec("xd", "xd_target", trainer, config_name, dataset, seed, shots, opts, source=source,
                       model_from=source_run, label=f"{dataset} seed {seed}")
    raise ValueError(f"unknown run kind {kind!r}")


def _shell_quote(words):
    import shlex
    return " ".join(shlex.quote(str(w)) for w in words)


def main(argv=None):
    """python -m clipadapt.runs plan KIND TRAINER CFG DATASET SEED SHOTS [KEY VALUE ...]

    Prints shell assignments for scripts/common/env.sh: RUN_NOTE (what the user should know, or ''),
    RUN_DIR, RUN_STATE (finished / todo) and RUN_ARGS (train.py's arguments); RECIPE, SOURCE, SUB and
    LOADEP are read from the environment as the scripts document them. A folder of another config's run: a one-line error, exit 3."""
    import argparse
    parser = argparse.ArgumentParser(prog="python -m clipadapt.runs")
    sub = parser.add_subparsers(dest="command", required=True)
    plan = sub.add_parser("plan")
    for name in ("kind", "trainer", "cfg", "dataset", "seed", "shots"):
        plan.add_argument(name)
    plan.add_argument("opts", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    data = os.environ.get("DATA", "./data")
    output = os.environ.get("OUTPUT", "output")
    try:
        spec = protocol_run(args.kind, args.trainer, args.cfg, args.dataset, args.seed, args.shots, args.opts,
                            source=os.environ.get("SOURCE", "imagenet"), sub=os.environ.get("SUB", "new"),
                            recipe=os.environ.get("RECIPE", "published"))
        state = spec.status(output)
        load_epoch = os.environ.get("LOADEP") or None
        train_args = spec.train_args(data, output, load_epoch=load_epoch)
    except RunMismatch as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except Exception as exc:  # noqa: BLE001  ConfigError is not imported up front: it would import torch
        if not (type(exc).__name__ == "ConfigError" or isinstance(exc, (KeyError, ProtocolError))):
            raise
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    note = ""
    if spec.run_config != spec.config_name:
        recipe_name = "the released recipe" if spec.trainer in RELEASED_EPOCH_CONFIGS else "CoOp's few-shot recipe"
        note = (f"{recipe_name} ({spec.trainer}): {spec.dataset} at {spec.shots} shots trains with {spec.config_file} "
                f"(RECIPE=fixed runs {spec.config_name}.yaml)")
    print(f"RUN_NOTE={_shell_quote([note])}")
    print(f"RUN_DIR={_shell_quote([spec.output_dir(output)])}")
    print(f"RUN_STATE={state}")
    print(f"RUN_ARGS=({_shell_quote(train_args)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
