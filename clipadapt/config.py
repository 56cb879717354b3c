"""Building a run's config: Dassl defaults + the trainer's own node, dataset yaml, method yaml, CLI.

Errors name the file or option at fault and, for a mistyped key, the closest valid key.
"""
import difflib
import os

import yaml
from yacs.config import CfgNode

from .engine import TRAINER_REGISTRY, get_cfg_default


class ConfigError(ValueError):
    pass


def all_keys(cfg, prefix=""):
    keys = []
    for k, v in cfg.items():
        full = f"{prefix}{k}"
        keys.extend(all_keys(v, full + ".") if isinstance(v, dict) else [full])
    return keys


def _explain(exc, cfg, source):
    msg = str(exc).strip("'\"")
    if "Non-existent" in msg:
        bad = msg.split(":")[-1].strip()
        close = difflib.get_close_matches(bad, all_keys(cfg), n=1, cutoff=0.5)
        hint = f' Did you mean "{close[0]}"?' if close else ""
        return ConfigError(f'Unknown config key "{bad}" in {source}.{hint}')
    return ConfigError(f"Invalid config in {source}: {msg}")


def merge_yaml(cfg, path, _seen=()):
    """Merge a yaml file; a `_BASE_: other.yaml` entry (relative to the file) is merged first, so
    config variants state only what differs."""
    path = os.path.abspath(path)
    if path in _seen:
        raise ConfigError(f'Config "{path}" includes itself through _BASE_')
    if not os.path.isfile(path):
        raise ConfigError(f'Config file "{path}" does not exist')
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    base = data.pop("_BASE_", None)
    if base:
        merge_yaml(cfg, os.path.join(os.path.dirname(path), base), _seen + (path,))
    try:
        cfg.merge_from_other_cfg(CfgNode(data))
    except (KeyError, ValueError, AssertionError) as exc:
        raise _explain(exc, cfg, f'"{path}"') from None


def trainer_name_from_file(path):
    if not path or not os.path.isfile(path):
        return ""
    with open(path) as f:
        data = yaml.safe_load(f) or {}
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
            merge_yaml(cfg, path)
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
            cfg.merge_from_list(list(opts))
        except (KeyError, ValueError, AssertionError) as exc:
            raise _explain(exc, cfg, "the command-line options") from None
    return cfg
