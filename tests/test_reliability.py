"""Reliability as a user breaks it: kill and resume, eval-only mistakes, bad data at training time,
bad config, unsafe pickles, non-finite loss. docs/RELIABILITY.md lists each bad input and its message.

Bad data found while building a dataset (missing root/folder/split, absent images, label out of
range, empty class) is covered by tests/test_datasets.py; here is what only shows at training time.
"""
import ast
import glob
import os
import os.path as osp
import shutil
import subprocess
import sys
import time

import pytest
import torch
import yaml

from helpers import COOP_CFG, REPO, SMALL, TINY_OPTS, coop_args, fails, make_cfg, run_train, snapshot
from helpers import load_checkpoint as load

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# One intra-op thread: with two, OpenMP's spinning threads make a loaded 2-core machine 100x slower.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def result_line(text):
    block = text.split("=> result")[-1]
    return next(l for l in block.splitlines() if l.startswith("* accuracy:"))


def assert_same_weights(a, b, scheduler=True):
    ca, cb = load(a), load(b)
    assert ca["epoch"] == cb["epoch"]
    assert ca["state_dict"].keys() == cb["state_dict"].keys()
    for k in ca["state_dict"]:
        assert torch.equal(ca["state_dict"][k], cb["state_dict"][k]), k
    for pa, pb in zip(ca["optimizer"]["state"].values(), cb["optimizer"]["state"].values(), strict=True):
        for k in pa:
            assert torch.equal(torch.as_tensor(pa[k]), torch.as_tensor(pb[k])), k
    if scheduler:
        assert ca["scheduler"] == cb["scheduler"]
    return ca, cb


@pytest.fixture(scope="module")
def coop_run(shapes_root, tmp_path_factory):
    """An uninterrupted CoOp run: 4 epochs, a checkpoint after each, its own feature cache.
    Other tests only read it, and check that they did not change it."""
    base = tmp_path_factory.mktemp("coop_run")
    out = base / "run"
    proc = run_train(coop_args(shapes_root, out, "OPTIM.MAX_EPOCH", "4", "TRAIN.CHECKPOINT_FREQ", "1",
                               "FEATURES.CACHE_DIR", str(base / "cache")), env=ONE_THREAD)
    return out, proc


def copy_run(run_dir, dest, epochs=(1, 2, 3, 4), pointer=4):
    os.makedirs(dest / "prompt_learner")
    for e in epochs:
        shutil.copy(run_dir / "prompt_learner" / f"model.pth.tar-{e}", dest / "prompt_learner")
    (dest / "prompt_learner" / "checkpoint").write_text(f"model.pth.tar-{pointer}\n")
    return dest


# ---------------------------------------------------------------------------------------------
# 1. kill and resume

# train.py with one change: at (epoch, batch) it writes a marker and waits, so the test can SIGKILL
# it at a known point mid-epoch instead of racing epochs that last a fraction of a second.
PAUSING_TRAIN = """
import os, runpy, sys, time
sys.path.insert(0, os.getcwd())
import trainers.coop
epoch, batch, marker = int(os.environ["PAUSE_EPOCH"]), int(os.environ["PAUSE_BATCH"]), os.environ["PAUSE_MARKER"]
forward_backward = trainers.coop.CoOp.forward_backward
def paused(self, b):
    if (self.epoch + 1, self.batch_idx + 1) == (epoch, batch):
        sys.stdout.flush()
        open(marker, "w").close()
        time.sleep(600)
    return forward_backward(self, b)
trainers.coop.CoOp.forward_backward = paused
sys.argv = ["train.py"] + sys.argv[1:]
runpy.run_path("train.py", run_name="__main__")
"""


