"""What a CoOp user's first week hits (issue 25): Ctrl-C, the weights named in the log."""
import json
import time

import pytest

from helpers import coop_args, load_checkpoint


def test_ctrl_c_is_one_line_in_the_log_and_the_same_command_resumes(shapes_root, tmp_path, train_main, monkeypatch):
    import trainers.coop
    run = tmp_path / "run"
    args = coop_args(shapes_root, run, "OPTIM.MAX_EPOCH", "3", "TRAIN.CHECKPOINT_FREQ", "1")
    real_epoch = trainers.coop.CoOp.run_epoch

    def interrupted_in_epoch_two(self):
        if self.epoch == 1:
            raise KeyboardInterrupt
        time.sleep(1.5)  # the first segment's time, which the result must still count
        return real_epoch(self)
    monkeypatch.setattr(trainers.coop.CoOp, "run_epoch", interrupted_in_epoch_two)
    with pytest.raises(SystemExit) as exc:
        train_main(args)
    assert exc.value.code == 130
    log = (run / "log.txt").read_text()
    last = log.rstrip().splitlines()[-1]
    assert last.startswith("interrupted at epoch 2 of 3 (") and last.endswith(
        "the checkpoints written so far are kept: rerun the same command to resume")
    assert "Traceback" not in log and "Loaded CLIP tiny-vit with random weights" in log
    assert (run / "prompt_learner" / "model.pth.tar-1").exists() and not (run / "result.json").exists()
    monkeypatch.setattr(trainers.coop.CoOp, "run_epoch", real_epoch)
    second_started = time.time()
    train_main(args)
    second = time.time() - second_started
    log = (run / "log.txt").read_text()
    assert "=== Resuming the training run" in log and (run / "result.json").exists()
    # result.json's wall time counts the first segment (to its checkpoint) and the second
    first = load_checkpoint(run / "prompt_learner" / "model.pth.tar-1")["wall_time_s"]
    total = json.loads((run / "result.json").read_text())["wall_time_s"]
    assert first >= 1.5 and total == pytest.approx(first + second, abs=1.0)


def test_an_epochs_view_is_extracted_before_its_first_batch_is_timed(shapes_root, tmp_path, train_main, monkeypatch):
    """Extraction has its own progress bar and rate; the training lines' time and ETA start after it."""
    import trainers.coop
    from clipadapt.trainer import ClipTrainer
    events = []
    real_features, real_step = ClipTrainer.cached_features, trainers.coop.CoOp.forward_backward

    def features(self, split, view=None):
        if split == "train_x" and (split, view) not in self._features:
            events.append(("extract", view))
        return real_features(self, split, view)

    def step(self, batch):
        events.append(("batch", self.epoch))
        return real_step(self, batch)
    monkeypatch.setattr(ClipTrainer, "cached_features", features)
    monkeypatch.setattr(trainers.coop.CoOp, "forward_backward", step)
    train_main(coop_args(shapes_root, tmp_path / "run", "OPTIM.MAX_EPOCH", "2"))
    first_batches = [events.index(("batch", epoch)) for epoch in (0, 1)]
    extracted = [events.index(("extract", view)) for view in (0, 1)]
    assert all(e < b for e, b in zip(extracted, first_batches)), events
    assert events.index(("extract", 1)) > first_batches[0]  # one view per epoch, each before its batches
