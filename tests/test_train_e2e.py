"""train.py as a user runs it: zero-shot eval, CoOp base -> new from a checkpoint, parse_test_res."""
import os.path as osp
import subprocess
import sys

import pytest

from helpers import COOP_CFG, REPO, SHARED_DATA, TINY_OPTS, result_accuracy, run_train
from helpers import train_args as common

ZS_CFG = "configs/trainers/ZeroshotCLIP/vit_b16.yaml"


def test_zeroshot_eval_writes_result_block_and_parse_reads_it(shapes_root, tmp_path):
    out = tmp_path / "zs" / "seed1"
    run_train(common("ZeroshotCLIP", ZS_CFG, shapes_root, out) + ["--eval-only"] + TINY_OPTS)
    log = (out / "log.txt").read_text()
    for line in ("=> result", "* total: 192", "* correct:", "* accuracy:", "* error:", "* macro_f1:"):
        assert line in log
    proc = subprocess.run([sys.executable, "parse_test_res.py", str(tmp_path / "zs"), "--test-log"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert f"* accuracy: {result_accuracy(log):.2f}%" in proc.stdout


def test_coop_base_to_new_from_saved_checkpoint(shapes_root, tmp_path):
    opts = TINY_OPTS + ["OPTIM.MAX_EPOCH", "2", "DATASET.NUM_SHOTS", "4", "DATALOADER.TRAIN_X.BATCH_SIZE", "16"]
    base_dir = tmp_path / "train_base"
    run_train(common("CoOp", COOP_CFG, shapes_root, base_dir) + opts + ["DATASET.SUBSAMPLE_CLASSES", "base"])
    log = (base_dir / "log.txt").read_text()
    assert "epoch [2/2]" in log and "Finish training" in log and "* total: 96" in log  # 24 base classes x 4
    assert (base_dir / "prompt_learner" / "model.pth.tar-2").exists()

    new_dir = tmp_path / "test_new"
    proc = run_train(common("CoOp", COOP_CFG, shapes_root, new_dir) + ["--eval-only", "--model-dir", str(base_dir),
                     "--load-epoch", "2"] + opts + ["DATASET.SUBSAMPLE_CLASSES", "new"])
    log = (new_dir / "log.txt").read_text()
    assert "model.pth.tar-2" in log and "* total: 96" in log and "Finish training" not in log
    assert "SUBSAMPLE NEW CLASSES!" in proc.stdout


def test_eval_only_with_missing_epoch_names_what_exists(shapes_root, tmp_path):
    base_dir = tmp_path / "run"
    (base_dir / "prompt_learner").mkdir(parents=True)
    (base_dir / "prompt_learner" / "model.pth.tar-5").write_bytes(b"")
    proc = run_train(common("CoOp", COOP_CFG, shapes_root, tmp_path / "eval") + ["--eval-only", "--model-dir",
                     str(base_dir), "--load-epoch", "50"] + TINY_OPTS, check=False)
    assert proc.returncode != 0
    assert "model.pth.tar-50" in proc.stderr and "model.pth.tar-5" in proc.stderr
    assert not (tmp_path / "eval").exists()  # nothing started, nothing written


@pytest.mark.skipif(not osp.isdir(osp.join(SHARED_DATA, "eurosat")), reason="../shared/data/eurosat is absent")
def test_zeroshot_on_real_eurosat(tmp_path):
    out = tmp_path / "zs_eurosat"
    run_train(common("ZeroshotCLIP", ZS_CFG, SHARED_DATA, out, dataset="eurosat") + ["--eval-only"] + TINY_OPTS
              + ["DATALOADER.TEST.BATCH_SIZE", "256"])
    log = (out / "log.txt").read_text()
    assert "* total: 8,100" in log and "a centered satellite photo of Annual Crop Land." in log


def test_resumed_run_continues_its_own_log(shapes_root, tmp_path):
    out = tmp_path / "run"
    opts = TINY_OPTS + ["OPTIM.MAX_EPOCH", "1", "DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", "base"]
    run_train(common("CoOp", COOP_CFG, shapes_root, out) + opts)
    run_train(common("CoOp", COOP_CFG, shapes_root, out) + opts)  # same command again: resumes
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("log")) == ["log.txt"]
    log = (out / "log.txt").read_text()
    assert "=== Resuming the training run" in log and "(will resume training)" in log
    assert log.rstrip().splitlines()[-1].startswith("Elapsed") and log.count("Finish training") == 2
