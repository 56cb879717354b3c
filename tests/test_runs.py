"""The run registry (clipadapt/runs.py): folders, tags, the finished judgement, result files, and the
scripts and parse_test_res.py on top of it; the built-in engine's TensorBoard scalars."""
import json
import os
import re
import subprocess
import sys

import pytest

from helpers import REPO, TINY_OPTS

from clipadapt import dassl_log, runs

FEW_OPTS = [*TINY_OPTS, "OPTIM.MAX_EPOCH", "1"]
FINISHED_RESULT = json.dumps({"results": {"test": {"accuracy": 50.0}}})


def test_override_tag_is_short_readable_and_unique():
    # CoOp's folder names: nctx16_cscFalse_ctpend (ours sorts the keys)
    coop = {"TRAINER.COOP.N_CTX": 16, "TRAINER.COOP.CSC": False, "TRAINER.COOP.CLASS_TOKEN_POSITION": "end"}
    assert runs.override_tag(coop) == "ctpend_cscFalse_nctx16"
    assert runs.override_tag({"TRAINER.COOP.N_CTX": 4}) == "nctx4"
    assert runs.override_tag({"INPUT.SIZE": [32, 32], "OPTIM.LR": 0.002}) == "size32x32_lr0.002"
    assert runs.override_tag({}) == ""
    # two keys with one short name keep apart by their parent's
    assert runs.override_tag({"MODEL.BACKBONE.NAME": "a", "MODEL.HEAD.NAME": "b"}) == "backbonenamea_headnameb"
    # a long tag keeps its start and ends with a hash of everything, so near misses differ
    long_a = {f"A.KEY{i}": "x" * 10 for i in range(8)}
    long_b = dict(long_a, **{"A.KEY7": "y" * 10})
    tag_a, tag_b = runs.override_tag(long_a), runs.override_tag(long_b)
    assert len(tag_a) <= runs.TAG_MAX_CHARS and tag_a.startswith("key0xxxxxxxxxx_") and tag_a != tag_b
    assert runs.config_label("vit_b16", {"TRAINER.COOP.N_CTX": 4}) == "vit_b16_nctx4"


def test_run_folders_follow_coops_layout():
    spec = runs.protocol_run("few_shot", "CoOp", "vit_b16", "eurosat", 2, 8, [])
    spec._cfg = ({}, {})  # no overrides, without building the config
    assert spec.output_dir("out") == "out/fewshot/eurosat/CoOp/vit_b16_8shots/seed2"
    assert runs.run_dir("out", "base2new", split="test_new", dataset="dtd", shots=16, trainer="PVA", cfg="c",
                        seed=3) == "out/base2new/test_new/dtd/shots_16/PVA/c/seed3"
    assert runs.run_dir("out", "xd_source", source="imagenet", trainer="CoOp", cfg="c", shots=16,
                        seed=1) == "out/imagenet/CoOp/c_16shots/seed1"
    assert runs.run_dir("out", "xd_target", dataset="dtd", trainer="CoOp", cfg="c", shots=16,
                        seed=1) == "out/evaluation/CoOp/c_16shots/dtd/seed1"


def test_overrides_are_what_differs_from_the_config_files(shapes_root):
    spec = runs.protocol_run("few_shot", "CoOp", "vit_b16", "shapes", 1, 16,
                             ["TRAINER.COOP.N_CTX", "4", "DATALOADER.NUM_WORKERS", "0", "OPTIM.MAX_EPOCH", "200"])
    # vit_b16.yaml says MAX_EPOCH 200 already, NUM_WORKERS only changes speed, shots are in the path
    assert spec.overrides == {"TRAINER.COOP.N_CTX": 4}
    assert spec.output_dir("o").endswith("/CoOp/vit_b16_nctx4_16shots/seed1")
    # at 2 shots CoOp's recipe trains vit_b16_ep100.yaml (100 epochs): there 200 is an override
    at_two = runs.protocol_run("few_shot", "CoOp", "vit_b16", "shapes", 1, 2, ["OPTIM.MAX_EPOCH", "200"])
    assert at_two.config_file.endswith("vit_b16_ep100.yaml") and at_two.overrides == {"OPTIM.MAX_EPOCH": 200}



