"""Silent wrong results made impossible, and faults that end in one line (docs/RELIABILITY.md, sections 7-8).

Each test plays one way a hostile or unlucky user breaks a run: two writers, a resume with another
config, damaged caches, checkpoints and images, leaking split files, nonsense config values, an
unseeded resume, diverging weights, full or read-only disks, relative paths in the scripts.
"""
import errno
import hashlib
import json
import os
import os.path as osp
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from yacs.config import CfgNode

from helpers import REPO, SHARED_DATA, TINY_OPTS, make_cfg

pytestmark = pytest.mark.usefixtures("one_torch_thread")
from helpers import COOP_CFG, SMALL, coop_args, fails, snapshot
from helpers import load_checkpoint as load

from clipadapt.data import DatasetError, read_split
from clipadapt.data.checks import check_split_leaks, read_manifest
from clipadapt.checkpoints import resume_config_problem
from clipadapt import locks
from clipadapt.locks import LOCK_NAME, RunLock


@pytest.fixture(scope="module")
def small_run(shapes_root, tmp_path_factory):
    """A finished 2-epoch CoOp run (a checkpoint per epoch), trained in this process; read-only to tests."""
    import train
    base = tmp_path_factory.mktemp("small_run")
    out = base / "run"
    args = coop_args(shapes_root, out, "OPTIM.MAX_EPOCH", "2", "TRAIN.CHECKPOINT_FREQ", "1",
                     "FEATURES.CACHE_DIR", str(base / "cache"))
    console = sys.stdout
    train.collect_env_info = lambda: "(not collected in tests)"
    try:
        train.main(train.parse_args([str(a) for a in args]))
    finally:
        if sys.stdout is not console:
            sys.stdout.close()
            sys.stdout = console
    return out, base / "cache"


def copy_of(run_dir, dest):
    shutil.copytree(run_dir, dest)
    return dest


# ---------------------------------------------------------------------------------------------
# 1. one writer per run folder

