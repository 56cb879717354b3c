"""Building a run's config: Dassl defaults + the trainer's own node, dataset yaml, method yaml, CLI.

Errors name the file or option at fault and, for a mistyped key, the closest valid key.
"""
import ast
import difflib
import os
import re

import yaml
from yacs.config import CfgNode

from .engine import DATASET_REGISTRY, TRAINER_REGISTRY, get_cfg_default
from .engine import unknown_name_message


class ConfigError(ValueError):
    pass


def all_keys(cfg, prefix=""):
    keys = []
    for k, v in cfg.items():
        full = f"{prefix}{k}"
        keys.extend(all_keys(v, full + ".") if isinstance(v, dict) else [full])
    return keys


_TYPE_MISMATCH = re.compile(r"Type mismatch \(<class '(\w+)'> vs\. <class '(\w+)'>\) with values \((.*) vs\. (.*)\) "
                            r"for config key: (\S+)", re.S)


def _explain(exc, cfg, source, trainer=""):
    msg = str(exc).strip("'\"")
    if "Non-existent" in msg:
        bad = msg.split(":")[-1].strip()
        if bad.startswith("TRAINER.") and not (trainer or cfg.TRAINER.NAME):
            names = ", ".join(sorted(TRAINER_REGISTRY.registered_names()))
            return ConfigError(f'{source} sets "{bad}", a trainer\'s key, but no trainer is chosen: pass --trainer '
                               f"NAME (registered: {names}).")
        node = ".".join(bad.split(".")[:2])
        if bad.startswith("TRAINER.") and node not in all_keys(cfg) and not any(
                k.startswith(node + ".") for k in all_keys(cfg)):
            owner = [n for n in sorted(TRAINER_REGISTRY.registered_names())
                     if getattr(TRAINER_REGISTRY.get(n), "CONFIG_NODE", None) == node.split(".")[1]]
            whose = f"{owner[0]}'s" if owner else "another trainer's"
            return ConfigError(f'{source} sets "{bad}", a key of {whose} node {node}, but the trainer is '
                               f"{trainer or cfg.TRAINER.NAME}: use a config of {trainer or cfg.TRAINER.NAME} "
                               f"(configs/trainers/{trainer or cfg.TRAINER.NAME}/), or --trainer "
                               f"{owner[0] if owner else 'the one it is for'}.")
        close = difflib.get_close_matches(bad, all_keys(cfg), n=1, cutoff=0.5)
        hint = f' Did you mean "{close[0]}"?' if close else ""
        return ConfigError(f'Unknown config key "{bad}" in {source}.{hint}')
    match = _TYPE_MISMATCH.search(msg)
    if match:
        want, got, default, value, key = match.groups()
        article = "an" if want[0] in "aeiou" else "a"
        return ConfigError(f"Type mismatch for {key} in {source}: it takes {article} {want} (like {default}), "
                           f"got {value} ({got}).")
    return ConfigError(f"Invalid config in {source}: {msg}")


def _ints_to_floats(cfg, data):
    """A whole number given for a float key (`OPTIM.LR 1`, `WEIGHT_DECAY: 0`) is meant as a float;
    yacs would reject it as a type mismatch."""
    for key, value in data.items():
        if key not in cfg:
            continue
        if isinstance(value, dict) and isinstance(cfg[key], dict):
            _ints_to_floats(cfg[key], value)
        elif isinstance(cfg[key], float) and type(value) is int:
            data[key] = float(value)


def _coerce_opts(cfg, opts):
    """`_ints_to_floats` for KEY VALUE command-line pairs."""
    opts = list(opts)
    for i in range(0, len(opts) - 1, 2):
        node, parts = cfg, str(opts[i]).split(".")
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or not isinstance(node.get(parts[-1]), float):
            continue
        try:
            value = ast.literal_eval(opts[i + 1]) if isinstance(opts[i + 1], str) else opts[i + 1]
        except (ValueError, SyntaxError):
            continue
        if type(value) is int:
            opts[i + 1] = repr(float(value))
    return opts