def test_one_identity_for_the_folder_the_tag_and_the_resume_check(shapes_root, tmp_path):
    # Keys that say how verbosely or how often things are written make neither a new folder, nor a
    # mismatch with a finished run, nor a refused resume; a key that changes what is learned does all three.
    from clipadapt.checkpoints import resume_config_problem
    quiet = ["VERBOSE", "False", "TRAIN.CHECKPOINT_FREQ", "3", "FEATURES.CACHE", "False"]
    plain = runs.protocol_run("few_shot", "CoOp", "vit_b16", "shapes", 1, 16, [])
    spec = runs.protocol_run("few_shot", "CoOp", "vit_b16", "shapes", 1, 16, quiet)
    assert spec.overrides == {} and spec.output_dir("o") == plain.output_dir("o")
    cfg, base = spec.configs()
    plain_cfg, _ = plain.configs()
    assert cfg.VERBOSE is False and plain_cfg.VERBOSE is True  # the options did reach the config
    assert runs.config_digest(cfg) == runs.config_digest(plain_cfg)
    folder = tmp_path / "run"
    folder.mkdir()
    runs.write_json(str(folder / "run.json"), runs.describe_run(plain_cfg, base, plain.config_file))
    (folder / "result.json").write_text(FINISHED_RESULT)
    assert runs.is_finished(str(folder), cfg)
    checkpoint = {"meta": {"config": plain_cfg.dump()}}
    assert resume_config_problem(checkpoint, cfg, "ckpt") is None

    lr = runs.protocol_run("few_shot", "CoOp", "vit_b16", "shapes", 1, 16, ["OPTIM.LR", "0.5"])
    lr_cfg, _ = lr.configs()
    assert lr.output_dir("o") != plain.output_dir("o")
    assert runs.config_diff(plain_cfg, lr_cfg) == [("OPTIM.LR", 0.002, 0.5)]
    with pytest.raises(runs.RunMismatch, match=r"there -> here: OPTIM.LR 0.002 -> 0.5\)"):
        runs.is_finished(str(folder), lr_cfg)
    assert "1 key(s) differ, checkpoint -> now: OPTIM.LR 0.002 -> 0.5)" in resume_config_problem(checkpoint, lr_cfg, "c")
    # every non-identity key says why
    assert all(isinstance(why, str) and why for why in runs.NON_IDENTITY_KEYS.values())


