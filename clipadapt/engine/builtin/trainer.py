"""TrainerBase / SimpleTrainer / TrainerX with Dassl's template methods, log lines and output layout."""
import datetime
import os
import os.path as osp
import random
import time
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from ...reliability import (MAX_ABS_WEIGHT, backbone_weights_problem, checkpoint_tensor_problem, resume_config_problem,
                           weight_problems)
from ...atomic import atomic_write_text
from .utils import AverageMeter, MetricMeter, atomic_torch_save, load_checkpoint, mkdir_if_missing

# Bumped when the checkpoint layout changes; a checkpoint from a newer layout is refused by name.
CHECKPOINT_FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used by this run (damaged, unsafe, or from another model)."""


def checkpoint_mismatch(meta, expected, fpath):
    """Why a checkpoint's `meta` cannot serve a run described by `expected` (None when it can)."""
    meta = meta or {}
    if meta.get("format", 1) > CHECKPOINT_FORMAT:
        return (f'Checkpoint "{fpath}" has format {meta["format"]} (written by clipadapt {meta.get("clipadapt", "?")}); '
                f"this clipadapt reads format {CHECKPOINT_FORMAT} and older. Upgrade clipadapt.")
    for key in ("trainer", "backbone"):
        if meta.get(key) is not None and expected.get(key) is not None and meta[key] != expected[key]:
            return (f'Checkpoint "{fpath}" was saved by {key} "{meta[key]}", but this run uses {key} '
                    f'"{expected[key]}". Use a run of the same {key} (--model-dir to evaluate, --output-dir to '
                    "resume), or change the config.")
    return None


def load_training_checkpoint(fpath, expected, hint="", verbose=True):
    """A checkpoint loaded safely (weights_only) that can serve a run described by `expected` (trainer,
    backbone, ...); CheckpointError naming the file and the problem otherwise, `hint` appended."""
    try:
        checkpoint = load_checkpoint(fpath, verbose=verbose)
    except (FileNotFoundError, RuntimeError) as exc:
        raise CheckpointError(f"{exc}{hint}") from exc
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f'"{fpath}" is not a training checkpoint (it has no state_dict).{hint}')
    problem = (checkpoint_mismatch(checkpoint.get("meta"), expected, fpath)
               or backbone_weights_problem(checkpoint.get("meta"), expected, fpath)
               or checkpoint_tensor_problem(checkpoint, fpath))
    if problem:
        raise CheckpointError(problem)
    return checkpoint


def non_persistent_buffer_names(model):
    """Qualified names of the buffers `model` registered with persistent=False."""
    return {f"{prefix}.{b}" if prefix else b for prefix, module in model.named_modules()
            for b in module._non_persistent_buffers_set}


def check_weights(state_dict, name, epoch, action):
    """FloatingPointError when weights went non-finite or diverged (finite but absurd: a finite loss
    does not prove a sane model), naming the weights, the epoch and what is not done with them."""
    problems = weight_problems(state_dict)
    when = f"by the end of epoch {epoch + 1}"
    if problems["non-finite"]:
        what = f'Weights {problems["non-finite"]} of "{name}" became infinite or NaN {when}'
    elif problems["absurd"]:
        peak = max(p for _, p in problems["absurd"])
        what = (f'Weights {[n for n, _ in problems["absurd"]]} of "{name}" diverged {when} (max |w| = {peak:.3g}, '
                f"beyond {MAX_ABS_WEIGHT:g}) although the loss stayed finite")
    else:
        return
    raise FloatingPointError(f"{what}; {action}. The last saved checkpoint is left as it was. Lower OPTIM.LR or "
                             "check the inputs.")


def load_state_without_derived(model, state_dict, fpath, name):
    """Load `state_dict` into `model` strictly, after dropping entries that name its non-persistent
    buffers (rebuilt by the model itself); CheckpointError naming `fpath` and `name` on a mismatch."""
    derived = non_persistent_buffer_names(model)
    state_dict = OrderedDict((k, v) for k, v in state_dict.items() if k not in derived)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as exc:
        raise CheckpointError(f'Checkpoint "{fpath}" does not fit model "{name}" of this run: {exc}') from exc


