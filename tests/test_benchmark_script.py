"""benchmarks/speed.py runs (CPU smoke run at --quick sizes) and writes strict JSON; no timing is asserted."""
import json
import subprocess
import sys

from helpers import REPO


def test_speed_benchmark_quick_cpu_run_writes_table_and_strict_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "benchmarks/speed.py", "--quick", "--device", "cpu",
                           "--sections", "encoder", "coop_step", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(out.read_text(), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert report["device"] == "cpu" and report["quick"] is True
    step = report["coop_step"]
    assert step["ref_ms"] > 0 and step["ours_ms"] > 0
    assert step["speedup"] == step["ref_ms"] / step["ours_ms"]
    assert step["ref_peak_gib"] is None  # no peak memory on a CPU: null, not NaN
    assert "| CoOp step" in proc.stdout and "| image encoder" in proc.stdout


def test_cocoop_and_maple_step_sections_run_and_print_their_rows(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "benchmarks/speed.py", "--quick", "--device", "cpu", "--iters", "1",
                           "--sections", "cocoop_step", "maple_step", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(out.read_text())
    for section in ("cocoop_step", "maple_step"):
        row = report[section]["per_classes"]["20"]
        assert row["speedup"] == row["ref_ms"] / row["ours_ms"] and row["ref_peak_gib"] is None
    assert report["cocoop_step"]["per_classes"]["20"]["eval"]["ours_ms"] > 0
    for label in ("| CoCoOp step, 20 classes, batch 1", "| CoCoOp evaluation, 100 images x 20 classes",
                  "| MaPLe step, 20 classes, batch 4"):
        assert label in proc.stdout


def test_precision_check_runs_each_trainer_per_precision_and_cpu_fp16_falls_back(tmp_path):
    """benchmarks/precisions.sh on a CPU: one finished run per precision, one row each; fp16 falls
    back to fp32 there, so its row equals fp32's (the config's own PREC, hence the plain name)."""
    import os
    env = dict(os.environ, DATA=str(tmp_path / "data"), OUTPUT=str(tmp_path / "out"), TRAINERS="CoOp",
               PRECS="fp32 fp16", OPTS="OPTIM.MAX_EPOCH 3")
    proc = subprocess.run(["bash", "benchmarks/precisions.sh"], cwd=REPO, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "device: cpu" in proc.stdout and "FAILED" not in proc.stdout
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:] for line in proc.stdout.splitlines()
            if line.startswith("| CoOp/")}
    assert set(rows) == {"CoOp/shapes_maxepoch3", "CoOp/shapes_maxepoch3_precfp16"}  # OPTS reach every run
    assert rows["CoOp/shapes_maxepoch3"] == rows["CoOp/shapes_maxepoch3_precfp16"]
    assert (tmp_path / "out" / "logs" / "CoOp_fp16.log").is_file()