def write_log(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_finished_judgement(tmp_path):
    coop_tree = tmp_path / "coop"  # a plain CoOp run: judged from its log, as CoOp's scripts do
    write_log(coop_tree / "log.txt", "epoch [1/1]\nFinish training\n=> result\n* accuracy: 50.0%\n")
    assert runs.is_finished(str(coop_tree))
    killed = tmp_path / "killed"
    write_log(killed / "log.txt", "epoch [1/2]\n")
    assert not runs.is_finished(str(killed))
    ours = tmp_path / "ours"  # ours has run.json: finished only with result.json, whatever the log says
    write_log(ours / "log.txt", "Finish training\n=> result\n* accuracy: 50.0%\n")
    (ours / "run.json").write_text(json.dumps({"config_digest": "abc"}))
    assert not runs.is_finished(str(ours))
    (ours / "result.json").write_text("{}")  # written, but with no result in it: not finished
    assert not runs.is_finished(str(ours))
    (ours / "result.json").write_text(FINISHED_RESULT)
    assert runs.is_finished(str(ours))


def test_a_folder_of_another_config_is_refused_naming_the_keys(shapes_root, tmp_path):
    spec = runs.protocol_run("few_shot", "CoOp", "vit_b16", "shapes", 1, 2, ["TRAINER.COOP.N_CTX", "4"])
    cfg, base = spec.configs()
    folder = tmp_path / "run"
    folder.mkdir()
    other = cfg.clone()
    other.defrost()
    other.TRAINER.COOP.N_CTX = 8
    other.OPTIM.LR = 0.5
    runs.write_json(str(folder / "run.json"), runs.describe_run(other, base, spec.config_file))
    (folder / "result.json").write_text(FINISHED_RESULT)
    with pytest.raises(runs.RunMismatch) as info:
        runs.is_finished(str(folder), cfg)
    message = str(info.value)
    assert "there -> here: " in message and "TRAINER.COOP.N_CTX 8 -> 4" in message and "OPTIM.LR 0.5 -> 0.002" in message
    assert runs.is_finished(str(folder), other)


def test_final_metrics_are_the_last_result_block(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text("Evaluate on the *val* set\n=> result\n* accuracy: 10.0%\n* macro_f1: 9.0%\n"
                   "Finish training\nEvaluate on the *test* set\n=> result\n* total: 192\n* accuracy: 62.5%\n"
                   "* error: 37.5%\n* macro_f1: 60.1%\n* acc_seen: 70.0%\n* acc_unseen: 50.0%\n* hm: 58.3%\n"
                   "=> per-class result\n* average: 1.0%\nElapsed: 0:00:01\n")
    assert dassl_log.final_metrics(str(log)) == {"accuracy": 62.5, "error": 37.5, "macro_f1": 60.1, "acc_seen": 70.0,
                                            "acc_unseen": 50.0, "hm": 58.3}


def run_script(script, args, data, output):
    env = dict(os.environ, DATA=str(data), OUTPUT=str(output))
    return subprocess.run(["bash", os.path.join(REPO, "scripts", *script.split("/")), *args], cwd=REPO,
                          capture_output=True, text=True, env=env)


def table_cells(stdout):
    lines = [line for line in stdout.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines]


def test_an_ablation_trains_into_its_own_folder_and_the_table_shows_both(shapes_root, tmp_path):
    out = tmp_path / "output"
    default = run_script("common/few_shot.sh", ["CoOp", "vit_b16", "shapes", "2", "1", *FEW_OPTS], shapes_root, out)
    assert default.returncode == 0, default.stderr[-2000:]
    ablation = run_script("common/few_shot.sh", ["CoOp", "vit_b16", "shapes", "2", "1", *FEW_OPTS,
                                                  "TRAINER.COOP.N_CTX", "4"], shapes_root, out)
    assert ablation.returncode == 0, ablation.stderr[-2000:]
    assert "skip this job" not in ablation.stdout and "Finish training" in ablation.stdout
    folders = sorted(p.parent for p in (out / "fewshot" / "shapes" / "CoOp").glob("*/seed1/result.json"))
    assert len(folders) == 2 and folders[1].parent.name == folders[0].parent.name.replace("_2shots", "_nctx4_2shots")
    identity = json.loads((folders[1] / "run.json").read_text())
    assert identity["overrides"]["TRAINER.COOP.N_CTX"] == 4 and identity["config"]["TRAINER.COOP.N_CTX"] == 4
    assert json.loads((folders[0] / "run.json").read_text())["config"]["TRAINER.COOP.N_CTX"] == 16
    again = run_script("common/few_shot.sh", ["CoOp", "vit_b16", "shapes", "2", "1", *FEW_OPTS,
                                               "TRAINER.COOP.N_CTX", "4"], shapes_root, out)
    assert f"The results exist at {out}/fewshot/shapes/CoOp/{folders[1].parent.name}/seed1" in again.stdout

    table = subprocess.run([sys.executable, "parse_test_res.py", "--table", "fewshot", "--root", str(out), "--wide"],
                           cwd=REPO, capture_output=True, text=True)
    header, _, row = table_cells(table.stdout)[:3]
    # one column group per config; the cell is each run's own result.json accuracy
    for folder in folders:
        column = header.index(f"CoOp/{folder.parent.name[:-len('_2shots')]} 2-shot")
        accuracy = json.loads((folder / "result.json").read_text())["results"]["test"]["accuracy"]
        assert float(row[column]) == pytest.approx(accuracy)

    # the folder now holds the ablation; a run of another config there is refused by name
    moved = out / "fewshot" / "shapes" / "CoOp" / folders[0].parent.name
    os.rename(moved, str(moved) + ".bak")
    os.rename(folders[1].parent, moved)
    refused = run_script("common/few_shot.sh", ["CoOp", "vit_b16", "shapes", "2", "1", *FEW_OPTS], shapes_root, out)
    assert refused.returncode == 3 and "TRAINER.COOP.N_CTX 4 -> 16" in refused.stderr


def test_result_file_holds_metrics_digest_versions_and_device(shapes_root, tmp_path):
    out = tmp_path / "output"
    proc = run_script("common/gzsl.sh", ["ZeroshotCLIP", "vit_b16", "shapes", "1", *TINY_OPTS], shapes_root, out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    [folder] = (out / "gzsl").glob("shapes/shots_16/ZeroshotCLIP/*/seed1")
    result = json.loads((folder / "result.json").read_text())
    log = (folder / "log.txt").read_text()
    for key in ("accuracy", "macro_f1", "acc_seen", "acc_unseen", "hm"):
        assert result["results"]["test"][key] == float(re.findall(rf"\* {key}: ([\d.]+)%", log)[-1])
    gzsl = result["gzsl"]
    assert gzsl == {"S": result["results"]["test"]["acc_seen"], "U": result["results"]["test"]["acc_unseen"],
                    "H": result["results"]["test"]["hm"]}
    assert result["config_digest"] == json.loads((folder / "run.json").read_text())["config_digest"]
    assert result["wall_time_s"] > 0 and result["device"].startswith("cpu")
    assert {"python", "torch", "open_clip", "clipadapt"} <= set(result["versions"])


def test_parse_test_res_reads_result_files_and_plain_coop_logs(tmp_path):
    from clipadapt import results as parse_test_res
    root = tmp_path / "output"
    ours = root / "fewshot" / "eurosat" / "CoOp" / "vit_b16_4shots"
    coop = root / "fewshot" / "eurosat" / "CoOp" / "vit_b16_8shots"
    for seed, value in ((1, 70.0), (2, 74.0)):
        folder = ours / f"seed{seed}"
        # the log says something else: the result file is what is read
        write_log(folder / "log.txt", "Finish training\n=> result\n* accuracy: 1.0%\n")
        (folder / "run.json").write_text("{}")
        (folder / "result.json").write_text(json.dumps({"results": {"test": {"accuracy": value}}}))
        write_log(coop / f"seed{seed}" / "log.txt", f"Finish training\n=> result\n* accuracy: {value - 10}%\n")
    table = parse_test_res.build_table("fewshot", str(root))
    row = dict(zip(table.headers, [c.text() if hasattr(c, "text") else c for c in table.rows[0]]))
    assert row["CoOp 4-shot"] == "72.00" and row["CoOp 8-shot"] == "62.00"


def test_tensorboard_scalars_as_dassl_writes_them(shapes_root, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    out = tmp_path / "run"
    opts = [*TINY_OPTS, "OPTIM.MAX_EPOCH", "2", "DATASET.NUM_SHOTS", "2", "DATALOADER.TRAIN_X.BATCH_SIZE", "32",
            "TRAIN.PRINT_FREQ", "1"]
    proc = subprocess.run([sys.executable, "train.py", "--root", shapes_root, "--seed", "1", "--trainer", "CoOp",
                           "--dataset-config-file", "configs/datasets/shapes.yaml", "--config-file",
                           "configs/trainers/CoOp/vit_b16.yaml", "--output-dir", str(out), *opts],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/acc", "train/lr", "test/accuracy", "test/macro_f1"} <= tags
    log = (out / "log.txt").read_text()
    # 48 classes x 2 shots / 32 = 3 batches per epoch, 2 epochs: one point per batch at step epoch*3+batch
    printed = re.findall(r"epoch \[(\d)/2\] batch \[(\d)/3\] .* loss [\d.]+ \(([\d.]+)\) .* lr ([\d.e+-]+)", log)
    assert len(printed) == 6
    loss = {e.step: e.value for e in events.Scalars("train/loss")}
    lr = {e.step: e.value for e in events.Scalars("train/lr")}
    for epoch, batch, loss_avg, rate in printed:
        step = (int(epoch) - 1) * 3 + int(batch) - 1
        assert loss[step] == pytest.approx(float(loss_avg), abs=6e-5)
        assert lr[step] == pytest.approx(float(rate), rel=1e-3)
    [test_acc] = events.Scalars("test/accuracy")
    assert test_acc.value == pytest.approx(float(re.findall(r"\* accuracy: ([\d.]+)%", log)[-1]), abs=0.051)


def test_options_that_contradict_the_protocol_are_refused(shapes_root):
    from clipadapt.config import ConfigError
    spec = runs.protocol_run("few_shot", "CoOp", "vit_b16", "shapes", 1, 2, ["DATASET.NUM_SHOTS", "16"])
    with pytest.raises(ConfigError, match="DATASET.NUM_SHOTS 16 in the options contradicts the protocol's 2"):
        spec.configs()