def resume_pointers(directory):
    """{model name: checkpoint file} named by the `<directory>/<model>/checkpoint` pointer files."""
    pointers = {}
    if osp.isdir(directory):
        for name in sorted(os.listdir(directory)):
            pointer = osp.join(directory, name, "checkpoint")
            if osp.isfile(pointer):
                with open(pointer) as f:
                    pointers[name] = osp.join(directory, name, f.read().strip())
    return pointers


class CheckpointMixin:
    """Checkpoint save/resume/load: atomic writes, weights_only loads, identity checks, RNG state;
    and the non-finite loss check that keeps a bad step out of them.

    Mixed into our trainers on top of either engine, so Dassl's fragile `load_model` never runs.
    """

    def checkpoint_meta(self):
        """Identity stored with every checkpoint; subclasses add what makes a checkpoint compatible."""
        from ... import __version__
        return {"trainer": type(self).__name__, "format": CHECKPOINT_FORMAT, "clipadapt": __version__,
                "torch": str(torch.__version__)}

    def detect_anomaly(self, loss):
        """Stop at the first non-finite loss, naming where (here on both engines: Dassl's names neither)."""
        if not torch.isfinite(loss).all():
            where = f" at epoch {self.epoch + 1}, batch {getattr(self, 'batch_idx', 0) + 1}" if hasattr(self, "epoch") else ""
            raise FloatingPointError(
                f"Loss is infinite or NaN{where}. Training stopped; the last saved checkpoint is left as it was. "
                "Lower OPTIM.LR or check the inputs."
            )

    def rng_state(self):
        return {
            "torch": torch.get_rng_state(),
            "python": _to_plain(random.getstate()),
            "numpy": _to_plain(np.random.get_state()),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }

    def set_rng_state(self, state):
        torch.set_rng_state(state["torch"])
        cuda = state.get("cuda")
        if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        random.setstate(_to_tuple(state["python"]))
        np_state = state["numpy"]
        np.random.set_state((np_state[0], np.asarray(np_state[1], dtype=np.uint32), *np_state[2:]))

    def save_model(self, epoch, directory, is_best=False, val_result=None, model_name=""):
        names = self.get_model_names()
        states = {}
        for name in names:  # check every model before writing any: a bad state never replaces a good one
            model_dict = self._models[name].state_dict()
            states[name] = OrderedDict((k[7:] if k.startswith("module.") else k, v) for k, v in model_dict.items())
            check_weights(states[name], name, epoch, "not saving them")
        for name in names:
            model_dict = states[name]
            optim, sched = self._optims[name], self._scheds[name]
            checkpoint = {
                "state_dict": model_dict,
                "epoch": epoch + 1,
                "optimizer": optim.state_dict() if optim is not None else None,
                "scheduler": sched.state_dict() if sched is not None else None,
                "val_result": val_result,
                "meta": self.checkpoint_meta(),
                "rng": self.rng_state(),
            }
            fname = "model-best.pth.tar" if is_best else (model_name or f"model.pth.tar-{epoch + 1}")
            fpath = osp.join(directory, name, fname)
            atomic_torch_save(checkpoint, fpath)
            atomic_write_text(osp.join(directory, name, "checkpoint"), f"{fname}\n")
            print(f"Checkpoint saved to {fpath}")

    def resume_model_if_exist(self, directory):
        names = self.get_model_names()
        pointers = resume_pointers(directory)
        if not all(name in pointers for name in names):
            print("No checkpoint found, train from scratch")
            return 0
        print(f'Found checkpoint at {directory} (will resume training)')
        files = {name: pointers[name] for name in names}
        epochs = {name: _epoch_of(fpath) for name, fpath in files.items()}
        if len(set(epochs.values())) > 1 and None not in epochs.values():
            # Killed between saving one model and the next: go back to the last epoch all models saved.
            common = min(epochs.values())
            files = {name: osp.join(directory, name, f"model.pth.tar-{common}") for name in names}
            print(f"The models' last checkpoints differ ({epochs}); resuming all from epoch {common}")
        start_epoch = 0
        for name in names:
            fpath = files[name]
            checkpoint = self._load_usable(fpath, hint=(
                f' Training would resume from it. To resume from an earlier epoch, write that epoch\'s file name '
                f'(model.pth.tar-N) into "{osp.join(directory, name, "checkpoint")}"; or train into a new --output-dir.'))
            problem = resume_config_problem(checkpoint, self.cfg, fpath)  # another dataset or config: refuse
            if problem:
                raise CheckpointError(problem)
            self.load_state_into(name, checkpoint["state_dict"], fpath)
            if self._optims[name] is not None and checkpoint.get("optimizer") is not None:
                self._optims[name].load_state_dict(checkpoint["optimizer"])
            if self._scheds[name] is not None and checkpoint.get("scheduler") is not None:
                self._scheds[name].load_state_dict(checkpoint["scheduler"])
            start_epoch = checkpoint["epoch"]
            if checkpoint.get("rng") is not None:
                self.set_rng_state(checkpoint["rng"])
            print(f'Loaded model weights from "{fpath}" (epoch = {start_epoch})')
        best = osp.join(directory, names[0], "model-best.pth.tar")
        if osp.exists(best):  # so a worse epoch after the restart does not replace the best model
            val_result = self._load_usable(best).get("val_result")
            if isinstance(val_result, (int, float)):
                self.best_result = val_result
        return start_epoch

    def _load_usable(self, fpath, hint=""):
        """Load a checkpoint safely and check that it belongs to this trainer and backbone."""
        return load_training_checkpoint(fpath, self.checkpoint_meta(), hint)

    def load_state_into(self, name, state_dict, fpath):
        """Load a checkpoint's tensors into a registered model (strict; subclasses may relax).

        Entries naming buffers the model does not save (persistent=False: the class-token embeddings
        `token_prefix` / `token_suffix` that CoOp's checkpoints carry) are dropped, as CoOp's
        load_model does: they are rebuilt from this run's class names."""
        load_state_without_derived(self._models[name], state_dict, fpath, name)

    def load_model(self, directory, epoch=None):
        if not directory:
            print("Note that load_model() is skipped as no pretrained model is given")
            return
        if not osp.isdir(directory):
            raise FileNotFoundError(
                f'--model-dir "{directory}" does not exist. Pass the output folder of the training run '
                "(the one holding the model sub-folder with model.pth.tar-N files)."
            )
        names = self.get_model_names()
        model_file = "model-best.pth.tar" if epoch is None else f"model.pth.tar-{epoch}"
        for name in names:
            model_path = osp.join(directory, name, model_file)
            if not osp.exists(model_path):
                sub = osp.join(directory, name)
                found = sorted(f for f in os.listdir(sub) if f.startswith("model")) if osp.isdir(sub) else []
                where = (f"that folder has {found}" if found else
                         f'"{sub}" has no checkpoints' + ("" if osp.isdir(sub) else " (folder missing)"))
                raise FileNotFoundError(
                    f'No checkpoint "{model_path}": {where}. Use --load-epoch with one of the saved epochs '
                    "(model.pth.tar-N), or check --model-dir."
                )
            checkpoint = self._load_usable(model_path)
            self.load_state_into(name, checkpoint["state_dict"], model_path)
            val_result = checkpoint.get("val_result")
            extra = f", val_result = {val_result:.1f}" if isinstance(val_result, (int, float)) else ""
            print(f'Load {model_path} to {name} (epoch = {checkpoint["epoch"]}{extra})')



