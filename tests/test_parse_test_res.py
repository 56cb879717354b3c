"""parse_test_res.py on fake Dassl output trees; expectations are computed here, independently."""
import csv
import io
import json
import math
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from clipadapt import dassl_log  # noqa: E402
from clipadapt import results as ptr  # noqa: E402

HEADER = """\
Setting fixed seed: {seed}
***************
** Arguments **
***************
backbone: 
config_file: configs/trainers/CoOp/vit_b16_ep50.yaml
dataset_config_file: configs/datasets/eurosat.yaml
eval_only: False
opts: ['DATASET.NUM_SHOTS', '16', 'DATASET.SUBSAMPLE_CLASSES', 'base']
output_dir: output/base2new/train_base/eurosat/shots_16/CoOp/vit_b16_ep50/seed{seed}
seed: {seed}
trainer: CoOp
************
** Config **
************
TEST:
  EVALUATOR: Classification
  FINAL_MODEL: last_step
  PER_CLASS_RESULT: False
Collecting env info ...
** System info **
PyTorch version: 2.4.0
Is debug build: False
Loading trainer: CoOp
Loading dataset: EuroSAT
Reading split from /data/eurosat/split_zhou_EuroSAT.json
Building transform_train
---------  -------
Dataset    EuroSAT
# classes  5
# train_x  80
---------  -------
Loading CLIP (backbone: ViT-B/16)
Building custom CLIP
"""

RESULT_BLOCK = """\
=> result
* total: 1,881
* correct: 1,745
* accuracy: {acc}%
* error: {err}%
* macro_f1: 92.7%
{extra}Elapsed: 0:04:48
"""


def result_block(acc, extra=""):
    return RESULT_BLOCK.format(acc=acc, err=round(100 - acc, 1), extra=extra)


def train_log(acc, seed=1, extra=""):
    """A training log: a mid-training evaluation (to be ignored), then the final test."""
    lines = [HEADER.format(seed=seed), "Initialize tensorboard (log_dir=out/tensorboard)",
             "No checkpoint found, train from scratch"]
    lines += [f"epoch [{e}/50] batch [5/5] time 0.1 (0.1) data 0.0 (0.0) loss 0.5 (0.5) acc 90.0 (90.0) "
              f"lr 1.0e-05 eta 0:00:00" for e in (1, 49, 50)]
    lines += ["Evaluate on the *val* set", result_block(11.1).rstrip()]  # before Finish training
    lines += ["Checkpoint saved to out/prompt_learner/model.pth.tar-50", "Finish training",
              "Deploy the last-epoch model", "Evaluate on the *test* set",
              "100%|##########| 19/19 [00:03<00:00,  5.6it/s]", result_block(acc, extra)]
    return "\n".join(lines)


def eval_log(acc, seed=1, extra=""):
    return "\n".join([HEADER.format(seed=seed), "Loading weights to prompt_learner from "
                      '"out/prompt_learner/model.pth.tar-50" (epoch = 50)', "Evaluate on the *test* set",
                      result_block(acc, extra)])


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def run_cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "parse_test_res.py", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def hm(a, b):
    return 2 * a * b / (a + b)


# ------------------------------------------------------------------ CoOp-compatible mode

def make_seed_dir(root, accs, log=train_log):
    for seed, acc in enumerate(accs, start=1):
        write(root / f"seed{seed}" / "log.txt", log(acc, seed))
    return root


def test_directory_mean_and_population_std(tmp_path, capsys):
    accs = [91.8, 92.3, 92.0]
    d = make_seed_dir(tmp_path / "CoOp", accs)
    write(d / "seed2" / "log.txt-2023-01-01-10-00-00", train_log(10.0))  # re-run log: ignored
    write(d / ".hidden" / "log.txt", "garbage")  # hidden: skipped
    summary = ptr.parse_directory(str(d))
    out = capsys.readouterr().out.splitlines()
    assert summary.values == accs
    assert out[0] == f"file: {d / 'seed1' / 'log.txt'}. accuracy: 91.80%. "
    mean, std = statistics.mean(accs), statistics.pstdev(accs)
    assert out[3:] == ["===", f"Summary of directory: {d}", f"* accuracy: {mean:.2f}% +- {std:.2f}%", "==="]
    assert summary.mean == pytest.approx(mean) and summary.spread == pytest.approx(std)