HOLD_LOCK = """
import sys, time
sys.path.insert(0, sys.argv[2])
from clipadapt.locks import RunLock
lock = RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_second_writer_is_refused_and_a_killed_writers_lock_is_not(shapes_root, tmp_path, train_main):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run), REPO], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        msg = fails(train_main, coop_args(shapes_root, run, "OPTIM.MAX_EPOCH", "1"))
        assert msg == (f'error: Run folder "{run}" is in use by process {holder.pid} on host {socket.gethostname()} '
                       f'(lock file "{run / LOCK_NAME}"). Two runs writing into one folder mix their logs and '
                       "checkpoints: wait for it to finish, or pass another --output-dir. If that process is gone, "
                       f"delete the lock file (it is taken over by itself {locks.STALE_AFTER_S:.0f} s after its "
                       "holder stops).")
        assert sorted(os.listdir(run)) == [LOCK_NAME]  # nothing written by the refused run
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The killed holder left its lock file; its pid is gone on this host, so it does not block the next run.
    assert (run / LOCK_NAME).read_text().split()[:2] == [socket.gethostname(), str(holder.pid)]
    with RunLock(str(run)):
        assert (run / LOCK_NAME).read_text().split()[:2] == [socket.gethostname(), str(os.getpid())]
        with pytest.raises(locks.RunLockedError, match=f"in use by process {os.getpid()} on host "):
            RunLock(str(run)).acquire()  # a second writer in this very process is refused too
    assert not (run / LOCK_NAME).exists()

    # A live process of this host, or another host's lock touched lately, holds it; another host's lock
    # whose heartbeat stopped is taken over (the lock file is the same primitive as the feature cache's).
    for owner in (f"{socket.gethostname()} {os.getppid()} token", "some-other-host 1234 token"):
        (run / LOCK_NAME).write_text(owner + "\n")
        with pytest.raises(locks.RunLockedError, match=f"in use by process {owner.split()[1]} on host "):
            RunLock(str(run)).acquire()
    old = time.time() - locks.STALE_AFTER_S - 5
    os.utime(run / LOCK_NAME, (old, old))
    RunLock(str(run)).acquire().release()
    assert not (run / LOCK_NAME).exists()


# ---------------------------------------------------------------------------------------------
# 2. resume only into the same config; leftover temp files go

def test_resume_with_another_dataset_or_config_is_refused_naming_the_keys(small_run, shapes_root, tmp_path,
                                                                          train_main):
    run_dir, _ = small_run
    before = snapshot(run_dir)
    # The same run folder with the EuroSAT dataset config (the backbone options are the run's).
    msg = fails(train_main, ["--root", shapes_root, "--seed", "1", "--trainer", "CoOp", "--dataset-config-file",
                             "configs/datasets/eurosat.yaml", "--config-file", COOP_CFG, "--output-dir", run_dir]
                + SMALL + ["OPTIM.MAX_EPOCH", "2"])
    assert msg.startswith(f'error: Checkpoint "{run_dir}/prompt_learner/model.pth.tar-2" was trained with another '
                          "config (") and "DATASET.NAME 'Shapes' -> 'EuroSAT'" in msg
    msg = fails(train_main, coop_args(shapes_root, run_dir, "OPTIM.MAX_EPOCH", "3", "DATASET.NUM_SHOTS", "2"))
    assert "2 key(s) differ" in msg and "DATASET.NUM_SHOTS 4 -> 2" in msg and "OPTIM.MAX_EPOCH 2 -> 3" in msg
    assert "Pass another --output-dir for the new config" in msg
    assert snapshot(run_dir) == before

    # Where things are and how much is printed may change; what is learned may not.
    saved = load(run_dir / "prompt_learner" / "model.pth.tar-2")["meta"]["config"]
    cfg = make_cfg("CoOp", COOP_CFG, "/elsewhere", tmp_path / "x", SMALL[len(TINY_OPTS):] + [
        "OPTIM.MAX_EPOCH", "2", "TRAIN.PRINT_FREQ", "1", "FEATURES.CACHE_DIR", "/other/cache"])
    assert resume_config_problem({"meta": {"config": saved}}, cfg, "ckpt") is None

    # In-process resume (no train.py) is refused the same way.
    from clipadapt.engine import build_trainer
    from clipadapt.checkpoints import CheckpointError
    run = copy_of(run_dir, tmp_path / "run")
    trainer = build_trainer(make_cfg("CoOp", COOP_CFG, shapes_root, run, SMALL[len(TINY_OPTS):] + [
        "OPTIM.MAX_EPOCH", "2", "OPTIM.LR", "0.5"]))
    with pytest.raises(CheckpointError, match=r"OPTIM.LR 0.002 -> 0.5"):
        trainer.resume_model_if_exist(str(run))


def test_leftover_temp_files_of_killed_writes_are_removed_on_the_next_run(small_run, shapes_root, tmp_path,
                                                                          train_main, capsys):
    run = copy_of(small_run[0], tmp_path / "run")
    leftovers = [run / "prompt_learner" / ".tmp-k1ll3d.part", run / "prompt_learner" / "checkpoint.tmp"]
    for path in leftovers:
        path.write_bytes(b"PK\x03\x04 half a file")
    capsys.readouterr()
    train_main(coop_args(shapes_root, run, "OPTIM.MAX_EPOCH", "2", "TRAIN.CHECKPOINT_FREQ", "1",
                         "FEATURES.CACHE_DIR", str(small_run[1])))
    out = capsys.readouterr().out
    assert "Removed 2 temporary file(s) left by an interrupted write" in out
    assert not any(p.exists() for p in leftovers) and not (run / LOCK_NAME).exists()
    assert sorted(os.listdir(run / "prompt_learner")) == ["checkpoint", "model.pth.tar-1", "model.pth.tar-2"]


# ---------------------------------------------------------------------------------------------
# 3. feature cache: checksum, shape, finite values; unwritable cache

def _trainer(shapes_root, tmp_path, cache_dir, *opts):
    from clipadapt.engine import build_trainer
    return build_trainer(make_cfg("CoOp", COOP_CFG, shapes_root, tmp_path / "out", SMALL[len(TINY_OPTS):] + [
        "FEATURES.CACHE_DIR", str(cache_dir), *opts]))


def _one_cache_file(cache_dir):
    files = [osp.join(d, f) for d, _, fs in os.walk(cache_dir) for f in fs if f.endswith(".pt")]
    assert len(files) == 1, files
    return files[0]


def test_damaged_feature_cache_files_are_named_and_recomputed(shapes_root, tmp_path, capsys):
    cache_dir = tmp_path / "features"
    trainer = _trainer(shapes_root, tmp_path, cache_dir)
    fresh = trainer.cached_features("test").clone()
    path = _one_cache_file(cache_dir)
    entry = load(path)
    assert entry["shape"] == list(fresh.shape)
    assert entry["sha256"] == hashlib.sha256(f"{tuple(fresh.shape)}:{fresh.dtype}".encode()
                                             + fresh.numpy().tobytes()).hexdigest()

    def reload():
        trainer._features.clear()
        capsys.readouterr()
        again = trainer.cached_features("test")
        return again, capsys.readouterr().out

    # Bytes flipped in place inside the stored tensor (the zip container does not notice).
    raw = bytearray(open(path, "rb").read())
    at = bytes(raw).index(fresh[3].numpy().tobytes())
    raw[at + 5] ^= 0xFF
    open(path, "wb").write(bytes(raw))
    again, out = reload()
    assert f"Feature cache file {path} is damaged (its bytes changed since it was written (checksum mismatch)); " \
           "recomputing it" in out
    assert torch.equal(again, fresh) and torch.equal(load(path)["features"], fresh)

    # NaN rows written with a matching checksum (a writer that stored what a broken encoder gave).
    from clipadapt.features import features_checksum
    nan = fresh.clone()
    nan[[2, 7]] = float("nan")
    torch.save({"features": nan, "shape": list(nan.shape), "sha256": features_checksum(nan), "meta": {}}, path)
    again, out = reload()
    assert "is damaged (2 row(s) hold NaN or inf, e.g. row 2); recomputing it" in out and torch.equal(again, fresh)

    # Rows cut off, and a file of an older clipadapt without a checksum.
    torch.save({"features": fresh[:5], "shape": list(fresh.shape), "sha256": features_checksum(fresh[:5])}, path)
    again, out = reload()
    assert f"its features have shape (5, {fresh.shape[1]}), but it was written with {tuple(fresh.shape)}" in out
    torch.save({"features": fresh}, path)
    again, out = reload()
    assert "it has no checksum (written by an older clipadapt)" in out and torch.equal(again, fresh)

    # An encoder that returns NaN: an error naming what was being encoded, and nothing cached.
    os.remove(path)
    trainer._features.clear()
    trainer._image_encoder = lambda images: torch.full((len(images), fresh.shape[1]), float("nan"))
    with pytest.raises(FloatingPointError, match=r"returned NaN or inf features for 192 image\(s\) \(dataset Shapes, "
                                                 r"split test, .*\), e.g. row 0; they are not cached"):
        trainer.cached_features("test")
    assert not osp.exists(path)


def test_unwritable_or_full_feature_cache_computes_online_and_leftovers_go(shapes_root, tmp_path, capsys,
                                                                           monkeypatch):
    import clipadapt.features as features
    cache_dir = tmp_path / "features"
    trainer = _trainer(shapes_root, tmp_path, cache_dir)
    fresh = trainer.cached_features("test").clone()
    path = _one_cache_file(cache_dir)
    key = osp.basename(path)[:-3]

    # A killed writer's temp file of this key is removed when the key is next written.
    os.remove(path)
    leftover = osp.join(osp.dirname(path), f".tmp-{key}-k1ll3d.part")
    open(leftover, "wb").write(b"half")
    trainer._features.clear()
    capsys.readouterr()
    assert torch.equal(trainer.cached_features("test"), fresh)
    assert f"Removed {leftover}, left by an interrupted feature-cache write" in capsys.readouterr().out
    assert not osp.exists(leftover) and osp.exists(path)

    # Full disk while writing: a note, the features computed now are used, no temp file stays.
    os.remove(path)
    real_save = features.atomic_torch_save

    def full_disk(obj, fpath, prefix):
        real_save(obj, fpath + ".never", prefix)  # exercise the real temp-file path first
        os.remove(fpath + ".never")
        raise OSError(errno.ENOSPC, "No space left on device", fpath)
    monkeypatch.setattr(features, "atomic_torch_save", full_disk)
    trainer._features.clear()
    capsys.readouterr()
    assert torch.equal(trainer.cached_features("test"), fresh)
    assert f"Note: could not write the feature cache file {path} (No space left on device); features are " \
           "computed without caching them from now on in this run (this note is not repeated)" \
           in capsys.readouterr().out
    # nothing but (at most) the key's lock file: no temp file, no half-written cache file
    assert [f for f in os.listdir(osp.dirname(path)) if f != f"{key}.pt.lock"] == []
    # Said once: the next epoch's features are computed without another note or another write.
    trainer._features.clear()
    assert torch.equal(trainer.cached_features("test"), fresh)
    assert "Note:" not in capsys.readouterr().out and not osp.exists(path)
    features._UNWRITABLE.clear()  # a new run tries the cache again

    # A cache folder that cannot be written at all (read-only mount): computed online.
    monkeypatch.setattr(features.os, "makedirs", lambda *a, **k: (_ for _ in ()).throw(
        OSError(errno.EROFS, "Read-only file system")))
    trainer._features.clear()
    capsys.readouterr()
    assert torch.equal(trainer.cached_features("test"), fresh)
    assert f"Note: feature cache {cache_dir} cannot be written (Read-only file system); features are computed " \
           "without caching them from now on in this run (this note is not repeated)" in capsys.readouterr().out
    features._UNWRITABLE.clear()
    assert not osp.exists(path)


# ---------------------------------------------------------------------------------------------
# 4. checkpoints: tensors checked on load, backbone weights identified by their values

def test_overwritten_checkpoint_tensors_are_refused_on_load(small_run, shapes_root, tmp_path, train_main):
    run = copy_of(small_run[0], tmp_path / "run")
    ckpt = run / "prompt_learner" / "model.pth.tar-2"
    state = load(ckpt)
    for value, expected in ((float("nan"), "['ctx'] infinite or NaN"),
                            (3e21, "['ctx'] beyond |w| = 1e+06 (max 3e+21)")):
        state["state_dict"]["ctx"][1, 2] = value
        torch.save(state, ckpt)
        for args in (coop_args(shapes_root, tmp_path / "ev", flags=["--eval-only", "--model-dir", run,
                                                                    "--load-epoch", "2"]),
                     coop_args(shapes_root, run, "OPTIM.MAX_EPOCH", "2")):  # resume
            msg = fails(train_main, args)
            assert msg.startswith(f'error: Checkpoint "{ckpt}" holds weights that no training run saves: '
                                  f"{expected}. The file was damaged or overwritten"), msg


def test_checkpoint_refuses_other_weights_of_the_same_backbone_name(shapes_root, tmp_path, train_main):
    import open_clip
    from clipadapt.clip.loader import register_model_configs
    register_model_configs()
    files = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = open_clip.create_model("tiny-vit", pretrained=None)
        files.append(tmp_path / f"tiny_{seed}.pt")
        torch.save({"arch": "tiny-vit", "state_dict": model.state_dict()}, files[-1])
    weights = ["MODEL.BACKBONE.PRETRAINED", "True", "MODEL.BACKBONE.PRETRAINED_TAG"]
    run = tmp_path / "run"
    cache = ["FEATURES.CACHE_DIR", str(tmp_path / "cache")]
    train_main(coop_args(shapes_root, run, "OPTIM.MAX_EPOCH", "1", *weights, files[0], *cache))
    meta = load(run / "prompt_learner" / "model.pth.tar-1")["meta"]
    assert meta["backbone"] == "tiny-vit" and meta["backbone_weights"].startswith("float32:")

    evaluate = ["--eval-only", "--model-dir", run, "--load-epoch", "1"]
    train_main(coop_args(shapes_root, tmp_path / "ev_same", *weights, files[0], *cache, flags=evaluate))
    # Other weights under another file name, then the original file overwritten in place.
    for tag in (files[1], files[0]):
        if tag == files[0]:
            shutil.copy(files[1], files[0])
        msg = fails(train_main, coop_args(shapes_root, tmp_path / "ev", *weights, tag, *cache, flags=evaluate))
        assert msg.startswith(f'error: Checkpoint "{run}/prompt_learner/model.pth.tar-1" was trained on other weights '
                              f'of backbone "tiny-vit" (fingerprint {meta["backbone_weights"]}; this run\'s weights '
                              "are float32:"), msg


# ---------------------------------------------------------------------------------------------
# 5. split files that leak

def _split_file(tmp_path, split):
    path = tmp_path / "split.json"
    path.write_text(json.dumps(split))
    return str(path)


def test_leaking_split_files_are_refused_naming_the_entries(tmp_path):
    def base():
        return {"train": [["a/1.jpg", 0, "cat"], ["b/1.jpg", 1, "dog"], ["a/2.jpg", 0, "cat"], ["b/2.jpg", 1, "dog"]],
                "val": [["a/3.jpg", 0, "cat"], ["b/3.jpg", 1, "dog"]],
                "test": [["a/4.jpg", 0, "cat"], ["b/4.jpg", 1, "dog"]]}
    cases = [
        (("train", ["a/./1.jpg", 0, "cat"]), "image 'a/./1.jpg' is listed twice in 'train' (train[0] and train[4])"),
        (("test", ["b/1.jpg", 1, "dog"]), "image 'b/1.jpg' is in 'train' (train[1]) and in 'test' (test[2]): an "
                                          "image trained on would also be evaluated"),
        (("test", ["a/3.jpg", 0, "cat"]), "image 'a/3.jpg' is in both 'val' (val[0]) and 'test' (test[2])"),
        (("val", ["a/2.jpg", 1, "dog"]), "image 'a/2.jpg' is listed under two labels: train[2] has label 0, entry "
                                         "val[2] = ['a/2.jpg', 1, 'dog'] has label 1"),
        (("test", ["../../etc/passwd", 0, "cat"]), "entry test[2] = ['../../etc/passwd', 0, 'cat'] points outside "
                                                   "the dataset's image folder"),
        (("train", ["a/../../other/x.jpg", 0, "cat"]), "entry train[4] = ['a/../../other/x.jpg', 0, 'cat'] points "
                                                       "outside"),
        (("val", ["/data/imagenet/x.jpg", 1, "dog"]), "entry val[2] = ['/data/imagenet/x.jpg', 1, 'dog'] points "
                                                      "outside"),
    ]
    for (key, entry), expected in cases:
        split = base()
        split[key].append(entry)
        path = _split_file(tmp_path, split)
        with pytest.raises(DatasetError) as err:
            read_split(path, str(tmp_path / "images"))  # refused before any image is looked for
        assert str(err.value).startswith(f"{path}: ") and expected in str(err.value), str(err.value)
    # A path that climbs but stays inside is the same image as its normal form: still fine alone.
    check_split_leaks({"train": [("a/../a/1.jpg", 0, "cat")], "test": [("a/2.jpg", 0, "cat")]}, "f")


def test_out_of_place_label_names_its_entry_not_an_empty_class(tmp_path):
    split = {"train": [["a/1.jpg", 0, "cat"], ["b/1.jpg", 1, "dog"]], "val": [["a/2.jpg", 0, "cat"]],
             "test": [["a/3.jpg", 0, "cat"], ["b/3.jpg", 2, "dog"]]}  # a typo: dog is 1
    path = _split_file(tmp_path, split)
    with pytest.raises(DatasetError) as err:
        read_split(path, str(tmp_path))
    assert str(err.value) == (f"{path}: label 2 is out of place in 1 entry(ies) (test[1] = ['b/3.jpg', 2, 'dog']): "
                              "their classname 'dog' is label 1 elsewhere, and label 2 has no training images. Fix the "
                              "label in those entries.")


@pytest.mark.skipif(not osp.isdir(osp.join(SHARED_DATA, "splits")), reason="CoOp's split files are not at "
                    f"{SHARED_DATA}/splits (project test data, not shipped)")
def test_coop_published_split_files_pass_the_leak_checks():
    from clipadapt.data.splits import load_json_file, parse_entries
    names = sorted(f for f in os.listdir(osp.join(SHARED_DATA, "splits")) if f.startswith("split_zhou_"))
    assert len(names) == 7
    for name in names:
        path = osp.join(SHARED_DATA, "splits", name)
        check_split_leaks(parse_entries(load_json_file(path, ("train", "val", "test")), path), path)


def test_train_py_ends_a_bad_split_with_one_line(shapes_root, tmp_path, train_main):
    root = tmp_path / "data"
    shutil.copytree(shapes_root, root)
    split_path = root / "shapes" / "split_zhou_Shapes.json"
    split = json.loads(split_path.read_text())
    split["test"].append(list(split["train"][3]))
    split_path.write_text(json.dumps(split))
    msg = fails(train_main, coop_args(str(root), tmp_path / "out", "OPTIM.MAX_EPOCH", "1"))
    assert msg.startswith(f"error: {split_path}: image ") and "an image trained on would also be evaluated" in msg
    assert "\n" not in msg and msg in (tmp_path / "out" / "log.txt").read_text()


# ---------------------------------------------------------------------------------------------
# 6. nonsense config values; more shots than a class has

def test_config_values_that_give_a_meaningless_run_are_refused_before_work(shapes_root, tmp_path, train_main):
    out = tmp_path / "out"
    cases = [
        (["OPTIM.MAX_EPOCH", "0"], "OPTIM.MAX_EPOCH is 0: the run would train nothing and report the untrained "
                                   "model's accuracy as its result. Set OPTIM.MAX_EPOCH to 1 or more, or pass "
                                   "--eval-only to evaluate without training."),
        (["OPTIM.MAX_EPOCH", "-3"], "OPTIM.MAX_EPOCH is -3: "),
        (["OPTIM.LR", "-0.002"], "OPTIM.LR is -0.002: a learning rate must be positive"),
        (["OPTIM.LR", "0"], "OPTIM.LR is 0.0: a learning rate must be positive"),
        (["DATALOADER.TRAIN_X.BATCH_SIZE", "-4"], "DATALOADER.TRAIN_X.BATCH_SIZE is -4: a batch needs at least 1 "
                                                  "item."),
        (["DATALOADER.TEST.BATCH_SIZE", "0"], "DATALOADER.TEST.BATCH_SIZE is 0: "),
    ]
    for opts, expected in cases:
        msg = fails(train_main, coop_args(shapes_root, out, *opts))
        assert msg.startswith("error: " + expected), msg
    assert not out.exists()  # before any output folder, log or model


def test_more_shots_than_a_class_has_is_said_once(shapes_root, capsys):
    from helpers import build_dataset
    ds = build_dataset(shapes_root, "Shapes", shots=10, seed=1)
    out = capsys.readouterr().out
    assert out.count("Note: DATASET.NUM_SHOTS is 10") == 1
    assert "but 48 of 48 classes have fewer training images (the fewest: class 0 ('red circle') with 8); those " \
           "classes use all their images" in out
    assert len(ds.train_x) == 48 * 8
    build_dataset(shapes_root, "Shapes", shots=8, seed=1)
    assert "NUM_SHOTS" not in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# 7. SEED < 0: the run folder keeps its few-shot sample

def test_unseeded_run_reuses_its_fewshot_sample_on_resume(shapes_root, tmp_path, capsys):
    from clipadapt.engine import DATASET_REGISTRY

    def dataset(output_dir):
        cfg = CfgNode()
        cfg.DATASET = CfgNode({"ROOT": shapes_root, "NAME": "Shapes", "NUM_SHOTS": 2, "SUBSAMPLE_CLASSES": "all"})
        cfg.SEED = -1
        cfg.OUTPUT_DIR = str(output_dir)
        return DATASET_REGISTRY.get("Shapes")(cfg)

    def shots(ds):
        return [d.impath for d in ds.train_x], [d.impath for d in ds.val]

    first = shots(dataset(tmp_path / "run"))
    sample = tmp_path / "run" / "fewshot_sample.json"
    assert f"SEED < 0: drew an unseeded few-shot sample; kept in {sample}" in capsys.readouterr().out
    saved = json.loads(sample.read_text())
    assert saved["seed"] == -1 and len(saved["train"]) == 96 and len(saved["val"]) == 96
    assert shots(dataset(tmp_path / "run")) == first  # the resumed run
    assert f"SEED < 0: reusing the few-shot sample this run drew, from {sample}" in capsys.readouterr().out
    assert shots(dataset(tmp_path / "other")) != first  # another run draws anew (2 of 8 per class, 48 classes)

    saved["train"] = saved["train"][:-1]  # a sample that no longer fits: refused, not silently redrawn
    sample.write_text(json.dumps(saved))
    with pytest.raises(DatasetError, match="does not fit the current data .*class 47 has 1 train images there, "
                                           "expected 2.*Pass another --output-dir, or a fixed --seed"):
        dataset(tmp_path / "run")


# ---------------------------------------------------------------------------------------------
# 8. weights that diverge with a finite loss

def test_diverging_weights_with_a_finite_loss_stop_before_saving_or_evaluating(shapes_root, tmp_path, train_main):
    out = tmp_path / "run"
    # LR 1e4: ctx reaches ~1e10 in epoch 2 while the loss stays finite (1e6 would end in a NaN loss here).
    msg = fails(train_main, coop_args(shapes_root, out, "OPTIM.MAX_EPOCH", "3", "TRAIN.CHECKPOINT_FREQ", "1",
                                      "OPTIM.LR", "1e4"))
    assert msg.startswith("error: Weights ['ctx'] of \"prompt_learner\" diverged by the end of epoch 2 (max |w| = ")
    assert "beyond 1e+06) although the loss stayed finite; training stopped. The last saved checkpoint is left as " \
           "it was. Lower OPTIM.LR or check the inputs." in msg
    log = (out / "log.txt").read_text()
    assert log.rstrip().endswith(msg) and "* accuracy" not in log
    assert sorted(os.listdir(out / "prompt_learner")) == ["checkpoint", "model.pth.tar-1"]


# ---------------------------------------------------------------------------------------------
# 9. images that decode but are damaged: MANIFEST.sha256

def test_manifest_finds_an_image_that_decodes_but_changed(shapes_root, tmp_path, capsys):
    from PIL import Image

    root = tmp_path / "data"
    shutil.copytree(shapes_root, root)
    folder = root / "shapes"
    if shutil.which("sha256sum") is None:
        pytest.skip("sha256sum (coreutils) is needed to write the manifest independently")
    listing = subprocess.run("find ./images -type f | sort | xargs sha256sum", shell=True, cwd=folder, check=True,
                             capture_output=True, text=True).stdout
    (folder / "MANIFEST.sha256").write_text(listing)

    def build(verify):
        cfg = CfgNode()
        cfg.DATASET = CfgNode({"ROOT": str(root), "NAME": "Shapes", "NUM_SHOTS": 4, "SUBSAMPLE_CLASSES": "all",
                               "VERIFY_MANIFEST": verify})
        cfg.SEED = 1
        from clipadapt.engine import DATASET_REGISTRY
        return DATASET_REGISTRY.get("Shapes")(cfg)

    ds = build(True)
    used = len({d.impath for d in ds.train_x + ds.val + ds.test})
    assert f"Verified {used} image(s) against {folder / 'MANIFEST.sha256'}" in capsys.readouterr().out
    damaged = ds.test[5].impath
    with Image.open(damaged) as img:  # one pixel changed: still a valid image
        img = img.convert("RGB")
        img.putpixel((3, 3), (255, 0, 255))
        img.save(damaged)
    with pytest.raises(DatasetError) as err:
        build(True)
    assert str(err.value) == (f"1 of {used} image(s) differ from {folder / 'MANIFEST.sha256'}, e.g. {damaged}: "
                              "damaged or replaced since the manifest was written (they may still decode). Re-download "
                              "or re-extract them, or set DATASET.VERIFY_MANIFEST False to use them as they are.")
    build(False)  # the option is off by default
    os.remove(folder / "MANIFEST.sha256")
    build(True)
    assert "DATASET.VERIFY_MANIFEST is set but" in capsys.readouterr().out


@pytest.mark.skipif(not osp.isfile(osp.join(SHARED_DATA, "eurosat", "MANIFEST.sha256")),
                    reason=f"the shared EuroSAT is not at {SHARED_DATA}/eurosat")
def test_real_eurosat_manifest_is_read_in_sha256sum_format():
    digests = read_manifest(osp.join(SHARED_DATA, "eurosat", "MANIFEST.sha256"))
    images = [k for k in digests if k.startswith("2750/")]
    assert len(images) == 27000 and "2750/AnnualCrop/AnnualCrop_1.jpg" in digests
    path = osp.join(SHARED_DATA, "eurosat", "2750", "AnnualCrop", "AnnualCrop_1.jpg")
    assert digests["2750/AnnualCrop/AnnualCrop_1.jpg"] == hashlib.sha256(open(path, "rb").read()).hexdigest()


# ---------------------------------------------------------------------------------------------
# one-line errors: full disk, relative script paths

def test_full_disk_while_saving_a_checkpoint_is_one_line_and_leaves_no_temp_file(shapes_root, tmp_path, train_main,
                                                                                  monkeypatch):
    import clipadapt.engine.builtin.utils as utils
    real_fdopen = utils.os.fdopen

    class FullDisk:  # what the kernel does when the disk fills: write() fails with ENOSPC part-way
        def __init__(self, f):
            self.f, self.written = f, 0

        def write(self, data):
            self.written += len(data)
            if self.written > 512:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()
    # The disk fills after run.json (text) is written, while the checkpoint (binary) is.
    monkeypatch.setattr(utils.os, "fdopen",
                        lambda fd, mode: FullDisk(real_fdopen(fd, mode)) if "b" in mode else real_fdopen(fd, mode))
    out = tmp_path / "run"
    msg = fails(train_main, coop_args(shapes_root, out, "OPTIM.MAX_EPOCH", "1",
                                      "FEATURES.CACHE_DIR", str(tmp_path / "cache")))
    ckpt = out / "prompt_learner" / "model.pth.tar-1"
    assert msg == (f'error: Cannot write output "{ckpt}": No space left on device. Files saved before are left as '
                   "they were; free space on that disk or pass another --output-dir, then run the same command again "
                   "to resume.")
    assert (out / "log.txt").read_text().rstrip().endswith(msg)
    assert os.listdir(out / "prompt_learner") == []  # no half file, no temp file


def test_relative_data_and_output_in_scripts_resolve_against_the_callers_directory(tmp_path):
    show = f'source "{REPO}/scripts/common/env.sh"; echo "$PWD|$DATA|$OUTPUT"'
    env = dict(os.environ, DATA="mydata", OUTPUT="runs/out")
    line = subprocess.run(["bash", "-c", show], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert line.stdout.strip() == f"{REPO}|{tmp_path}/mydata|{tmp_path}/runs/out"
    env = {k: v for k, v in os.environ.items() if k not in ("DATA", "OUTPUT")}
    line = subprocess.run(["bash", "-c", show], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert line.stdout.strip() == f"{REPO}|./data|output"  # the defaults are the repository's


def test_output_folder_that_cannot_be_created_is_one_line(shapes_root, tmp_path, train_main, monkeypatch):
    import clipadapt.locks as locks
    out = tmp_path / "readonly" / "run"

    def read_only(path, exist_ok=False):
        raise OSError(errno.EROFS, "Read-only file system", str(path))
    monkeypatch.setattr(locks.os, "makedirs", read_only)
    msg = fails(train_main, coop_args(shapes_root, out, "OPTIM.MAX_EPOCH", "1"))
    assert msg == (f'error: Cannot write the run folder "{out}": Read-only file system. Files saved before are left '
                   "as they were; make it writable or pass another --output-dir, then run the same command again to "
                   "resume.")


class _MakesFolder:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_pickle_payload_as_backbone_file_is_one_line_without_weights_only_advice(shapes_root, tmp_path, train_main):
    marker = tmp_path / "code_ran"
    payload = tmp_path / "weights.pt"
    torch.save({"state_dict": _MakesFolder(marker)}, payload)
    out = tmp_path / "run"
    msg = fails(train_main, coop_args(shapes_root, out, "OPTIM.MAX_EPOCH", "1", "MODEL.BACKBONE.PRETRAINED", "True",
                                      "MODEL.BACKBONE.PRETRAINED_TAG", payload))
    assert msg.startswith(f'error: "{payload}" is not a weights file: its pickle refers to posix.mkdir')
    assert "weights_only=False" not in msg and "\n" not in msg and not marker.exists()
    assert (out / "log.txt").read_text().rstrip().endswith(msg)
