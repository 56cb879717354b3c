"""Reliability, third round (docs/RELIABILITY.md section 9): a model is never chosen on the test set,
an untrained model is not a result, "0 shots" is not "all images", and written files honour the umask."""
import os
import re
import stat

import pytest

from helpers import make_cfg
from helpers import coop_args, fails

from clipadapt.atomic import atomic_write_json, atomic_write_text
from clipadapt.config import ConfigError


def test_best_val_without_a_real_validation_split_is_refused_before_training(shapes_root, tmp_path):
    from clipadapt.engine import build_trainer
    trainer = build_trainer(make_cfg("CoOp", "configs/trainers/CoOp/vit_b16_ctxv1.yaml", shapes_root, tmp_path,
                                     ["TEST.FINAL_MODEL", "best_val", "DATASET.NUM_SHOTS", "1"]))
    trainer.check_model_selection()  # Shapes has a validation split of its own: fine
    trainer.dm.dataset.val_is_test = True  # as ImageNet (CoOp's layout evaluates on val = test)
    with pytest.raises(ConfigError, match=r"^TEST.FINAL_MODEL best_val selects the model on the validation split, "
                                          r"and Shapes has its test split as its validation split: the model would "
                                          r"be chosen on the test set\. Use TEST.FINAL_MODEL last_step\.$"):
        trainer.train()
    trainer.dm.dataset.val_is_test = False
    trainer.dm.dataset._val = []
    with pytest.raises(ConfigError, match="and Shapes has no validation split"):
        trainer.check_model_selection()
    assert not (tmp_path / "prompt_learner").exists()  # refused before a single step


def test_eval_only_without_model_dir_is_refused_for_a_trainer_that_learns(shapes_root, tmp_path, train_main):
    out = tmp_path / "run"
    message = fails(train_main, coop_args(shapes_root, out, flags=("--eval-only",)))
    assert message == ("error: --eval-only without --model-dir would evaluate an untrained CoOp (its initial "
                       "weights) and record it as a result. Pass --model-dir with the training run's output folder "
                       "(and --load-epoch N), or leave out --eval-only to train.")
    assert not (out / "result.json").exists()