def test_ci95_and_last_match_wins(tmp_path):
    d = make_seed_dir(tmp_path / "run", [80.0, 90.0])
    # a second final result block after the first: the last one wins
    write(d / "seed1" / "log.txt", train_log(70.0) + "\n" + result_block(85.0))
    summary = ptr.parse_directory(str(d), ci95=True, out=io.StringIO())
    assert summary.values == [85.0, 90.0]
    assert summary.spread == pytest.approx(1.96 * statistics.pstdev([85.0, 90.0]) / math.sqrt(2))


def test_multi_exp_prints_each_summary_and_mean_of_means(tmp_path):
    make_seed_dir(tmp_path / "exps" / "nctx4", [70.0, 72.0])
    make_seed_dir(tmp_path / "exps" / "nctx16", [80.0, 81.0, 85.0])
    out = io.StringIO()
    avg = ptr.parse_multi_exp(str(tmp_path / "exps"), out=out)
    assert avg == pytest.approx((71.0 + 82.0) / 2)
    text = out.getvalue()
    assert text.count("Summary of directory") == 2
    assert text.endswith("Average performance\n* accuracy: 76.50%\n")


def test_eval_only_log_is_detected_without_test_log(tmp_path, capsys):
    d = make_seed_dir(tmp_path / "eval", [60.5, 61.5], log=eval_log)
    summary = ptr.parse_directory(str(d))
    assert summary.mean == pytest.approx(61.0)
    assert "=> result" in capsys.readouterr().err
    # strict Finish-training parsing names the file and suggests --test-log
    with pytest.raises(ptr.ResultError, match=r"seed1.*Finish training.*--test-log"):
        dassl_log.parse_log(d / "seed1" / "log.txt", end_signal=dassl_log.FINISH_TRAINING)


def test_test_log_reads_the_last_result_after_marker(tmp_path):
    # with --test-log even a training log's mid-training evaluation counts; the last one wins
    d = make_seed_dir(tmp_path / "r", [66.6])
    assert ptr.parse_directory(str(d), test_log=True, out=io.StringIO()).values == [66.6]


def test_pva_diagnostic_keywords(tmp_path):
    extra = "* routed_base: 48.5%\n* routing_acc: 91.25%\n* auroc: 95.0%\n"
    d = tmp_path / "pva"
    write(d / "seed1" / "log.txt", eval_log(80.0, extra=extra))
    assert ptr.parse_directory(str(d), keyword="routing_acc", out=io.StringIO()).values == [91.25]
    assert dassl_log.parse_log(d / "seed1" / "log.txt", ["auroc", "routed_base"])[0] == {"auroc": 95.0, "routed_base": 48.5}


def test_missing_log_is_a_clear_error(tmp_path):
    d = make_seed_dir(tmp_path / "CoOp", [90.0])
    write(d / "seed2" / "log.txt-2024-05-01-12-00-00", train_log(91.0))
    with pytest.raises(ptr.ResultError, match=r"no log.txt in .*seed2.*re-run"):
        ptr.parse_directory(str(d), out=io.StringIO())
    result = run_cli(d)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"no log.txt in {d / 'seed2'}" in result.stderr
    (d / "seed1" / "prompt_learner").mkdir()  # a seed directory given instead of its parent
    with pytest.raises(ptr.ResultError, match=r"seed1 is itself a run: pass its parent"):
        ptr.parse_directory(str(d / "seed1"), out=io.StringIO())