def check_names(cfg):
    """Fail before any work when the trainer or dataset is not registered (names the closest one)."""
    for kind, name, registry, how in (
            ("trainer", cfg.TRAINER.NAME, TRAINER_REGISTRY, "--trainer NAME"),
            ("dataset", cfg.DATASET.NAME, DATASET_REGISTRY, "--dataset-config-file configs/datasets/<name>.yaml")):
        available = registry.registered_names()
        if not name:
            raise ConfigError(f"No {kind} given: pass {how}. Registered: {', '.join(sorted(available))}")
        if name not in available:
            raise ConfigError(unknown_name_message(kind, name, available))


def merge_yaml(cfg, path, _seen=(), trainer=""):
    """Merge a yaml file; a `_BASE_: other.yaml` entry (relative to the file) is merged first, so
    config variants state only what differs."""
    path = os.path.abspath(path)
    if path in _seen:
        raise ConfigError(f'Config "{path}" includes itself through _BASE_')
    if not os.path.isfile(path):
        raise ConfigError(f'Config file "{path}" does not exist')
    data = read_yaml(path)
    base = data.pop("_BASE_", None)
    if base:
        merge_yaml(cfg, os.path.join(os.path.dirname(path), base), _seen + (path,), trainer)
    _ints_to_floats(cfg, data)
    try:
        cfg.merge_from_other_cfg(CfgNode(data))
    except (KeyError, ValueError, AssertionError) as exc:
        raise _explain(exc, cfg, f'"{path}"', trainer) from None


def read_yaml(path):
    """A config file's mapping of keys. A file that is not one (a YAML syntax error, a list or a bare
    string, a tag that would build a Python object, not text) is one ConfigError line naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.constructor.ConstructorError as exc:  # safe_load never builds tagged objects
        mark = exc.problem_mark
        tag = re.search(r"tag '(?:tag:yaml.org,2002:)?([^']+)'", exc.problem or "")
        raise ConfigError(f'Config file "{path}" line {mark.line + 1} uses the YAML tag '
                          f'!!{tag.group(1) if tag else "?"}: a config holds plain values (numbers, strings, lists) '
                          "and tags that build Python objects are never run. Remove the tag.") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f'Config file "{path}" is not valid YAML{where}: {problem}. Fix the file (see the '
                          "configs under configs/ for the layout).") from None
    except UnicodeDecodeError:
        raise ConfigError(f'Config file "{path}" is not a text file: pass a .yaml config.') from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        kind = {"list": "a list", "str": "a bare string", "int": "a number", "float": "a number", "bool": "a boolean"}
        raise ConfigError(f'Config file "{path}" holds {kind.get(type(data).__name__, type(data).__name__)}, not a '
                          'mapping of keys: write it as "KEY: value" lines, nested by indentation (e.g. "OPTIM:" '
                          'then "  LR: 0.002").')
    return data


def trainer_name_from_file(path):
    if not path or not os.path.isfile(path):
        return ""
    data = read_yaml(path)
    name = ((data.get("TRAINER") or {}).get("NAME")) or ""
    if not name and data.get("_BASE_"):
        return trainer_name_from_file(os.path.join(os.path.dirname(path), data["_BASE_"]))
    return name


def build_config(trainer="", dataset_config_file="", config_file="", opts=(), overrides=None):
    """Dassl defaults -> trainer node -> dataset yaml -> method yaml -> `overrides` (CLI args) -> opts."""
    cfg = get_cfg_default()
    name = trainer or trainer_name_from_file(config_file)
    if name:
        trainer_cls = TRAINER_REGISTRY.get(name)
        if hasattr(trainer_cls, "add_config"):
            trainer_cls.add_config(cfg)
    for path in (dataset_config_file, config_file):
        if path:
            merge_yaml(cfg, path, trainer=name)
    for key, value in (overrides or {}).items():
        node = cfg
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    if name:
        cfg.TRAINER.NAME = name
    if opts:
        if len(opts) % 2:
            raise ConfigError(f"Trailing options must be KEY VALUE pairs; got an odd number: {list(opts)}")
        try:
            cfg.merge_from_list(_coerce_opts(cfg, opts))
        except (KeyError, ValueError, AssertionError) as exc:
            raise _explain(exc, cfg, "the command-line options", name) from None
    return cfg


def _general_choices():
    """The enumerated keys every run has, with their values (imported here, not at module load)."""
    from .data.splits import SUBSAMPLE_MODES
    from .engine.builtin.optim import AVAI_OPTIMS, AVAI_SCHEDS
    from .engine.builtin.transforms import INTERPOLATION_MODES
    return {"DATASET.SUBSAMPLE_CLASSES": SUBSAMPLE_MODES, "TEST.FINAL_MODEL": ("last_step", "best_val"),
            "OPTIM.NAME": AVAI_OPTIMS, "OPTIM.LR_SCHEDULER": AVAI_SCHEDS, "OPTIM.WARMUP_TYPE": ("constant", "linear"),
            "INPUT.INTERPOLATION": tuple(INTERPOLATION_MODES)}


def choice_error(key, value, allowed):
    """The one line for an enumerated key given a value it does not take (with the near miss)."""
    near = [a for a in allowed if str(a).lower() == str(value).lower()] or difflib.get_close_matches(
        str(value), [str(a) for a in allowed], n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return ConfigError(f"{key} is {value!r}: it must be one of {', '.join(map(str, allowed))}{hint}.")


def check_choices(cfg):
    """Every enumerated key, before the run folder is touched: the general ones here, the trainer's own
    (its PREC, its modes) by the trainer class's `check_cfg` (a classmethod, so no trainer is built)."""
    for key, allowed in _general_choices().items():
        value = cfg
        for part in key.split("."):
            value = value[part]
        if value not in allowed:
            raise choice_error(key, value, allowed)
    trainer_cls = TRAINER_REGISTRY.get(cfg.TRAINER.NAME)
    try:
        trainer_cls.check_cfg(cfg)
    except ConfigError:
        raise
    except (ValueError, KeyError) as exc:
        raise ConfigError(exc.args[0] if exc.args else str(exc)) from None


