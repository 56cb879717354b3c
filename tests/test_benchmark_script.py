"""benchmarks/speed.py runs (CPU smoke run at --quick sizes) and writes strict JSON; no timing is asserted."""
import json
import subprocess
import sys

from conftest import REPO


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