class TrainerBase(CheckpointMixin):
    def __init__(self):
        self._models = OrderedDict()
        self._optims = OrderedDict()
        self._scheds = OrderedDict()
        self._writer = None

    def register_model(self, name="model", model=None, optim=None, sched=None):
        if self.__dict__.get("_models") is None:
            raise AttributeError("Cannot assign model before super().__init__() call")
        if name in self._models:
            raise KeyError(f'A model named "{name}" is already registered')
        self._models[name] = model
        self._optims[name] = optim
        self._scheds[name] = sched

    def get_model_names(self, names=None):
        names_real = list(self._models.keys())
        if names is not None:
            names = [names] if isinstance(names, str) else names
            for name in names:
                if name not in names_real:
                    raise KeyError(f'Model "{name}" is not registered; registered: {names_real}')
            return names
        return names_real

    # ----- modes and updates -------------------------------------------------------------------
    def set_model_mode(self, mode="train", names=None):
        for name in self.get_model_names(names):
            if mode == "train":
                self._models[name].train()
            else:
                self._models[name].eval()

    def update_lr(self, names=None):
        for name in self.get_model_names(names):
            if self._scheds[name] is not None:
                self._scheds[name].step()

    def init_writer(self, log_dir):
        """TensorBoard event files in `log_dir` (OUTPUT_DIR/tensorboard), as Dassl writes them."""
        if self.__dict__.get("_writer") is None:
            from torch.utils.tensorboard import SummaryWriter
            self._writer = SummaryWriter(log_dir=log_dir)

    def close_writer(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def write_scalar(self, tag, scalar_value, global_step=None):
        if self._writer is not None:  # only training runs open a writer (Dassl's rule)
            self._writer.add_scalar(tag, scalar_value, global_step)

    def train(self, start_epoch, max_epoch):
        self.start_epoch = start_epoch
        self.max_epoch = max_epoch
        self.before_train()
        for self.epoch in range(self.start_epoch, self.max_epoch):
            self.before_epoch()
            self.run_epoch()
            self.after_epoch()
        self.after_train()

    def before_train(self):
        pass

    def after_train(self):
        pass

    def before_epoch(self):
        pass

    def after_epoch(self):
        pass

    def run_epoch(self):
        raise NotImplementedError

    def test(self):
        raise NotImplementedError

    def parse_batch_train(self, batch):
        raise NotImplementedError

    def parse_batch_test(self, batch):
        raise NotImplementedError

    def forward_backward(self, batch):
        raise NotImplementedError

    def model_inference(self, input):
        raise NotImplementedError

    def model_zero_grad(self, names=None):
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                self._optims[name].zero_grad()

    def model_backward(self, loss):
        self.detect_anomaly(loss)
        loss.backward()

    def model_update(self, names=None):
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                self._optims[name].step()

    def model_backward_and_update(self, loss, names=None):
        self.model_zero_grad(names)
        self.model_backward(loss)
        self.model_update(names)


class SimpleTrainer(TrainerBase):
    def __init__(self, cfg):
        super().__init__()
        self.check_cfg(cfg)
        if torch.cuda.is_available() and cfg.USE_CUDA:
            self.device = torch.device("cuda")
        else:
            self.device = torch.device("cpu")
        self.start_epoch = self.epoch = 0
        self.max_epoch = cfg.OPTIM.MAX_EPOCH
        self.output_dir = cfg.OUTPUT_DIR
        self.cfg = cfg
        self.build_data_loader()
        self.build_model()
        from .. import build_evaluator
        self.evaluator = build_evaluator(cfg, lab2cname=self.lab2cname)
        self.best_result = -np.inf

    def check_cfg(self, cfg):
        pass

    def build_data_loader(self):
        from .data_manager import DataManager
        dm = DataManager(self.cfg)
        self.train_loader_x = dm.train_loader_x
        self.train_loader_u = dm.train_loader_u
        self.val_loader = dm.val_loader
        self.test_loader = dm.test_loader
        self.num_classes = dm.num_classes
        self.num_source_domains = dm.num_source_domains
        self.lab2cname = dm.lab2cname
        self.dm = dm

    def build_model(self):
        raise NotImplementedError("A trainer must build its model in build_model()")

    def train(self):
        super().train(self.start_epoch, self.max_epoch)

    def before_train(self):
        directory = self.cfg.OUTPUT_DIR
        if self.cfg.RESUME:
            directory = self.cfg.RESUME
        self.start_epoch = self.resume_model_if_exist(directory)
        writer_dir = osp.join(self.output_dir, "tensorboard")
        mkdir_if_missing(writer_dir)
        self.init_writer(writer_dir)
        self.time_start = time.time()

    def after_train(self):
        print("Finish training")
        do_test = not self.cfg.TEST.NO_TEST
        if do_test:
            if self.cfg.TEST.FINAL_MODEL == "best_val":
                print("Deploy the model with the best val performance")
                self.load_model(self.output_dir)
            else:
                print("Deploy the last-epoch model")
            self.test()
        elapsed = round(time.time() - self.time_start)
        print(f"Elapsed: {datetime.timedelta(seconds=elapsed)}")
        self.close_writer()

    def after_epoch(self):
        last_epoch = (self.epoch + 1) == self.max_epoch
        do_test = not self.cfg.TEST.NO_TEST
        meet_checkpoint_freq = (
            (self.epoch + 1) % self.cfg.TRAIN.CHECKPOINT_FREQ == 0 if self.cfg.TRAIN.CHECKPOINT_FREQ > 0 else False
        )
        if do_test and self.cfg.TEST.FINAL_MODEL == "best_val":
            curr_result = self.test(split="val")
            is_best = curr_result > self.best_result
            if is_best:
                self.best_result = curr_result
                self.save_model(self.epoch, self.output_dir, val_result=curr_result, model_name="model-best.pth.tar")
        if meet_checkpoint_freq or last_epoch:
            self.save_model(self.epoch, self.output_dir)

    @torch.no_grad()
    def test(self, split=None):
        self.set_model_mode("eval")
        self.evaluator.reset()
        if split is None:
            split = self.cfg.TEST.SPLIT
        if split == "val" and self.val_loader is not None:
            data_loader = self.val_loader
        else:
            split = "test"
            data_loader = self.test_loader
        print(f"Evaluate on the *{split}* set")
        for batch in tqdm(data_loader, mininterval=2.0):
            input, label = self.parse_batch_test(batch)
            output = self.model_inference(input)
            self.evaluator.process(output, label)
        results = self.evaluator.evaluate()
        for k, v in results.items():
            self.write_scalar(f"{split}/{k}", v, self.epoch)
        return list(results.values())[0]

    def model_inference(self, input):
        return self.model(input)

    def parse_batch_test(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device)

    def get_current_lr(self, names=None):
        name = self.get_model_names(names)[0]
        return self._optims[name].param_groups[0]["lr"]


class TrainerX(SimpleTrainer):
    """Trains on labelled data only (the CLIP trainers' base)."""

    def run_epoch(self):
        self.set_model_mode("train")
        losses = MetricMeter()
        batch_time = AverageMeter()
        data_time = AverageMeter()
        self.num_batches = len(self.train_loader_x)
        end = time.time()
        for self.batch_idx, batch in enumerate(self.train_loader_x):
            data_time.update(time.time() - end)
            loss_summary = self.forward_backward(batch)
            batch_time.update(time.time() - end)
            losses.update(loss_summary)
            meet_freq = (self.batch_idx + 1) % self.cfg.TRAIN.PRINT_FREQ == 0
            only_few_batches = self.num_batches < self.cfg.TRAIN.PRINT_FREQ
            if meet_freq or only_few_batches:
                nb_remain = self.num_batches - self.batch_idx - 1
                nb_remain += (self.max_epoch - self.epoch - 1) * self.num_batches
                eta = str(datetime.timedelta(seconds=int(batch_time.avg * nb_remain)))
                print(
                    f"epoch [{self.epoch + 1}/{self.max_epoch}] batch [{self.batch_idx + 1}/{self.num_batches}] "
                    f"time {batch_time.val:.3f} ({batch_time.avg:.3f}) data {data_time.val:.3f} ({data_time.avg:.3f}) "
                    f"{losses} lr {self.get_current_lr():.4e} eta {eta}"
                )
            n_iter = self.epoch * self.num_batches + self.batch_idx
            for name, meter in losses.meters.items():
                self.write_scalar("train/" + name, meter.avg, n_iter)
            self.write_scalar("train/lr", self.get_current_lr(), n_iter)
            end = time.time()

    def parse_batch_train(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device), batch["domain"].to(self.device)


def _epoch_of(fpath):
    """N of a "model.pth.tar-N" file name, else None."""
    base = osp.basename(fpath)
    prefix = "model.pth.tar-"
    return int(base[len(prefix):]) if base.startswith(prefix) and base[len(prefix):].isdigit() else None


def _to_plain(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (tuple, list)):
        return [_to_plain(o) for o in obj]
    return obj


def _to_tuple(obj):
    if isinstance(obj, list):
        return tuple(_to_tuple(o) for o in obj)
    return obj