def test_zero_shots_is_refused_with_the_value_for_all_images(shapes_root, tmp_path, train_main):
    for shots in ("0", "-2"):
        message = fails(train_main, coop_args(shapes_root, tmp_path / f"run{shots}", "DATASET.NUM_SHOTS", shots))
        assert message == (f"error: DATASET.NUM_SHOTS is {shots}: give the number of training images per class "
                           "(1 or more), or -1 for all of them.")


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_honour_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_text(str(tmp_path / "a.txt"), "x")
        atomic_write_json({"a": 1}, str(tmp_path / "b.json"))
    finally:
        os.umask(old)
    for name in ("a.txt", "b.json"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == mode


@pytest.mark.parametrize("content,problem", [
    ('{"results": {"test": {"accuracy": 71.', "not a readable JSON object"),  # truncated by a crash
    ('{"results": {"test": {"accuracy": 250.0}}}', "its accuracy is 250.0, not a percentage"),
    ('{"results": {"test": {"accuracy": NaN}}}', "its accuracy is nan"),
    ('{"results": {"test": {"accuracy": "71.2"}}}', "its accuracy is '71.2'"),
    ('{"results": {"test": {"error": 28.8}}}', "no accuracy for split 'test'"),
    ('[1, 2]', "not a readable JSON object"),
])
def test_a_damaged_result_is_neither_finished_nor_averaged(tmp_path, content, problem):
    from pathlib import Path

    from clipadapt import results, runs
    run = tmp_path / "seed1"
    run.mkdir()
    (run / runs.RUN_FILE).write_text("{}")
    (run / runs.RESULT_FILE).write_text(content)
    assert not runs.is_finished(str(run))  # its command runs the run again
    with pytest.raises(results.ResultError, match=rf"result\.json is damaged \(.*{re.escape(problem)}"):
        results.read_run(Path(run), ["accuracy"])
    (run / runs.RESULT_FILE).write_text('{"results": {"test": {"accuracy": 71.2, "error": 28.8}}}')
    assert runs.is_finished(str(run)) and results.read_run(Path(run), ["accuracy"]) == {"accuracy": 71.2}


def test_an_evaluation_never_writes_over_a_training_runs_record(shapes_root, tmp_path, train_main):
    import json
    run = tmp_path / "run"
    run.mkdir()
    record = {"eval_only": False, "trainer": "CoOp", "config_digest": "abc"}
    (run / "run.json").write_text(json.dumps(record))
    (run / "result.json").write_text('{"results": {"test": {"accuracy": 50.0}}}')
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    message = fails(train_main, coop_args(shapes_root, run, flags=("--eval-only", "--model-dir", str(run))))
    assert message == (f'error: --output-dir "{run}" holds a training run\'s record (run.json, result.json, '
                       "checkpoints); an evaluation written there would replace it. Write the evaluation into a "
                       f"folder of its own, e.g. --output-dir {run}_eval.")
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_an_empty_feature_cache_lock_is_broken_not_waited_on_forever(tmp_path, capsys):
    """A writer that died between creating the lock and writing its owner left a 0-byte file."""
    import time

    from clipadapt.locks import EMPTY_GRACE_S, file_lock
    lock = tmp_path / "features" / "key.lock"
    lock.parent.mkdir()
    lock.write_text("")
    old = time.time() - EMPTY_GRACE_S - 5
    os.utime(lock, (old, old))
    start = time.time()
    with file_lock(str(lock), poll=0.05):
        assert lock.read_text().split()[1] == str(os.getpid())
    assert time.time() - start < 5 and "Broke the stale feature-cache lock" in capsys.readouterr().out
    assert not lock.exists()


def test_a_waiter_says_whom_it_waits_for(tmp_path, capsys):
    import threading

    from clipadapt.locks import file_lock
    lock = str(tmp_path / "key.lock")
    held, release = threading.Event(), threading.Event()

    def holder():
        with file_lock(lock):
            held.set()
            release.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(5)
    threading.Timer(0.3, release.set).start()
    with file_lock(lock, poll=0.05):
        pass
    thread.join()
    out = capsys.readouterr().out
    assert out.count("Waiting for the feature-cache lock") == 1 and f"held by process {os.getpid()} on " in out


def test_a_lock_whose_owner_cannot_be_written_is_removed(tmp_path, monkeypatch):
    from clipadapt import locks
    lock = tmp_path / "key.lock"
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, fd, mode):
            self.f = real_fdopen(fd, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(locks.os, "fdopen", FullDisk)
    with pytest.raises(OSError, match="No space left"):
        with locks.file_lock(str(lock)):
            pass
    assert not lock.exists()


def test_a_table_averages_only_runs_that_are_what_their_folder_says(tmp_path, capsys):
    import json

    from clipadapt import results, runs
    layout = tmp_path / "base2new" / "test_new" / "eurosat" / "shots_16" / "CoOp" / "vit_b16"

    def run(folder, seed, accuracy, overrides=None):
        path = layout.parent / folder / f"seed{seed}" if folder != "vit_b16" else layout / f"seed{seed}"
        path.mkdir(parents=True)
        record = {"trainer": "CoOp", "seed": seed, "shots": 16, "config_name": "vit_b16", "overrides": overrides or {},
                  "tag": runs.override_tag(overrides or {})}
        (path / runs.RUN_FILE).write_text(json.dumps(record))
        (path / runs.RESULT_FILE).write_text(json.dumps({"results": {"test": {"accuracy": accuracy}}}))
        return path

    run("vit_b16", 1, 60.0)
    run("vit_b16", 2, 62.0)
    copied = layout / "seed3"  # `cp -r seed1 seed3`: its run.json still says seed 1
    import shutil
    shutil.copytree(layout / "seed1", copied)
    by_hand = run("vit_b16", 4, 90.0, overrides={"OPTIM.LR": 0.1})  # trained with other options into the folder
    table = results.build_base2new_table(tmp_path, trainers=["CoOp"])
    row = [r for r in table.rows if r[0] == "eurosat"][0]
    assert row[table.headers.index("CoOp New")].text() == "61.00"  # seeds 1 and 2 only
    err = capsys.readouterr().err
    assert f"skipping {copied}: its run.json records seed 1 (the folder says '3')" in err
    assert f"skipping {by_hand}: its run.json records options 'lr0.1' (the folder says 'vit_b16')" in err


def test_the_planner_knows_which_trainers_learn_as_their_classes_say():
    import trainers  # noqa: F401
    from clipadapt.engine import TRAINER_REGISTRY
    from clipadapt.runs import NON_LEARNING_TRAINERS
    names = TRAINER_REGISTRY.registered_names()
    assert {n for n in names if not TRAINER_REGISTRY.get(n).LEARNS} == NON_LEARNING_TRAINERS


@pytest.mark.parametrize("text,message", [
    ("- a\n- b\n", 'holds a list, not a mapping of keys: write it as "KEY: value" lines'),
    ("hello\n", 'holds a bare string, not a mapping of keys'),
    ("OPTIM:\n  LR: [0.1\n", "is not valid YAML at line 3, column 1: expected ',' or ']', but got '<stream end>'. "
                             "Fix the file"),
    ("OPTIM: !!python/object/apply:os.system ['echo PWNED']\n",
     "line 1 uses the YAML tag !!python/object/apply:os.system: a config holds plain values"),
])
def test_a_config_file_that_is_not_a_mapping_is_one_line_and_nothing_is_written(shapes_root, tmp_path, train_main,
                                                                                  text, message):
    bad = tmp_path / "method.yaml"
    bad.write_text(text)
    out = tmp_path / "run"
    args = coop_args(shapes_root, out)
    args[args.index("--config-file") + 1] = str(bad)
    error = fails(train_main, args)
    assert error.startswith(f'error: Config file "{bad}" ') and message in error and "\n" not in error
    assert not out.exists()


@pytest.mark.parametrize("key,value,message", [
    ("DATASET.SUBSAMPLE_CLASSES", "Base", "DATASET.SUBSAMPLE_CLASSES is 'Base': it must be one of all, base, new, "
                                          "gzsl (did you mean 'base'?)."),
    ("TRAINER.COOP.PREC", "fp8", "TRAINER.COOP.PREC is 'fp8': it must be one of fp32, fp16, bf16, amp."),
    ("TRAINER.COOP.CLASS_TOKEN_POSITION", "midle", "TRAINER.COOP.CLASS_TOKEN_POSITION is 'midle': it must be one of "
                                                   "end, middle, front (did you mean 'middle'?)."),
    ("OPTIM.LR_SCHEDULER", "cosin", "OPTIM.LR_SCHEDULER is 'cosin': it must be one of single_step, multi_step, cosine "
                                    "(did you mean 'cosine'?)."),
    ("TEST.FINAL_MODEL", "best", "TEST.FINAL_MODEL is 'best': it must be one of last_step, best_val"),
])
def test_enumerated_keys_are_checked_before_the_run_folder_is_touched(shapes_root, tmp_path, train_main, key, value,
                                                                      message):
    out = tmp_path / "run"
    error = fails(train_main, coop_args(shapes_root, out, key, value))
    assert error.startswith(f"error: {message}")
    assert not out.exists()  # no phantom unfinished run.json


def test_a_trainers_own_modes_are_checked_before_the_run_folder(shapes_root, tmp_path, train_main):
    out = tmp_path / "run"
    args = coop_args(shapes_root, out, "TRAINER.SHIP.STAGE2", "cooop")
    args[args.index("--trainer") + 1] = "SHIP"
    args[args.index("--config-file") + 1] = "configs/trainers/SHIP/shapes.yaml"
    assert fails(train_main, args) == ("error: TRAINER.SHIP.STAGE2 is 'cooop': it must be one of coop, clip_adapter, "
                                       "tip_adapter_f (did you mean 'coop'?).")
    assert not out.exists()


def test_a_symlink_loop_in_a_class_folder_is_named(tmp_path):
    from clipadapt.data import listdir_nohidden
    from clipadapt.data.errors import DatasetError
    folder = tmp_path / "cat"
    folder.mkdir()
    (folder / "1.jpg").write_bytes(b"x")
    os.symlink("b.jpg", folder / "a.jpg")
    os.symlink("a.jpg", folder / "b.jpg")
    with pytest.raises(DatasetError, match=rf'^"{re.escape(str(folder))}/[ab]\.jpg" cannot be read as a file or a '
                                           r"folder \(Too many levels of symbolic links\): a symbolic link that points "
                                           "at itself"):
        listdir_nohidden(str(folder), files_only=True)


def test_a_stray_negative_label_is_not_counted_as_a_class(tmp_path):
    from clipadapt.data.errors import DatasetError
    from clipadapt.data.splits import parse_entries
    data = {"train": [["a/1.jpg", 0, "a"], ["b/1.jpg", 1, "b"]], "val": [], "test": [["a/2.jpg", -1, "a"]]}
    with pytest.raises(DatasetError, match=r"label -1 is out of range; the file's other entries have 2 classes, so "
                                           r"labels must be 0\.\.1\.$"):
        parse_entries(data, "split.json")


@pytest.mark.parametrize("record,problem", [
    ("[1, 2]", "it is not a readable JSON object"),
    ('{"trainer": 5, "seed": 1}', "its 'trainer' is 5, not a string"),
    ('{"trainer": "CoOp", "seed": "1"}', "its 'seed' is '1', not a whole number"),
    ('{"trainer": "CoOp", "config": [1]}', "its 'config' is [1], not a JSON object"),
])
def test_a_run_json_of_the_wrong_shape_is_damaged_not_trusted(tmp_path, capsys, record, problem):
    from clipadapt import results, runs
    layout = tmp_path / "base2new" / "test_new" / "eurosat" / "shots_16" / "CoOp" / "vit_b16"
    good, crafted = layout / "seed1", layout / "seed2"
    for seed, path in ((1, good), (2, crafted)):
        path.mkdir(parents=True)
        (path / runs.RUN_FILE).write_text(f'{{"trainer": "CoOp", "seed": {seed}, "shots": 16}}')
        (path / runs.RESULT_FILE).write_text(f'{{"results": {{"test": {{"accuracy": {50 + seed * 10}}}}}}}')
    (crafted / runs.RUN_FILE).write_text(record)
    assert runs.is_finished(str(good)) and not runs.is_finished(str(crafted))  # its command runs it again
    table = results.build_base2new_table(tmp_path, trainers=["CoOp"])
    assert [r for r in table.rows if r[0] == "eurosat"][0][table.headers.index("CoOp New")].text() == "60.00"
    assert (f"skipping {crafted}: its run.json is damaged ({problem}), so nothing says which run this is"
            in capsys.readouterr().err)
    (good / "log.txt").write_text("Finish training\n=> result\n* accuracy: 60.0%\n")
    assert results.parse_directory(str(layout)).values == [60.0]  # CoOp's per-directory summary skips it too
    assert "its run.json is damaged" in capsys.readouterr().err


def test_a_dataset_whose_runs_all_failed_is_a_row_marked_missing(tmp_path, capsys):
    from clipadapt import results, runs
    for dataset, accuracy in (("eurosat", 60.0), ("dtd", 250.0)):  # dtd's only run is damaged
        for split in ("train_base", "test_new"):
            path = tmp_path / "base2new" / split / dataset / "shots_16" / "CoOp" / "vit_b16" / "seed1"
            path.mkdir(parents=True)
            (path / runs.RESULT_FILE).write_text(f'{{"results": {{"test": {{"accuracy": {accuracy}}}}}}}')
    table = results.build_base2new_table(tmp_path, trainers=["CoOp"], reference=results.load_reference())
    labels = [r[0] for r in table.rows]
    assert labels == ["dtd (missing)", "eurosat", "Average (2 of 11)"]
    assert [c.text() for c in table.rows[0][1:4]] == ["-", "-", "-"]
    average = table.rows[-1]
    assert average[table.headers.index("CoOp Base")].text() == f"60.00{results.PARTIAL_MARK}"
    assert average[table.headers.index("CoOp (paper) Base")].text() == "82.69‡"  # the paper's over all 11, not ours
    notes = "\n".join(table.footnotes)
    assert "(missing): no run of dtd could be read" in notes
    assert "Average (2 of 11): the mean over the protocol's datasets in the table; imagenet, caltech101" in notes
    assert "not comparable with a published Average" in notes