def test_crashed_run_error_names_file_and_signal(tmp_path):
    d = tmp_path / "crashed"
    write(d / "seed1" / "log.txt", train_log(90.0).split("Finish training")[0])
    with pytest.raises(ptr.ResultError, match=r"seed1/log.txt.*'Finish training', which never appears"):
        ptr.parse_directory(str(d), out=io.StringIO())
    with pytest.raises(ptr.ResultError, match=r"metrics after it: accuracy, correct, error, macro_f1, total"):
        dassl_log.parse_log(make_seed_dir(tmp_path / "ok", [90.0]) / "seed1" / "log.txt", ["auroc"])


def test_cli_coop_mode_output(tmp_path):
    d = make_seed_dir(tmp_path / "CoOp", [50.0, 60.0])
    result = run_cli(d, "--ci95")
    assert result.returncode == 0, result.stderr
    ci = 1.96 * 5.0 / math.sqrt(2)
    assert f"* accuracy: 55.00% +- {ci:.2f}%" in result.stdout


# ------------------------------------------------------------------ protocol tables

def b2n_dir(root, split, dataset, trainer, seed, cfg="vit_b16_ep50", shots=16):
    return root / "base2new" / split / dataset / f"shots_{shots}" / trainer / cfg / f"seed{seed}" / "log.txt"


def make_base2new_tree(root):
    # eurosat: base 90/92, new 50/54 -> B 91, N 52; dtd: base 60, new 80/82 (seed 2 has no base run)
    write(b2n_dir(root, "train_base", "eurosat", "CoOp", 1), train_log(90.0))
    write(b2n_dir(root, "train_base", "eurosat", "CoOp", 2), train_log(99.0))
    write(b2n_dir(root, "test_base", "eurosat", "CoOp", 2), eval_log(92.0))  # base eval overrides training
    write(b2n_dir(root, "test_new", "eurosat", "CoOp", 1), eval_log(50.0))
    write(b2n_dir(root, "test_new", "eurosat", "CoOp", 2), eval_log(54.0))
    write(b2n_dir(root, "train_base", "dtd", "CoOp", 1), train_log(60.0))
    write(b2n_dir(root, "test_new", "dtd", "CoOp", 1), eval_log(80.0))
    write(b2n_dir(root, "test_new", "dtd", "CoOp", 2), eval_log(82.0))
    # a second trainer with only eurosat base, still training (no result)
    write(b2n_dir(root, "train_base", "eurosat", "PVA", 1, cfg="vit_b16"), HEADER.format(seed=1))
    return root


def column(table, header):
    """{row label: text}; the Average row under "Average" whatever its coverage (asserted on its own)."""
    i = table.headers.index(header)
    return {re.sub(r"^Average \(\d+ of \d+\)$", "Average", row[0]):
            (row[i].text() if isinstance(row[i], ptr.Cell) else row[i]) for row in table.rows}


def test_base2new_table_hm_of_averages(tmp_path, capsys):
    table = ptr.build_base2new_table(make_base2new_tree(tmp_path))
    err = capsys.readouterr().err
    assert "dtd" in err and "[1]" in err and "[1, 2]" in err  # seeds differ: warned
    assert "no log.txt" not in err and "PVA" in err  # the unfinished run is skipped with a warning
    base, new, h = column(table, "CoOp Base"), column(table, "CoOp New"), column(table, "CoOp HM")
    assert (base["eurosat"], new["eurosat"], h["eurosat"]) == ("91.00", "52.00", f"{hm(91, 52):.2f}")
    assert (base["dtd"], new["dtd"], h["dtd"]) == ("60.00", "80.00", f"{hm(60, 80):.2f}")
    avg_b, avg_n = (91 + 60) / 2, (52 + 80) / 2
    assert (base["Average"], new["Average"]) == (f"{avg_b:.2f}", f"{avg_n:.2f}")
    assert h["Average"] == f"{hm(avg_b, avg_n):.2f}"
    mean_of_hms = (hm(91, 52) + hm(60, 80)) / 2
    assert f"{mean_of_hms:.2f}" != h["Average"]
    assert column(table, "seeds") == {"dtd": "1", "eurosat": "2", "Average": "1-2"}
    assert "PVA Base" not in table.headers


