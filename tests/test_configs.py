"""Every shipped trainer config merges cleanly: no unknown key, no wrong type, a known backbone."""
import ast
import contextlib
import glob
import os

import pytest

from helpers import REPO

CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "trainers", "*", "*.yaml")))


def yaml_chain_values(path):
    """{KEY.PATH: value} that a config file (after its _BASE_ files) states, later files winning."""
    import yaml
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    values = yaml_chain_values(os.path.join(os.path.dirname(path), data.pop("_BASE_"))) if "_BASE_" in data else {}

    def flatten(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, dict):
                flatten(value, f"{prefix}{key}.")
            else:
                values[prefix + key] = value
    flatten(data)
    return values


def config_value(cfg, dotted):
    for part in dotted.split("."):
        cfg = cfg[part]
    return cfg


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, os.path.join(REPO, "configs", "trainers")))
def test_trainer_config_merges_over_its_trainer_defaults(path):
    """Every value the file (and its _BASE_ chain) states is the value the run gets, in the type of
    the trainer's default (a list becomes a tuple, a whole number a float where the key is one, a string
    that is a Python literal that literal, as yacs reads it)."""
    import datasets  # noqa: F401  (registers the datasets)
    import trainers  # noqa: F401  (registers the trainers and their config nodes)
    from clipadapt.config import build_config

    trainer = os.path.basename(os.path.dirname(path))
    cfg = build_config(trainer, os.path.join(REPO, "configs", "datasets", "shapes.yaml"), path)
    stated = yaml_chain_values(path)
    assert stated, f"{path} states nothing"
    for key, value in stated.items():
        got = config_value(cfg, key)
        if isinstance(value, str):  # yacs reads a string that is a Python literal as that literal
            with contextlib.suppress(ValueError, SyntaxError):
                value = ast.literal_eval(value)
        if isinstance(got, tuple):
            value = tuple(value) if isinstance(value, list) else value
        assert got == value and (type(got) is type(value) or isinstance(got, float)), (key, got, value)


def test_every_trainer_has_configs():
    assert {os.path.basename(os.path.dirname(p)) for p in CONFIGS} >= {
        "ZeroshotCLIP", "CoOp", "CoCoOp", "KgCoOp", "MaPLe", "IVLP", "PromptSRC", "CLIPAdapter", "SHIP", "PVA"}


def test_cfg_query_without_the_repository_trainers_says_how_to_run_it(tmp_path):
    """setup.py installs clipadapt but not trainers: a clipadapt with no trainers beside it and none on
    the path stops with one line saying where to run the query from."""
    import subprocess
    import sys
    (tmp_path / "site").mkdir()
    os.symlink(os.path.join(REPO, "clipadapt"), tmp_path / "site" / "clipadapt")
    code = ("import sys; sys.path[:] = [p for p in sys.path if p and os.path.abspath(p) != REPO]; "
            "sys.path.insert(0, SITE); from clipadapt.cfg_query import main; "
            "main(['--trainer', 'CoOp', 'OPTIM.MAX_EPOCH'])")
    code = f"import os; REPO, SITE = {REPO!r}, {str(tmp_path / 'site')!r}; " + code
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "clipadapt.cfg_query needs the repository's trainers package (not installed by setup.py): "
        "run it from the repository root or put the repository on PYTHONPATH")
    ok = subprocess.run([sys.executable, "-m", "clipadapt.cfg_query", "--trainer", "CoOp", "--config-file",
                         "configs/trainers/CoOp/rn50.yaml", "OPTIM.MAX_EPOCH"], cwd=REPO, env=env,
                        capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.strip() == "200", ok.stderr


def test_more_loader_workers_than_cores_are_clamped_with_one_note(monkeypatch):
    import datasets  # noqa: F401
    import trainers  # noqa: F401
    from clipadapt import config
    cfg = config.build_config("CoOp", os.path.join(REPO, "configs", "datasets", "shapes.yaml"),
                              os.path.join(REPO, "configs", "trainers", "CoOp", "vit_b16.yaml"))
    assert cfg.DATALOADER.NUM_WORKERS == 8
    monkeypatch.setattr(config, "available_cores", lambda: 2)
    note = config.clamp_workers(cfg)
    assert cfg.DATALOADER.NUM_WORKERS == 2 and note == (
        "Note: DATALOADER.NUM_WORKERS 8 is more than the 2 CPU cores this process may use; using 2 (set it to "
        "silence this note)")
    assert config.clamp_workers(cfg) is None and cfg.DATALOADER.NUM_WORKERS == 2
    monkeypatch.setattr(config, "available_cores", lambda: 16)
    cfg.DATALOADER.NUM_WORKERS = 4
    assert config.clamp_workers(cfg) is None and cfg.DATALOADER.NUM_WORKERS == 4
