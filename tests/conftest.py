"""Shared fixtures: a small copy of the built-in Shapes world and run helpers for end-to-end tests."""
import os
import os.path as osp
import subprocess
import sys

# One thread per process: the tiny test models gain nothing from more, and a busy 2-core machine
# slows down badly with several OpenMP threads per process. Set before torch is imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SHARED_DATA = osp.join(osp.dirname(REPO), "shared", "data")
if REPO not in sys.path:
    sys.path.insert(0, REPO)

# Options that make any trainer config run on the tiny random test model in seconds.
TINY_OPTS = ["MODEL.BACKBONE.NAME", "tiny-vit", "MODEL.BACKBONE.PRETRAINED", "False", "INPUT.SIZE", "(32,32)",
             "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TEST.BATCH_SIZE", "64"]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets caches under a session tmp dir, never the user's ~/.cache."""
    monkeypatch.setenv("CLIPADAPT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def one_torch_thread():
    """torch on one thread during the test, restored after it."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory):
    """A small Shapes world (48 classes: 8 train / 2 val / 4 test images each)."""
    from clipadapt.world import generate
    root = tmp_path_factory.mktemp("data")
    generate(str(root), seed=0, n_train=8, n_val=2, n_test=4, progress=False)
    return str(root)


def run_train(args, cwd=REPO, check=True, env=None):
    """Run train.py as a user would; returns the CompletedProcess (stdout + stderr captured)."""
    full_env = dict(os.environ, **(env or {}))
    proc = subprocess.run([sys.executable, "train.py", *args], cwd=cwd, capture_output=True, text=True, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def make_cfg(trainer, config_file, root, output_dir, opts=()):
    """A frozen config for building a trainer in-process."""
    import datasets  # noqa: F401
    import trainers  # noqa: F401
    from clipadapt.config import build_config
    cfg = build_config(trainer, osp.join(REPO, "configs/datasets/shapes.yaml"), osp.join(REPO, config_file),
                       list(TINY_OPTS) + list(opts), {"DATASET.ROOT": root, "OUTPUT_DIR": str(output_dir), "SEED": 1})
    cfg.freeze()
    return cfg


def build_dataset(root, name, shots=-1, subsample="all", seed=1):
    """The registered dataset `name` under `root`, built from the few config keys datasets read."""
    from yacs.config import CfgNode

    from clipadapt.engine import DATASET_REGISTRY
    cfg = CfgNode()
    cfg.DATASET = CfgNode()
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NAME = name
    cfg.DATASET.NUM_SHOTS = shots
    cfg.DATASET.SUBSAMPLE_CLASSES = subsample
    cfg.SEED = seed
    return DATASET_REGISTRY.get(name)(cfg)
