"""clipadapt.sweep: the local and parallel launchers give the same table; a parallel sweep killed midway
finishes when run again, without retraining or re-extracting; the feature-cache lock between processes."""
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from helpers import REPO
from sweep_case import OPTS as SWEEP_OPTS
from sweep_case import extractions, local_table, results, run_sweep, sweep_command, sweep_env, table_lines

from clipadapt.features import FeatureCache
from clipadapt.locks import file_lock


def test_local_launcher_runs_training_before_its_evaluation(shapes_root, tmp_path_factory):
    table = local_table(tmp_path_factory, shapes_root)
    assert table[0].split("|")[1:5] == [" Dataset   ", " CoOp Base   ", " CoOp New   ", " CoOp HM   "]
    output = tmp_path_factory.getbasetemp() / "sweep_local" / "output"
    assert len(results(output)) == 4  # 2 seeds x (train on base, test on new)
    again = run_sweep(shapes_root, output, tmp_path_factory.getbasetemp() / "sweep_local" / "cache")
    assert again.stdout.count("(so skip this job)") == 4 and table_lines(again.stdout) == table


def test_parallel_launcher_gives_the_local_table(shapes_root, tmp_path, tmp_path_factory):
    expected = local_table(tmp_path_factory, shapes_root)
    proc = run_sweep(shapes_root, tmp_path / "output", tmp_path / "cache", ["--launcher", "parallel", "--jobs", "2"])
    assert "parallel launcher: 2 at a time (process 1, process 2)" in proc.stdout
    assert table_lines(proc.stdout) == expected
    for folder in results(tmp_path / "output"):
        assert (Path(folder) / "launcher.out").is_file()


def test_parallel_runs_of_one_seed_extract_their_shared_features_once(shapes_root, tmp_path):
    # 1 and 2 shots of seed 1 start together and both need the test split's features (same images,
    # same backbone): one process extracts them while the other waits for the lock, then loads them.
    command = [sys.executable, "-m", "clipadapt.sweep", "fewshot", "CoOp", "vit_b16", "--datasets", "shapes",
               "--seeds", "1", "--shots-list", "1", "2", "--data", shapes_root, "--output", str(tmp_path / "out"),
               "--launcher", "parallel", "--jobs", "2", "--", *SWEEP_OPTS]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=sweep_env(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    counts = Counter(extractions(tmp_path / "out"))
    files = sorted(str(p) for p in (tmp_path / "cache").rglob("*.pt"))
    # each run: one train view per epoch (2) of its own shots; the test split once for both
    assert len(files) == 2 * 2 + 1 and sorted(counts) == files and set(counts.values()) == {1}, counts


def test_a_killed_parallel_sweep_finishes_when_run_again(shapes_root, tmp_path, tmp_path_factory):
    expected = local_table(tmp_path_factory, shapes_root)
    output, cache = tmp_path / "output", tmp_path / "cache"
    sweep = subprocess.Popen(sweep_command(shapes_root, output, ["--launcher", "parallel", "--jobs", "2"]), cwd=REPO,
                             env=sweep_env(cache), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    deadline = time.time() + 300
    while not results(output) and sweep.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    os.killpg(sweep.pid, signal.SIGKILL)  # the launcher and every run it started, mid-flight
    sweep.wait()
    finished_before = results(output)
    assert 1 <= len(finished_before) < 4, "the sweep was not killed midway"
    features_before = {p: p.stat().st_mtime_ns for p in cache.rglob("*.pt")}
    extracted_before = Counter(extractions(output))

    proc = run_sweep(shapes_root, output, cache, ["--launcher", "parallel", "--jobs", "2"])
    assert table_lines(proc.stdout) == expected
    after = results(output)
    assert len(after) == 4
    for folder, text in finished_before.items():  # finished runs were skipped, not retrained
        assert after[folder] == text and f"The results exist at {folder} (so skip this job)" in proc.stdout
    for path, mtime in features_before.items():  # cached features were reused, not written again
        assert path.stat().st_mtime_ns == mtime
    extracted_again = Counter(extractions(output)) - extracted_before
    assert not set(extracted_again) & {str(p) for p in features_before}


RACER = """
import sys, time, torch
from clipadapt.features import FeatureCache
cache_dir, marker = sys.argv[1], sys.argv[2]
def compute():
    with open(marker, "a") as f:
        f.write("computed\\n")
    time.sleep(1.0)  # long enough for the other process to arrive and wait
    return torch.arange(6.0).reshape(2, 3)
print(FeatureCache(cache_dir).get_or_compute("ab" + "0" * 30, compute).sum().item())
"""


def test_two_processes_racing_for_one_feature_file_extract_it_once(tmp_path):
    marker = tmp_path / "computed.txt"
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path / "cache"), str(marker)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [r.communicate(timeout=120) for r in racers]
    assert [r.returncode for r in racers] == [0, 0], outputs
    assert [o[0].split()[-1] for o in outputs] == ["15.0", "15.0"]
    assert marker.read_text() == "computed\n"
    assert not list((tmp_path / "cache").rglob("*.lock"))


def test_a_stale_lock_of_a_dead_process_is_broken(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / "x.pt.lock"
    import socket
    lock.write_text(f"{socket.gethostname()} {dead.pid} token\n")
    started = time.time()
    with file_lock(str(lock)):
        assert lock.read_text().split()[1] == str(os.getpid())
    assert time.time() - started < 5 and not lock.exists()


def test_a_lock_of_another_host_is_broken_only_when_its_heartbeat_stops(tmp_path):
    lock = tmp_path / "y.pt.lock"
    lock.write_text("some-other-node 1 token\n")
    taken = []

    import threading

    def take():
        with file_lock(str(lock), poll=0.05, stale_after=1.0):
            taken.append(time.time())

    waiter = threading.Thread(target=take)
    started = time.time()
    waiter.start()
    for _ in range(10):  # the holder's heartbeat: the lock is kept while the file is touched
        time.sleep(0.2)
        os.utime(lock)
    assert not taken
    waiter.join(timeout=10)
    assert taken and taken[0] - started >= 2.0 + 1.0 - 0.2


def test_feature_cache_recomputes_nothing_it_has(tmp_path):
    cache = FeatureCache(str(tmp_path))
    import torch
    first = cache.get_or_compute("cd" + "1" * 30, lambda: torch.ones(2))
    second = cache.get_or_compute("cd" + "1" * 30, lambda: pytest.fail("recomputed a cached tensor"))
    assert torch.equal(first, second)