def test_killed_run_resumes_to_the_same_checkpoint_and_accuracy(coop_run, shapes_root, tmp_path):
    ref_dir, ref = coop_run
    run_dir = tmp_path / "killed"
    # Its own feature cache: when resumed it finds the views the killed run computed (cache hits)
    # where the reference computed them (misses); that must not change how it trains.
    args = coop_args(shapes_root, run_dir, "OPTIM.MAX_EPOCH", "4", "TRAIN.CHECKPOINT_FREQ", "1",
                     "FEATURES.CACHE_DIR", str(tmp_path / "cache"))
    marker = tmp_path / "paused"
    env = dict(os.environ, **ONE_THREAD, PAUSE_EPOCH="3", PAUSE_BATCH="6", PAUSE_MARKER=str(marker))
    proc = subprocess.Popen([sys.executable, "-c", PAUSING_TRAIN, *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not marker.exists():
            assert proc.poll() is None, "the run ended before reaching epoch 3"
            assert time.time() < deadline, "the run never reached epoch 3, batch 6"
            time.sleep(0.05)
    finally:
        proc.kill()  # SIGKILL: no handler runs
        proc.wait()
    assert proc.returncode == -9
    log = (run_dir / "log.txt").read_text()
    assert "epoch [3/4] batch [5/12]" in log and "Finish training" not in log
    assert sorted(os.listdir(run_dir / "prompt_learner")) == ["checkpoint", "model.pth.tar-1", "model.pth.tar-2"]

    resumed = run_train(args, env=ONE_THREAD)  # the same command again
    assert f"Found checkpoint at {run_dir} (will resume training)" in resumed.stdout
    assert 'prompt_learner/model.pth.tar-2" (epoch = 2)' in resumed.stdout
    assert "epoch [1/4]" not in resumed.stdout and "epoch [3/4] batch [5/12]" in resumed.stdout
    assert result_line(resumed.stdout) == result_line(ref.stdout)
    for epoch in (3, 4):
        ca, cb = assert_same_weights(ref_dir / "prompt_learner" / f"model.pth.tar-{epoch}",
                                     run_dir / "prompt_learner" / f"model.pth.tar-{epoch}")
        assert torch.equal(ca["rng"]["torch"], cb["rng"]["torch"])  # the sampler's source resumed too


def test_partial_temp_file_is_ignored_and_damaged_checkpoint_is_refused(coop_run, shapes_root, tmp_path, train_main):
    from clipadapt.engine import build_trainer
    ref_dir, _ = coop_run
    run = copy_run(ref_dir, tmp_path / "run", epochs=(1, 2), pointer=2)
    # What a write killed before its rename leaves: a temp file, here even a complete later checkpoint.
    shutil.copy(ref_dir / "prompt_learner" / "model.pth.tar-4", run / "prompt_learner" / ".tmp-k1ll3d.part")
    (run / "prompt_learner" / ".tmp-trunc.part").write_bytes(b"PK\x03\x04 half a file")
    trainer = build_trainer(make_cfg("CoOp", COOP_CFG, shapes_root, run, SMALL[len(TINY_OPTS):] + [
        "OPTIM.MAX_EPOCH", "4"]))
    assert trainer.resume_model_if_exist(str(run)) == 2
    saved = load(ref_dir / "prompt_learner" / "model.pth.tar-2")["state_dict"]
    assert torch.equal(trainer.prompt_learner.ctx, saved["ctx"])

    # A checkpoint named by the pointer but cut short (a partial copy, a full disk): refused by name.
    ckpt = run / "prompt_learner" / "model.pth.tar-2"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    before = snapshot(run)
    msg = fails(train_main, coop_args(shapes_root, run, "OPTIM.MAX_EPOCH", "4"))
    assert f'Cannot load checkpoint "{ckpt}" safely' in msg and "truncated" in msg
    assert f'write that epoch\'s file name (model.pth.tar-N) into "{run / "prompt_learner" / "checkpoint"}"' in msg
    assert snapshot(run) == before  # refused before any work: no log, no new checkpoint
    from clipadapt.checkpoints import CheckpointError
    with pytest.raises(CheckpointError, match="truncated"):
        trainer.resume_model_if_exist(str(run))


def test_resume_after_a_kill_between_two_models_goes_back_to_their_common_epoch(shapes_root, tmp_path):
    from clipadapt.engine import build_trainer
    out = tmp_path / "run"
    trainer = build_trainer(make_cfg("CoOp", COOP_CFG, shapes_root, out, SMALL[len(TINY_OPTS):] + [
        "TEST.FINAL_MODEL", "best_val"]))
    head = torch.nn.Linear(2, 2)
    trainer.register_model("head", head, torch.optim.SGD(head.parameters(), lr=0.1), None)
    trainer.save_model(0, str(out))
    trainer.save_model(0, str(out), val_result=42.0, model_name="model-best.pth.tar")
    ctx_epoch1 = trainer.prompt_learner.ctx.detach().clone()
    with torch.no_grad():
        trainer.prompt_learner.ctx.add_(1.0)
    trainer.save_model(1, str(out))
    # Killed after prompt_learner's epoch-2 checkpoint and before head's: their pointers differ.
    (out / "head" / "checkpoint").write_text("model.pth.tar-1\n")
    assert trainer.resume_model_if_exist(str(out)) == 1
    assert torch.equal(trainer.prompt_learner.ctx, ctx_epoch1)
    assert trainer.best_result == 42.0  # a worse later epoch will not replace model-best


# ---------------------------------------------------------------------------------------------
# 2. eval-only never trains

def test_eval_only_mistakes_fail_before_work_and_leave_the_run_untouched(coop_run, shapes_root, tmp_path, train_main):
    run_dir, _ = coop_run
    before = snapshot(run_dir)
    ev = tmp_path / "eval"
    missing = tmp_path / "no_such_run"
    cases = [
        (["--eval-only", "--model-dir", missing, "--load-epoch", "4"], [f'--model-dir "{missing}" does not exist']),
        (["--eval-only", "--model-dir", run_dir, "--load-epoch", "50"],
         ["has no model.pth.tar-50", "['model.pth.tar-1', 'model.pth.tar-2', 'model.pth.tar-3', 'model.pth.tar-4']"]),
        (["--eval-only", "--model-dir", run_dir],  # no --load-epoch: wants model-best, which CoOp does not keep
         ["has no model-best.pth.tar", "model.pth.tar-4", "Pass --load-epoch"]),
        (["--eval-only", "--model-dir", run_dir / "prompt_learner", "--load-epoch", "4"],
         ["is a model folder", f'its parent "{run_dir}"']),
        (["--eval-only", "--load-epoch", "4"], ["--load-epoch was given without --model-dir"]),
        # Forgetting --eval-only would have retrained from scratch into --output-dir.
        (["--model-dir", run_dir, "--load-epoch", "4"], ["only apply with --eval-only"]),
        # Evaluating into the training run's own folder (which would replace its record), even with a wrong epoch.
        (["--eval-only", "--model-dir", run_dir, "--load-epoch", "5"], ["holds a training run's record"]),
    ]
    for i, (extra, expected) in enumerate(cases):
        out = run_dir if i == len(cases) - 1 else ev
        msg = fails(train_main, coop_args(shapes_root, out, "OPTIM.MAX_EPOCH", "4", flags=extra))
        for text in expected:
            assert text in msg, (extra, msg)
    assert not ev.exists() and not missing.exists()
    assert snapshot(run_dir) == before


# ---------------------------------------------------------------------------------------------
# 3. bad data at training time

def test_unreadable_images_name_the_file_and_flag_or_are_skipped_with_a_count(shapes_root, tmp_path, train_main,
                                                                              capsys):
    from clipadapt.engine import build_dataset
    root = tmp_path / "data"
    shutil.copytree(shapes_root, root)
    # A fresh feature cache: features are keyed by image paths, so a warm cache would not read the images.
    cache = ["FEATURES.CACHE_DIR", str(tmp_path / "features")]
    args = coop_args(str(root), tmp_path / "out", "OPTIM.MAX_EPOCH", "1", *cache)
    train_x = build_dataset(make_cfg("CoOp", COOP_CFG, str(root), tmp_path / "x", SMALL[len(TINY_OPTS):])).train_x
    truncated, garbage = train_x[0].impath, train_x[5].impath
    with open(truncated, "r+b") as f:  # a half-written download
        f.truncate(os.path.getsize(truncated) // 2)
    with open(garbage, "wb") as f:  # not an image at all
        f.write(b"<html>503 Service Unavailable</html>")

    msg = fails(train_main, args)
    assert f'Cannot read image "{truncated}"' in msg and "truncated" in msg
    assert "set DATASET.SKIP_UNREADABLE True to skip unreadable images" in msg
    assert msg in (tmp_path / "out" / "log.txt").read_text()  # the log says why the run stopped
    capsys.readouterr()

    train_main(coop_args(str(root), tmp_path / "skip", "OPTIM.MAX_EPOCH", "1", "DATASET.SKIP_UNREADABLE", "True",
                         *cache))
    out = capsys.readouterr().out
    assert f"Skipped 2 unreadable image(s) in train_x (DATASET.SKIP_UNREADABLE), e.g. {truncated}" in out
    assert "# train_x  190" in out and "Finish training" in out and "* total: 192" in out


# ---------------------------------------------------------------------------------------------
# 4. bad config

def test_bad_config_fails_before_work_with_the_closest_valid_name(shapes_root, tmp_path, train_main):
    out = tmp_path / "out"
    shapes = ["--dataset-config-file", "configs/datasets/shapes.yaml"]
    coop = ["--trainer", "CoOp"] + shapes
    cases = [
        (coop, ["TRAINER.COOP.NCTX", "4"],
         'Unknown config key "TRAINER.COOP.NCTX" in the command-line options. Did you mean "TRAINER.COOP.N_CTX"?'),
        (["--trainer", "Coop"] + shapes, [], 'Unknown trainer "Coop". Did you mean "CoOp"? Registered: '),
        (shapes, [], f'"{REPO}/{COOP_CFG}" sets "TRAINER.COOP", a trainer\'s key, but no trainer is chosen: pass '
                     "--trainer NAME (registered: "),
        (["--trainer", "ZeroshotCLIP"] + shapes, [],
         f'"{REPO}/{COOP_CFG}" sets "TRAINER.COOP", a key of CoOp\'s node TRAINER.COOP, but the trainer is '
         "ZeroshotCLIP: use a config of ZeroshotCLIP (configs/trainers/ZeroshotCLIP/), or --trainer CoOp."),
        (coop, ["DATASET.NAME", "Shapse"], 'Unknown dataset "Shapse". Did you mean "Shapes"? Registered: '),
        (["--trainer", "CoOp", "--dataset-config-file", "configs/datasets/shapes.yml"], [],
         'configs/datasets/shapes.yml" does not exist'),
        (["--trainer", "CoOp"], [], "No dataset given: pass --dataset-config-file configs/datasets/<name>.yaml"),
        (coop, ["OPTIM.MAX_EPOCH", "ten"], "Type mismatch for OPTIM.MAX_EPOCH in the command-line options: it takes "
                                           "an int (like 50), got ten (str)."),
        (coop, ["INPUT.SIZE", "32"], "Type mismatch for INPUT.SIZE"),
        (coop, ["OPTIM.LR"], "KEY VALUE pairs; got an odd number"),
        (coop, ["OPTIM.MAX_EPOCH", "1", "--eval-only"], "['--eval-only'] come after the KEY VALUE config options"),
    ]
    for flags, opts, expected in cases:
        msg = fails(train_main, ["--root", shapes_root, "--output-dir", out, "--config-file", COOP_CFG, *flags]
                    + SMALL + opts)
        assert expected in msg, (flags, opts, msg)
        assert "Shapes" in msg or "Unknown dataset" not in msg
    assert not out.exists()

    # A whole number for a float key is what the user meant, not a type error.
    from clipadapt.config import build_config
    cfg = build_config("CoOp", opts=["OPTIM.LR", "1", "OPTIM.WEIGHT_DECAY", "0"])
    assert cfg.OPTIM.LR == 1.0 and cfg.OPTIM.WEIGHT_DECAY == 0.0 and isinstance(cfg.OPTIM.LR, float)


def test_unknown_dataset_through_train_py_is_one_line_without_traceback(shapes_root, tmp_path):
    proc = run_train(coop_args(shapes_root, tmp_path / "out", "DATASET.NAME", "eurosat"), check=False, env=ONE_THREAD)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        'error: Unknown dataset "eurosat". Did you mean "EuroSAT"? Registered: ' + proc.stderr.split("Registered: ")[1]
        .strip()]
    assert "Traceback" not in proc.stderr and "EuroSAT, " in proc.stderr and not (tmp_path / "out").exists()


def test_checkpoint_of_another_backbone_or_trainer_is_refused_before_work(coop_run, shapes_root, tmp_path,
                                                                          train_main):
    run_dir, _ = coop_run
    before = snapshot(run_dir)
    ckpt = run_dir / "prompt_learner" / "model.pth.tar-4"
    rn = ["MODEL.BACKBONE.NAME", "tiny-rn"]
    msg = fails(train_main, coop_args(shapes_root, tmp_path / "ev", *rn,
                                      flags=["--eval-only", "--model-dir", run_dir, "--load-epoch", "4"]))
    assert msg == (f'error: Checkpoint "{ckpt}" was saved by backbone "tiny-vit", but this run uses backbone '
                   '"tiny-rn". Use a run of the same backbone (--model-dir to evaluate, --output-dir to resume), '
                   "or change the config.")
    # Resuming into a run folder of another backbone (the same --output-dir, a changed config).
    msg = fails(train_main, coop_args(shapes_root, run_dir, "OPTIM.MAX_EPOCH", "5", *rn))
    assert 'backbone "tiny-vit"' in msg and '"tiny-rn"' in msg
    assert snapshot(run_dir) == before and not (tmp_path / "ev").exists()

    other = copy_run(run_dir, tmp_path / "other", epochs=(4,))
    state = load(ckpt)
    state["meta"]["trainer"] = "SHIP"
    torch.save(state, other / "prompt_learner" / "model.pth.tar-4")
    msg = fails(train_main, coop_args(shapes_root, tmp_path / "ev",
                                      flags=["--eval-only", "--model-dir", other, "--load-epoch", "4"]))
    assert 'was saved by trainer "SHIP", but this run uses trainer "CoOp"' in msg
    state["meta"]["trainer"], state["meta"]["format"], state["meta"]["clipadapt"] = "CoOp", 99, "9.0"
    torch.save(state, other / "prompt_learner" / "model.pth.tar-4")
    msg = fails(train_main, coop_args(shapes_root, tmp_path / "ev",
                                      flags=["--eval-only", "--model-dir", other, "--load-epoch", "4"]))
    assert "has format 99 (written by clipadapt 9.0)" in msg and "Upgrade clipadapt" in msg
    assert not (tmp_path / "ev").exists()

    # Same trainer and backbone, another shape: found once the model is built, still one line.
    msg = fails(train_main, coop_args(shapes_root, tmp_path / "ev", "TRAINER.COOP.CTX_INIT", "", "TRAINER.COOP.N_CTX",
                                      "8", flags=["--eval-only", "--model-dir", run_dir, "--load-epoch", "4"]))
    assert msg.startswith(f'error: Checkpoint "{ckpt}" does not fit model "prompt_learner" of this run: ')
    assert "size mismatch for ctx" in msg and msg in (tmp_path / "ev" / "log.txt").read_text()
    assert snapshot(run_dir) == before


# ---------------------------------------------------------------------------------------------
# 5. safe loading

class _RunsCode:
    """Unpickling this creates a folder: proof that the load ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_checkpoints_carry_trainer_backbone_config_and_versions(coop_run):
    import open_clip
    import clipadapt
    run_dir, _ = coop_run
    meta = load(run_dir / "prompt_learner" / "model.pth.tar-4")["meta"]
    assert meta["trainer"] == "CoOp" and meta["backbone"] == "tiny-vit" and meta["format"] == 1
    assert meta["clipadapt"] == clipadapt.__version__ and meta["torch"] == torch.__version__
    assert meta["open_clip"] == open_clip.__version__
    cfg = yaml.safe_load(meta["config"])
    assert cfg["TRAINER"]["NAME"] == "CoOp" and cfg["OPTIM"]["MAX_EPOCH"] == 4 and cfg["SEED"] == 1


def test_planted_code_pickles_are_refused_as_checkpoint_and_as_feature_cache(coop_run, shapes_root, tmp_path,
                                                                             train_main, capsys):
    from clipadapt.engine import build_trainer
    run_dir, _ = coop_run
    marker = tmp_path / "code_ran"
    evil = {"state_dict": {}, "epoch": 4, "payload": _RunsCode(marker)}
    run = copy_run(run_dir, tmp_path / "run", epochs=(3,), pointer=4)
    torch.save(evil, run / "prompt_learner" / "model.pth.tar-4")  # the file resume and eval-only read
    with open(run / "prompt_learner" / "model.pth.tar-2", "wb") as f:  # plain pickle, the pre-zip format
        import pickle
        pickle.dump(evil, f, protocol=2)

    for extra in (["--eval-only", "--model-dir", run, "--load-epoch", "4"],
                  ["--eval-only", "--model-dir", run, "--load-epoch", "2"]):
        msg = fails(train_main, coop_args(shapes_root, tmp_path / "ev", flags=extra))
        assert "safely (weights_only=True)" in msg and "pickled objects other than tensors" in msg
    msg = fails(train_main, coop_args(shapes_root, run, "OPTIM.MAX_EPOCH", "5"))  # resume
    assert f'Cannot load checkpoint "{run / "prompt_learner" / "model.pth.tar-4"}" safely' in msg
    assert not marker.exists()

    cache_dir = tmp_path / "features"
    trainer = build_trainer(make_cfg("CoOp", COOP_CFG, shapes_root, tmp_path / "out",
                                     SMALL[len(TINY_OPTS):] + ["FEATURES.CACHE_DIR", str(cache_dir)]))
    fresh = trainer.cached_features("test").clone()
    files = glob.glob(str(cache_dir / "*" / "*.pt"))
    assert len(files) == 1
    torch.save({"features": _RunsCode(marker)}, files[0])
    trainer._features.clear()
    capsys.readouterr()
    again = trainer.cached_features("test")
    assert f"Feature cache file {files[0]} is unreadable" in capsys.readouterr().out
    assert torch.equal(again, fresh) and not marker.exists()
    assert load(files[0])["features"].shape == fresh.shape  # replaced by the recomputed features


def _loads_in(path):
    tree = ast.parse(open(path).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                and isinstance(node.func.value, ast.Name) and node.func.value.id in ("torch", "pickle"):
            yield node


def test_every_torch_load_in_the_code_is_weights_only():
    sources = [osp.join(REPO, "train.py"), osp.join(REPO, "parse_test_res.py")]
    for top in ("clipadapt", "trainers", "datasets"):
        sources += glob.glob(osp.join(REPO, top, "**", "*.py"), recursive=True)
    found = 0
    for path in sources:
        for call in _loads_in(path):
            found += 1
            where = f"{osp.relpath(path, REPO)}:{call.lineno}"
            assert call.func.value.id == "torch", f"{where}: pickle.load can run code"
            flags = {k.arg: k.value for k in call.keywords}
            assert isinstance(flags.get("weights_only"), ast.Constant) and flags["weights_only"].value is True, where
    assert found >= 3  # checkpoints, feature cache, backbone files


# ---------------------------------------------------------------------------------------------
# 6. non-finite loss

def test_nan_loss_stops_naming_epoch_and_batch_and_keeps_the_last_checkpoint(shapes_root, tmp_path):
    from clipadapt.engine import build_trainer
    out = tmp_path / "run"
    trainer = build_trainer(make_cfg("CoOp", COOP_CFG, shapes_root, out, SMALL[len(TINY_OPTS):] + [
        "OPTIM.MAX_EPOCH", "3", "TRAIN.CHECKPOINT_FREQ", "1"]))
    good = out / "prompt_learner" / "model.pth.tar-1"
    seen = {}
    parse = trainer.parse_batch_train

    def corrupt_one_batch(batch):
        feats, label = parse(batch)
        if (trainer.epoch, trainer.batch_idx) == (1, 6):  # epoch 2, batch 7: a NaN feature
            seen["bytes"] = good.read_bytes()
            feats = feats.clone()
            feats[0, 0] = float("nan")
        return feats, label

    trainer.parse_batch_train = corrupt_one_batch
    with pytest.raises(FloatingPointError, match=r"Loss is infinite or NaN at epoch 2, batch 7\. Training stopped"):
        trainer.train()
    assert good.read_bytes() == seen["bytes"]
    assert sorted(os.listdir(out / "prompt_learner")) == ["checkpoint", "model.pth.tar-1"]
    assert (out / "prompt_learner" / "checkpoint").read_text().strip() == "model.pth.tar-1"
    assert torch.isfinite(trainer.prompt_learner.ctx).all()  # the bad step was not applied

    # Weights that went NaN without a NaN loss are not saved over the good checkpoint either.
    with torch.no_grad():
        trainer.prompt_learner.ctx[0, 0] = float("inf")
    with pytest.raises(FloatingPointError, match=r"Weights \['ctx'\] of \"prompt_learner\" became infinite or NaN "
                                                 r"by the end of epoch 2; not saving them"):
        trainer.save_model(1, str(out))
    assert sorted(os.listdir(out / "prompt_learner")) == ["checkpoint", "model.pth.tar-1"]


def test_diverging_lr_through_train_py_exits_with_the_place_and_keeps_epoch_one(coop_run, shapes_root, tmp_path,
                                                                               train_main):
    out = tmp_path / "run"
    msg = fails(train_main, coop_args(shapes_root, out, "OPTIM.MAX_EPOCH", "4", "TRAIN.CHECKPOINT_FREQ", "1",
                                      "OPTIM.LR", "1e30"))
    assert msg.startswith("error: Loss is infinite or NaN at epoch 2, batch ") and "Lower OPTIM.LR" in msg
    assert (out / "log.txt").read_text().rstrip().endswith(msg)
    assert sorted(os.listdir(out / "prompt_learner")) == ["checkpoint", "model.pth.tar-1"]
    # Epoch 1 runs at the warmup LR, so its weights equal the healthy run's.
    assert_same_weights(coop_run[0] / "prompt_learner" / "model.pth.tar-1", out / "prompt_learner" / "model.pth.tar-1",
                        scheduler=False)
