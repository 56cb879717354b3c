"""The Slurm launcher against a real one-node cluster (slurmctld + slurmd on localhost, started here).

Skips, saying exactly why, where the daemons cannot start (not installed, not root); in CI, .ci/run
installs slurm-wlm and munge, runs as root and sets CLIPADAPT_REQUIRE_SLURM=1, so there the test
runs, and fails with the reason if the cluster cannot start.
"""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import REPO, TINY_OPTS
from slurm_cluster import ClusterUnavailable, SlurmCluster
from sweep_case import local_table, results, run_sweep, sweep_env, table_lines


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # a short path: munge's socket path must fit in a Unix socket address
    folder = tmp_path_factory.mktemp("slurm")
    try:
        with SlurmCluster(folder, cpus=2) as running:
            yield running
    except ClusterUnavailable as exc:
        if os.environ.get("CLIPADAPT_REQUIRE_SLURM") or os.environ.get("CI"):
            raise  # .ci/run sets it: in CI this test runs
        pytest.skip(f"no Slurm cluster here: {exc}")


def test_slurm_launcher_gives_the_local_table(cluster, shapes_root, tmp_path, tmp_path_factory):
    expected = local_table(tmp_path_factory, shapes_root)
    output = tmp_path / "output"
    launcher = ["--launcher", "slurm", "--cpus", "1", "--time", "10", "--poll", "1"]
    env = sweep_env(tmp_path / "cache", SLURM_CONF=cluster.conf)

    # --no-wait: submit both stages and return at once; the same command later reports and tables
    first = run_sweep(shapes_root, output, None, [*launcher, "--no-wait"], env=env)
    assert "submitted 2 train job(s) as Slurm array" in first.stdout
    assert "submitted 2 test job(s) as Slurm array" in first.stdout and "(after " in first.stdout
    assert not table_lines(first.stdout)
    state = json.loads(next((output / ".sweeps").glob("*/state.json")).read_text())
    assert len(state["jobs"]) == 4 and all(entry["tries"] == 1 for entry in state["jobs"].values())

    second = run_sweep(shapes_root, output, None, launcher, env=env)
    assert "submitted" not in second.stdout  # it found its jobs, and waited for them
    assert "[sweep] done 4 / running 0 / failed 0 / left 0" in second.stdout
    assert table_lines(second.stdout) == expected
    for folder in results(output):
        job_logs = list(Path(folder).glob("slurm-*_*.out"))
        assert len(job_logs) == 1 and "Evaluate on the *test* set" in job_logs[0].read_text()
        assert job_logs[0].read_text().count("Loading trainer: CoOp") == 1


def test_a_failed_slurm_job_is_resubmitted_once_and_resumes(cluster, shapes_root, tmp_path):
    """A training job that dies (here: cancelled) after a checkpoint is submitted again and resumes."""
    output = tmp_path / "output"
    command = ["fewshot", "CoOp", "vit_b16", "--datasets", "shapes", "--seeds", "1", "--shots-list", "2",
               "--data", shapes_root, "--output", str(output), "--launcher", "slurm", "--cpus", "1", "--time", "10",
               "--poll", "1"]
    opts = ["--", *TINY_OPTS, "OPTIM.MAX_EPOCH", "60", "TRAIN.CHECKPOINT_FREQ", "1"]
    env = sweep_env(tmp_path / "cache", SLURM_CONF=cluster.conf)
    sweep = [sys.executable, "-m", "clipadapt.sweep"]
    first = subprocess.run([*sweep, *command, "--no-wait", *opts], cwd=REPO, capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    [state_file] = (output / ".sweeps").glob("*/state.json")
    [(folder, entry)] = json.loads(state_file.read_text())["jobs"].items()
    deadline = time.time() + 240
    while not list(Path(folder).glob("prompt_learner/model.pth.tar-*")) and time.time() < deadline:
        time.sleep(0.2)
    subprocess.run(["scancel", entry["id"]], env=env, check=True)
    while entry["id"] in slurm_queue_ids(env) and time.time() < deadline:
        time.sleep(0.2)
    assert not (Path(folder) / "result.json").exists(), "the job finished before it could be cancelled"

    second = subprocess.run([*sweep, *command, *opts], cwd=REPO, capture_output=True, text=True, env=env)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert "submitted 1 train job(s)" in second.stdout and "done 1 / running 0 / failed 0 / left 0" in second.stdout
    assert json.loads(state_file.read_text())["jobs"][folder]["tries"] == 2
    log = (Path(folder) / "log.txt").read_text()
    resumed = re.search(r"Loaded model weights from .* \(epoch = (\d+)\)", log)
    assert "Found checkpoint at" in log and resumed and 1 <= int(resumed.group(1)) < 60
    # every epoch trained once over both attempts: the second began where the first's checkpoint ended
    assert log.count("epoch [1/60] batch [1/") == 1 and log.count("epoch [60/60] batch [1/") == 1
    assert (Path(folder) / "result.json").is_file()
    assert len(list(Path(folder).glob("slurm-*.out"))) == 2  # each attempt's output beside the run


def slurm_queue_ids(env):
    proc = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, env=env)
    return proc.stdout.split()