def test_base2new_missing_cells_and_trainer_filter(tmp_path):
    root = make_base2new_tree(tmp_path)
    write(b2n_dir(root, "train_base", "eurosat", "ZeroshotCLIP", 1, cfg="vit_b16"), eval_log(56.0))
    table = ptr.build_base2new_table(root, trainers=["ZeroshotCLIP", "CoOp"])
    assert table.headers[1:4] == ["ZeroshotCLIP Base", "ZeroshotCLIP New", "ZeroshotCLIP HM"]
    zs_base, zs_new = column(table, "ZeroshotCLIP Base"), column(table, "ZeroshotCLIP New")
    assert zs_base == {"dtd": "-", "eurosat": "56.00", "Average": "-"}
    assert set(zs_new.values()) == {"-"}
    text = ptr.format_table(table)
    assert text.splitlines()[0].startswith("| Dataset")


def test_base2new_reference_columns(tmp_path):
    root = make_base2new_tree(tmp_path)
    reference = ptr.load_reference()
    table = ptr.build_base2new_table(root, trainers=["CoOp"], reference=reference)
    assert table.headers[4:7] == ["CoOp (paper) Base", "CoOp (paper) New", "CoOp (paper) HM"]
    paper = column(table, "CoOp (paper) Base")
    # Read rows: no '*'; the paper's Average is over its 11 datasets, ours over dtd and eurosat: marked.
    assert paper == {"dtd": "79.44", "eurosat": "92.19", "Average": "82.69‡"}
    assert "‡ a paper's mean over its 11 datasets; ours average dtd, eurosat: not the same datasets" in table.footnotes
    assert any(note.startswith("CoOp (paper): CoCoOp paper") and "TransAgent" in note for note in table.footnotes)
    assert not any("recalled" in note for note in table.footnotes)
    full = ptr.build_base2new_table(root, reference=reference)
    assert "ZeroshotCLIP (paper) HM" in full.headers and "PromptSRC (paper) HM" in full.headers
    assert column(full, "MaPLe (paper) HM")["Average"] == "78.55‡"
    ordered = ptr.build_base2new_table(root, trainers=["ZeroshotCLIP", "CoOp"], reference=reference)
    assert ordered.headers[1] == "ZeroshotCLIP (paper) Base" and ordered.headers[4] == "CoOp Base"
    assert "MaPLe (paper) HM" not in ordered.headers


def test_gzsl_h_from_mean_seen_and_unseen(tmp_path):
    def gzsl_log(s, u, seed):
        return eval_log(70.0, seed, extra=f"* acc_seen: {s}%\n* acc_unseen: {u}%\n* hm: {hm(s, u):.1f}%\n")
    base = tmp_path / "gzsl"
    runs = {"eurosat": [(80.0, 40.0), (90.0, 60.0)], "dtd": [(70.0, 30.0)]}
    for dataset, values in runs.items():
        for seed, (s, u) in enumerate(values, 1):
            write(base / dataset / "shots_16" / "PVA" / "vit_b16" / f"seed{seed}" / "log.txt", gzsl_log(s, u, seed))
    table = ptr.build_gzsl_table(tmp_path)
    assert table.headers == ["Dataset", "PVA S", "PVA U", "PVA H", "seeds"]
    rows = {r[0]: [c.text() for c in r[1:4]] for r in table.rows}
    assert rows["eurosat"] == ["85.00", "50.00", f"{hm(85, 50):.2f}"]  # not the mean of per-seed HMs
    assert rows["dtd"] == ["70.00", "30.00", f"{hm(70, 30):.2f}"]
    assert rows["Average"] == ["77.50", "40.00", f"{hm(77.5, 40):.2f}"]


