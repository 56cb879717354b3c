"""The small sweep the launcher tests share: base-to-new CoOp on the small Shapes world with the tiny
CLIP, seeds 1 and 2 (two training runs, two evaluations that depend on them)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from helpers import REPO, TINY_OPTS

SWEEP = ["base2new", "CoOp", "vit_b16_ctxv1", "--datasets", "shapes", "--seeds", "1", "2", "--shots", "2"]
OPTS = [*TINY_OPTS, "OPTIM.MAX_EPOCH", "2", "DATALOADER.TRAIN_X.BATCH_SIZE", "32"]
COMPUTING = re.compile(r"^Computing image features for the cache: (\S+)$", re.M)


def sweep_command(data, output, launcher_args=()):
    return [sys.executable, "-m", "clipadapt.sweep", *SWEEP, "--data", str(data), "--output", str(output),
            *launcher_args, "--", *OPTS]


def sweep_env(cache, **extra):
    """Each sweep gets its own feature cache, so its extractions can be counted."""
    return dict(os.environ, CLIPADAPT_CACHE=str(cache), **extra)


def run_sweep(data, output, cache, launcher_args=(), env=None, timeout=600):
    proc = subprocess.run(sweep_command(data, output, launcher_args), cwd=REPO, capture_output=True, text=True,
                          env=env or sweep_env(cache), timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def table_lines(stdout):
    return [line for line in stdout.splitlines() if line.startswith("|")]


def local_table(tmp_path_factory, data):
    """The table the local launcher prints for the sweep, computed once per test session."""
    base = tmp_path_factory.getbasetemp()
    saved = base / "sweep_local_table.json"
    if not saved.exists():
        proc = run_sweep(data, base / "sweep_local" / "output", base / "sweep_local" / "cache")
        saved.write_text(json.dumps(table_lines(proc.stdout)))
    return json.loads(saved.read_text())


def extractions(output):
    """Cache files whose extraction started, once per start, over every log of the sweep."""
    found = []
    for log in Path(output).rglob("log.txt*"):
        found += COMPUTING.findall(log.read_text(errors="replace"))
    return found


def results(output):
    """{run folder: result.json text} of the sweep's finished runs."""
    return {str(p.parent): p.read_text() for p in Path(output).rglob("result.json")}