def check_values(cfg, training=True):
    """Refuse values that would run but give a meaningless result, naming the key, before any work:
    no epochs to train (the untrained model's accuracy would be reported as the run's), a negative
    or zero learning rate, a batch size below 1."""
    for key in all_keys(cfg):
        leaf, value = key.split(".")[-1], cfg
        for part in key.split("."):
            value = value[part]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if leaf.endswith("BATCH_SIZE") and value < 1:
            raise ConfigError(f"{key} is {value}: a batch needs at least 1 item. Set {key} to a positive number.")
        if training and key == "OPTIM.MAX_EPOCH" and value < 1:
            raise ConfigError(f"{key} is {value}: the run would train nothing and report the untrained model's "
                              f"accuracy as its result. Set {key} to 1 or more, or pass --eval-only to evaluate "
                              "without training.")
        if key == "DATASET.NUM_SHOTS" and (value == 0 or value < -1):
            raise ConfigError(f"{key} is {value}: give the number of training images per class (1 or more), or -1 "
                              "for all of them.")
        if leaf.endswith("_EPOCHS") and value < 0:
            raise ConfigError(f"{key} is {value}: a number of epochs cannot be negative.")
        if training and (leaf == "LR" or leaf.endswith("_LR")) and (value < 0 or (key == "OPTIM.LR" and value == 0)):
            raise ConfigError(f"{key} is {value}: a learning rate must be positive (a negative one climbs the loss, "
                              f"zero learns nothing). Set {key} to a positive number such as the config's default.")


def available_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def clamp_workers(cfg):
    """DATALOADER.NUM_WORKERS at most the cores this process may use (more only makes torch warn and the
    processes compete); the note to print once, or None. Workers change speed only, never results."""
    cores = available_cores()
    workers = cfg.DATALOADER.NUM_WORKERS
    if workers <= cores:
        return None
    cfg.DATALOADER.NUM_WORKERS = cores
    return (f"Note: DATALOADER.NUM_WORKERS {workers} is more than the {cores} CPU cores this process may use; "
            f"using {cores} (set it to silence this note)")