def make_transfer_tree(root):
    accs = {"CoOp": {"source": [71.0, 73.0], "eurosat": [40.0, 44.0], "dtd": [45.0, 45.0],
                     "imagenetv2": [64.0, 64.0], "imagenet_sketch": [47.0, 48.0]},
            "PVA": {"source": [70.0], "eurosat": [50.0], "imagenet_a": [50.0]}}
    for trainer, per_dataset in accs.items():
        for dataset, values in per_dataset.items():
            for seed, acc in enumerate(values, 1):
                if dataset == "source":
                    path = root / "imagenet" / trainer / "vit_b16_16shots" / f"seed{seed}" / "log.txt"
                    write(path, train_log(acc, seed))
                else:
                    path = root / "evaluation" / trainer / "vit_b16_16shots" / dataset / f"seed{seed}" / "log.txt"
                    write(path, eval_log(acc, seed))
    return root


def test_xd_and_dg_tables(tmp_path):
    root = make_transfer_tree(tmp_path)
    xd = ptr.build_transfer_table("xd", root, trainers=["CoOp", "PVA"])
    assert xd.headers == ["Method", "imagenet (source)", "dtd", "eurosat", "Average (2 of 10)", "seeds"]
    rows = {r[0]: [c.text() if isinstance(c, ptr.Cell) else c for c in r[1:]] for r in xd.rows}
    assert rows["CoOp"] == ["72.00", "45.00", "42.00", "43.50", "2"]
    assert rows["PVA"] == ["70.00", "-", "50.00", f"50.00{ptr.PARTIAL_MARK}", "1"]
    dg = ptr.build_transfer_table("dg", root)
    assert dg.headers[1:6] == ["imagenet (source)", "imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r"]
    rows = {r[0]: [c.text() if isinstance(c, ptr.Cell) else c for c in r[1:]] for r in dg.rows}
    assert rows["CoOp"][:6] == ["72.00", "64.00", "47.50", "-", "-", f"{(64 + 47.5) / 2:.2f}{ptr.PARTIAL_MARK}"]
    assert rows["PVA"][3] == "50.00"


def make_fewshot_tree(root):
    for dataset, per_shot in {"eurosat": {1: [50.0, 52.0], 16: [80.0]}, "dtd": {1: [40.0], 4: [50.0]}}.items():
        for shots, values in per_shot.items():
            for seed, acc in enumerate(values, 1):
                path = root / "fewshot" / dataset / "CLIPAdapter" / f"vit_b16_{shots}shots" / f"seed{seed}" / "log.txt"
                write(path, train_log(acc, seed))
    return root


def test_fewshot_table_and_missing_cells(tmp_path):
    table = ptr.build_fewshot_table(make_fewshot_tree(tmp_path))
    assert table.headers[1:6] == [f"CLIPAdapter {s}-shot" for s in (1, 2, 4, 8, 16)]
    rows = {r[0]: [c.text() if isinstance(c, ptr.Cell) else c for c in r[1:]] for r in table.rows}
    assert rows["eurosat"] == ["51.00", "-", "-", "-", "80.00", "1-2"]
    assert rows["dtd"] == ["40.00", "-", "50.00", "-", "-", "1"]
    assert rows["Average (2 of 11)"][:5] == ["45.50", "-", f"50.00{ptr.PARTIAL_MARK}", "-", f"80.00{ptr.PARTIAL_MARK}"]
    ref = ptr.build_fewshot_table(tmp_path, reference=ptr.load_reference())
    assert column(ref, "CLIPAdapter (paper) 16-shot")["eurosat"] == "84.43"


def test_csv_and_latex_outputs_parse(tmp_path):
    table = ptr.build_base2new_table(make_base2new_tree(tmp_path))
    rows = list(csv.reader(io.StringIO(ptr.format_table(table, "csv"))))
    assert rows[0] == ["Dataset", "CoOp Base", "CoOp New", "CoOp HM", "seeds"]
    assert rows[-1][0] == "Average (2 of 11)" and float(rows[-1][3]) == pytest.approx(hm(75.5, 66), abs=0.005)
    latex = ptr.format_table(table, "latex")
    assert "\\begin{tabular}" in latex and "\\end{tabular}" in latex
    body = [line for line in latex.splitlines() if line.rstrip().endswith("\\\\")]
    cells = [[c.strip() for c in line.rstrip()[:-2].split("&")] for line in body]
    assert cells[0] == ["Dataset", "CoOp Base", "CoOp New", "CoOp HM", "seeds"]
    assert cells[-1][:3] == ["Average (2 of 11)", "75.50", "66.00"]
    assert all(line.startswith("% ") for line in ptr.format_footnotes(table, "latex").splitlines())


