"""Shared fixtures: a small copy of the built-in Shapes world, train.py in-process, OpenAI's CLIP code.
Plain helpers are in tests/helpers.py."""
import os
import sys

# One thread per process: the tiny test models gain nothing from more, and a busy 2-core machine
# slows down badly with several OpenMP threads per process. Set before torch is imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

from helpers import load_openai_module  # noqa: E402  (puts the repository on sys.path)


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


@pytest.fixture
def train_main(monkeypatch):
    """train.py's main() in this process (no interpreter start-up); SystemExit carries its error."""
    import train
    monkeypatch.setattr(train, "collect_env_info", lambda: "(not collected in tests)")

    def run(args):
        console = sys.stdout
        try:
            train.main(train.parse_args([str(a) for a in args]))
        finally:
            if sys.stdout is not console:  # setup_logger teed stdout into the run's log.txt
                sys.stdout.close()
                sys.stdout = console
    return run


@pytest.fixture(scope="module")
def openai_model_py():
    """OpenAI's clip/model.py (the `openai-clip` package); the test skips without it."""
    return load_openai_module("model.py", "openai_clip_model")