def test_cli_table_csv_on_stdout_notes_on_stderr(tmp_path):
    make_base2new_tree(tmp_path)
    result = run_cli("--table", "base2new", "--root", tmp_path, "--format", "csv", "--reference", "--trainers", "CoOp")
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0][:5] == ["Dataset", "CoOp Base", "CoOp New", "CoOp HM", "CoOp (paper) Base"]
    assert [r[0] for r in rows[1:]] == ["dtd", "eurosat", "Average (2 of 11)"]
    assert "TransAgent" in result.stderr and "HM = 2*Base*New/(Base+New)" in result.stderr


def test_plots_are_written(tmp_path):
    pytest.importorskip("matplotlib")
    ptr.save_plot(ptr.build_fewshot_table(make_fewshot_tree(tmp_path)), tmp_path / "fewshot.png")
    ptr.save_plot(ptr.build_base2new_table(make_base2new_tree(tmp_path)), tmp_path / "b2n.png")
    for name in ("fewshot.png", "b2n.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


# ------------------------------------------------------------------ the published numbers

def test_reference_file_is_consistent():
    reference = json.loads(ptr.REFERENCE_FILE.read_text())
    for protocol in ("base2new", "fewshot"):
        for method, entry in reference[protocol].items():
            assert entry["source"] and entry["trainer"] and entry["backbone"], method
            assert all(isinstance(v["checked"], bool) for v in entry["results"].values()), method
    b2n = reference["base2new"]
    assert b2n["CLIP"]["trainer"] == "ZeroshotCLIP"
    for method in ("CLIP", "CoOp", "CoCoOp"):  # per-dataset rows (read) reproduce the checked averages
        results = b2n[method]["results"]
        rows = [v for k, v in results.items() if k != "average"]
        assert len(rows) == 11 and all(v["checked"] for v in rows)
        avg = results["average"]
        assert avg["checked"]
        for key in ("base", "new"):
            assert statistics.mean(v[key] for v in rows) == pytest.approx(avg[key], abs=0.006)
        assert hm(avg["base"], avg["new"]) == pytest.approx(avg["hm"], abs=0.006)
        assert all(hm(v["base"], v["new"]) == pytest.approx(v["hm"], abs=0.006) for v in rows)
    clip_adapter = reference["fewshot"]["CLIP-Adapter"]["results"]
    assert clip_adapter["imagenet"]["16"] == 63.59 and clip_adapter["eurosat"]["1"] == 61.4


def test_run_folder_without_result_or_log_is_skipped_with_a_warning(tmp_path, capsys):
    # A seed folder holding neither result.json nor log.txt (e.g. created by hand, or emptied) is
    # skipped with the warning that names it, and the other seeds still make the table.
    root = make_base2new_tree(tmp_path)
    empty = b2n_dir(root, "train_base", "eurosat", "CoOp", 3).parent
    empty.mkdir(parents=True)
    table = ptr.build_base2new_table(root)
    err = capsys.readouterr().err
    assert f"skipping {empty}: no result.json and no log.txt" in err
    assert column(table, "CoOp Base")["eurosat"] == "91.00"


def test_several_reference_rows_of_one_trainer_each_keep_their_column(tmp_path):
    """IVLP has three published rows (MaPLe's 2+2 and language-only, PromptSRC's 4+4): none hides another."""
    run = tmp_path / "base2new" / "test_new" / "eurosat" / "shots_16" / "IVLP" / "x" / "seed1" / "log.txt"
    run.parent.mkdir(parents=True)
    run.write_text("=> result\n* total: 10\n* correct: 7\n* accuracy: 70.0%\n")
    table = ptr.build_base2new_table(tmp_path, trainers=["IVLP"], reference=ptr.load_reference())
    average = [r for r in table.rows if r[0] == "Average (1 of 11)"][0]
    averages = {h: getattr(c, "text", lambda: c)() for h, c in zip(table.headers, average)}
    assert averages["IVLP (2+2, 5 epochs) (paper) Base"] == "82.15‡"
    assert averages["IVLP (language only) (paper) Base"] == "81.72‡"
    assert averages["IVLP (4+4, 20 epochs) (paper) HM"] == "77.51‡"


def test_a_wide_table_prints_as_views_that_fit_80_columns_with_the_same_cells(tmp_path):
    """One view per measure (Base, New, HM), a column per method named by a key the legend spells out;
    every cell is the wide table's; --wide (or a wide terminal) prints the one table."""
    root = make_base2new_tree(tmp_path)
    table = ptr.build_base2new_table(root, reference=ptr.load_reference())
    assert max(len(line) for line in ptr.format_table(table).splitlines()) > 80
    views, legend = ptr.narrow_views(table, 80)
    keys = dict(line.split(" = ", 1) for line in legend)
    assert list(keys.values()) == [label for label, _ in table.groups]
    for view in views:
        assert max(len(line) for line in ptr.format_table(view).splitlines()) <= 80
        measure = view.headers[0].split("(")[1].rstrip(")")
        for key in view.headers[1:-1]:
            for row, wide_row in zip(view.rows, table.rows):
                wide = wide_row[table.headers.index(f"{keys[key]} {measure}")]
                assert row[view.headers.index(key)].text() == wide.text() and row[0] == wide_row[0]
    assert {v.headers[0] for v in views} == {"Dataset (Base)", "Dataset (New)", "Dataset (HM)"}
    narrow = run_cli("--table", "base2new", "--root", root, "--reference")
    assert narrow.returncode == 0 and "A = CoOp" in narrow.stdout
    assert max(len(line) for line in narrow.stdout.splitlines() if line.startswith("|")) <= 80
    for wide in (run_cli("--table", "base2new", "--root", root, "--reference", "--wide"),
                 subprocess.run([sys.executable, "parse_test_res.py", "--table", "base2new", "--root", str(root),
                                 "--reference"], cwd=REPO, capture_output=True, text=True,
                                env=dict(os.environ, COLUMNS="100000"))):
        assert "| CoOp (paper) Base" in wide.stdout and "A = CoOp" not in wide.stdout


def test_notes_name_what_our_rows_ran_and_warn_where_a_published_row_ran_another_protocol(capsys):
    m = ptr.Method("CoOp", "vit_b32_ctxv1", 4)
    setups = {("CoOp", "vit_b32_ctxv1"): [{"backbone": "ViT-B/32", "epochs": 5, "config": "vit_b32_ctxv1"}]}
    references = {"CoOp (paper)": {"trainer": "CoOp", "backbone": "ViT-B/16",
                                   "results": {"average": {"base": 82.69, "new": 63.22, "hm": 71.66}}}}
    notes = ptr.comparison_notes("base2new", {m: "CoOp"}, setups, references, ["eurosat"])
    assert notes[0] == "CoOp (ours): config vit_b32_ctxv1, backbone ViT-B/32, 5 epochs, 4 shots"
    assert notes[1].startswith("‡ a paper's mean over its 11 datasets; ours average eurosat")
    err = capsys.readouterr().err
    assert "CoOp (paper) ran ViT-B/16; ours ran ViT-B/32" in err and "published rows are 16-shot; ours: CoOp at 4" in err
    same = ptr.comparison_notes("base2new", {m._replace(shots=16): "CoOp"},
                                {("CoOp", "vit_b32_ctxv1"): [{"backbone": "ViT-B/16"}]}, references,
                                list(ptr.DEFAULT_DATASETS["base2new"]))
    assert same == ["CoOp (ours): backbone ViT-B/16, 16 shots"] and capsys.readouterr().err == ""
