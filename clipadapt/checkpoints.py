"""Our checkpoints, used with either engine: the safe loader (weights_only, Dassl's pickled
schedulers skipped), the training checkpoint's identity checks, and CheckpointMixin (atomic
save, resume from the pointer files, RNG state, weight checks), mixed into every trainer."""
import collections
import hashlib
import os
import os.path as osp
import random
import time
from collections import OrderedDict

import numpy as np
import torch
import yaml

from .atomic import atomic_torch_save, atomic_write_text
from .runs import config_diff, differences_text
from .weights_identity import canonical_backbone

# |weight| above this is divergence, not learning: CLIP-scale parameters (prompt context, adapters,
# generators) live within a few units; OPTIM.LR 1e6 on CoOp drives ctx to 1e20 with a finite loss.
MAX_ABS_WEIGHT = 1e6


# Dassl's checkpoints (CoOp, CoCoOp, ...) pickle live objects beside the weights: the warmup
# scheduler's state_dict holds its `successor` scheduler, which holds the optimizer. Classes under
# these module prefixes are read as inert placeholders (never imported, never run) and the top-level
# entry holding them is dropped; anything else that is not plain data is refused.
SKIPPABLE_PICKLED_CLASSES = ("torch.optim.", "dassl.optim.")
SKIPPABLE_ENTRIES = ("optimizer", "scheduler")
# Plain containers a pickled optimizer's state is made of (its `state` is a defaultdict(dict), a
# MultiStepLR's milestones a Counter): they run no code of the checkpoint's choosing. A defaultdict
# is read as a plain dict (the weights_only unpickler fills only dicts; the state is discarded anyway).
def _plain_dict(*default_factory):
    return {}


PLAIN_CONTAINERS = {"collections.defaultdict": _plain_dict, "collections.Counter": collections.Counter,
                    "builtins.dict": dict, "builtins.set": set}


class SkippedObject:
    """Stands in for a pickled optimizer or scheduler: created empty, its pickled state discarded."""
    pickled_name = "?"

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __repr__(self):
        return f"<skipped {self.pickled_name}>"


def _placeholder(name):
    return type("SkippedObject", (SkippedObject,), {"pickled_name": name})


def _find_skipped(obj, seen=None):
    """The pickled name of the first SkippedObject inside obj (dicts, lists, tuples, sets), or None."""
    seen = set() if seen is None else seen
    if isinstance(obj, SkippedObject):
        return obj.pickled_name
    if id(obj) in seen or isinstance(obj, (torch.Tensor, str, bytes)):
        return None
    seen.add(id(obj))
    items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple, set)) else ()
    for item in items:
        found = _find_skipped(item, seen)
        if found:
            return found
    return None


def _unsafe_load_error(fpath, exc):
    # torch's own text suggests weights_only=False; we never do that, so keep only its first line.
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "Unsupported global" in str(exc):
        reason = next(l.strip() for l in str(exc).splitlines() if "Unsupported global" in l)
    return RuntimeError(
        f'Cannot load checkpoint "{fpath}" safely (weights_only=True): {reason}. '
        "It is truncated, not a checkpoint, or holds pickled objects other than tensors and plain data; "
        "it is not loaded."
    )


def load_checkpoint(fpath, verbose=True):
    """Load with weights_only=True: a checkpoint can never run code on load.

    A Dassl checkpoint whose optimizer/scheduler entries hold pickled torch.optim (or dassl.optim)
    objects loads too: those classes are mapped to inert placeholders for the weights_only
    unpickler and the entries holding them come back as None (what evaluation needs is the
    state_dict and epoch). Any other non-allowlisted global refuses the file.
    """
    if not fpath or not osp.exists(fpath):
        raise FileNotFoundError(f'Checkpoint not found at "{fpath}"')
    map_location = None if torch.cuda.is_available() else "cpu"
    try:
        return torch.load(fpath, map_location=map_location, weights_only=True)
    except Exception as exc:
        if "Unsupported global" not in str(exc):
            raise _unsafe_load_error(fpath, exc) from exc
        first_error = exc
    try:  # which globals the pickle names, read statically (nothing is imported or run)
        names = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(fpath))
    except Exception:  # not a zip checkpoint (torch < 1.6): only the plain-data path above applies
        raise _unsafe_load_error(fpath, first_error) from first_error
    skippable = [n for n in names if n.startswith(SKIPPABLE_PICKLED_CLASSES)]
    refused = [n for n in names if n not in skippable and n not in PLAIN_CONTAINERS]
    if refused or not skippable:
        raise _unsafe_load_error(fpath, first_error) from first_error
    allowed = [(_placeholder(n), n) for n in skippable] + [(PLAIN_CONTAINERS[n], n) for n in names
                                                           if n in PLAIN_CONTAINERS]
    with torch.serialization.safe_globals(allowed):
        try:
            checkpoint = torch.load(fpath, map_location=map_location, weights_only=True)
        except Exception as exc:
            raise _unsafe_load_error(fpath, exc) from exc
    skipped = []
    for key in SKIPPABLE_ENTRIES:
        if isinstance(checkpoint, dict) and _find_skipped(checkpoint.get(key)):
            checkpoint[key] = None
            skipped.append(key)
    stray = _find_skipped(checkpoint)
    if stray:
        raise RuntimeError(
            f'Cannot load checkpoint "{fpath}": it holds a pickled {stray} object outside its optimizer and '
            "scheduler entries; it is not loaded.")
    if verbose:
        print(f'Note: "{fpath}" holds pickled {", ".join(skippable)} objects in its {" and ".join(skipped)} '
              "entries (a Dassl checkpoint); they were skipped without being run.")
    return checkpoint


# Bumped when the checkpoint layout changes; a checkpoint from a newer layout is refused by name.
# -------------------- trust: sane weights, same backbone, same config on resume ----------------

def weight_problems(state_dict, limit=MAX_ABS_WEIGHT):
    """{"non-finite": [names], "absurd": [(name, max |w|)]} of floating tensors in a state dict."""
    non_finite, absurd = [], []
    for name, value in state_dict.items():
        if not (torch.is_tensor(value) and torch.is_floating_point(value)) or value.numel() == 0:
            continue
        if not torch.isfinite(value).all():
            non_finite.append(name)
        else:
            peak = value.detach().abs().max().item()
            if peak > limit:
                absurd.append((name, peak))
    return {"non-finite": non_finite, "absurd": absurd}


def describe_weight_problems(problems, limit=MAX_ABS_WEIGHT):
    """One phrase for `weight_problems`' result, or "" when there is none."""
    parts = []
    if problems["non-finite"]:
        parts.append(f"{problems['non-finite']} infinite or NaN")
    if problems["absurd"]:
        names = [n for n, _ in problems["absurd"]]
        peak = max(p for _, p in problems["absurd"])
        parts.append(f"{names} beyond |w| = {limit:g} (max {peak:.3g})")
    return "; ".join(parts)


def checkpoint_tensor_problem(checkpoint, fpath):
    """Why a checkpoint's tensors cannot be trusted (non-finite or absurd values), or None."""
    what = describe_weight_problems(weight_problems(checkpoint.get("state_dict") or {}))
    if not what:
        return None
    return (f'Checkpoint "{fpath}" holds weights that no training run saves: {what}. The file was damaged or '
            "overwritten; use another epoch (--load-epoch, or the " + EPOCH_FILE_PREFIX + "N named in the checkpoint pointer) "
            "or retrain.")


def weights_fingerprint(module):
    """A short hash of a module's weights: names, shapes, dtypes and a strided sample of values.

    Tells apart two weight files of one architecture (another pretrained tag, a retrained or
    replaced file) in milliseconds, where a full hash of ViT-B/16 reads 600 MB. Prefixed by the dtype
    the weights are held in: the same weights in fp16 and fp32 differ by rounding, so only
    fingerprints of one dtype are compared."""
    h, dtype = hashlib.sha256(), None
    for name, tensor in sorted(module.state_dict().items()):
        dtype = dtype or (str(tensor.dtype).replace("torch.", "") if tensor.is_floating_point() else None)
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // 64)
        sample = flat[::step][:64].cpu().contiguous()
        h.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        h.update(sample.view(torch.uint8).numpy().tobytes() if sample.numel() else b"")
    return f"{dtype}:{h.hexdigest()[:16]}"


def backbone_weights_problem(meta, expected, fpath):
    """Why a checkpoint trained on other backbone weights (same name, other values) must not load."""
    saved, now = (meta or {}).get("backbone_weights"), (expected or {}).get("backbone_weights")
    if not saved or not now or saved == now:
        return None
    if saved.split(":")[0] != now.split(":")[0]:  # held in another precision: values differ by rounding
        return None
    return (f'Checkpoint "{fpath}" was trained on other weights of backbone "{meta.get("backbone")}" '
            f"(fingerprint {saved}; this run's weights are {now}): another pretrained tag or weights file. Use the weights it was trained with (MODEL.BACKBONE.PRETRAINED_TAG), or retrain.")


def resume_config_problem(checkpoint, cfg, fpath):
    """Why the run in `cfg` must not resume from `checkpoint` (a different config), or None. Only keys
    both configs have are compared (a checkpoint of an older or newer clipadapt has other keys)."""
    saved = (checkpoint.get("meta") or {}).get("config")
    if not saved:
        return None
    try:
        saved = yaml.safe_load(saved) or {}
    except yaml.YAMLError:
        return None
    diffs = config_diff(saved, cfg, shared_only=True)
    if not diffs:
        return None
    return (f'Checkpoint "{fpath}" was trained with another config ({len(diffs)} key(s) differ, checkpoint -> now: '
            f"{differences_text(diffs)}); resuming would mix two runs. Pass another --output-dir for the new config, "
            "or rerun with the checkpoint's values.")


CHECKPOINT_FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used by this run (damaged, unsafe, or from another model)."""


def checkpoint_mismatch(meta, expected, fpath):
    """Why a checkpoint's `meta` cannot serve a run described by `expected` (None when it can)."""
    meta = meta or {}
    if meta.get("format", 1) > CHECKPOINT_FORMAT:
        return (f'Checkpoint "{fpath}" has format {meta["format"]} (written by clipadapt {meta.get("clipadapt", "?")}); '
                f"this clipadapt reads format {CHECKPOINT_FORMAT} and older. Upgrade clipadapt.")
    saved = dict(meta)
    if isinstance(saved.get("backbone"), str):  # a checkpoint written before names were canonical held the path
        saved["backbone"] = canonical_backbone(saved["backbone"], "")[0]
    for key in ("trainer", "backbone"):
        if saved.get(key) is not None and expected.get(key) is not None and saved[key] != expected[key]:
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


# Dassl's checkpoint files, spelled here only: RUN/<model>/model.pth.tar-<epoch>, RUN/<model>/model-best.pth.tar,
# and the pointer RUN/<model>/checkpoint naming the file saved last (where a resume starts).
EPOCH_FILE_PREFIX = "model.pth.tar-"
BEST_FILE = "model-best.pth.tar"
POINTER_FILE = "checkpoint"


def checkpoint_file_name(epoch=None):
    """model.pth.tar-<epoch>, or model-best.pth.tar for epoch None."""
    return BEST_FILE if epoch is None else f"{EPOCH_FILE_PREFIX}{epoch}"


def pointer_path(directory, name):
    return osp.join(directory, name, POINTER_FILE)


def resume_hint(directory, name):
    """What to do when the checkpoint a resume would start from cannot be used."""
    return (f" Training would resume from it. To resume from an earlier epoch, write that epoch's file name "
            f'({EPOCH_FILE_PREFIX}N) into "{pointer_path(directory, name)}"; or train into a new --output-dir.')


def model_files(directory, epoch=None, names=None):
    """{model name: checkpoint file} to evaluate the run in `directory` at `epoch` (None: the best model);
    `names` None: every model sub-folder that holds checkpoints. CheckpointError names what is missing
    and what is there."""
    if not osp.isdir(directory):
        raise CheckpointError(f'--model-dir "{directory}" does not exist. Train first, or pass the output folder '
                              "of the training run.")
    wanted = checkpoint_file_name(epoch)
    subdirs = [d for d in sorted(os.listdir(directory)) if osp.isdir(osp.join(directory, d))]
    saved = sorted({f for d in subdirs for f in os.listdir(osp.join(directory, d)) if f.startswith("model")})
    if names is None:
        names = [d for d in subdirs if osp.isfile(osp.join(directory, d, wanted))] if wanted in saved else []
    missing = [n for n in names if not osp.isfile(osp.join(directory, n, wanted))]
    if missing or not names:
        inside = sorted(f for f in os.listdir(directory) if f.startswith("model"))
        if inside and not saved:  # the model's own folder was given instead of the run's
            raise CheckpointError(f'--model-dir "{directory}" is a model folder (it holds {inside}); pass the '
                                  f'training run\'s output folder, its parent "{osp.dirname(osp.abspath(directory))}".')
        which = f"{missing[0]}/{wanted}" if missing and wanted in saved else wanted
        raise CheckpointError(f'--model-dir "{directory}" has no {which}; it has {saved or "no checkpoints"}. '
                              "Pass --load-epoch with one of the saved epochs.")
    return {name: osp.join(directory, name, wanted) for name in names}


def last_saved_epoch(directory):
    """The highest N of model.pth.tar-N that every model folder of the run in `directory` holds;
    CheckpointError when there is none."""
    subdirs = [d for d in sorted(os.listdir(directory)) if osp.isdir(osp.join(directory, d))] \
        if osp.isdir(directory) else []
    epochs = [{_epoch_of(f) for f in os.listdir(osp.join(directory, d))} - {None} for d in subdirs]
    common = set.intersection(*[e for e in epochs if e]) if any(epochs) else set()
    if not common:
        raise CheckpointError(f'"{directory}" holds no model.pth.tar-N checkpoints: train that run first.')
    return max(common)


def resume_pointers(directory):
    """{model name: checkpoint file} named by the `<directory>/<model>/checkpoint` pointer files."""
    pointers = {}
    if osp.isdir(directory):
        for name in sorted(os.listdir(directory)):
            pointer = pointer_path(directory, name)
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
        from . import __version__
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

    # Wall-clock seconds of the run before this process: those of the earlier segments up to the
    # checkpoint a resumed run continues from (0 for a fresh run). train.py sets `segment_started`.
    wall_time_before = 0.0
    segment_started = None

    def wall_time_s(self):
        """The run's wall time so far: earlier segments (to their last checkpoint) plus this one."""
        started = self.segment_started if self.segment_started is not None else time.time()
        return self.wall_time_before + (time.time() - started)

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
                "wall_time_s": round(self.wall_time_s(), 2),
            }
            fname = BEST_FILE if is_best else (model_name or checkpoint_file_name(epoch + 1))
            fpath = osp.join(directory, name, fname)
            atomic_torch_save(checkpoint, fpath)
            atomic_write_text(pointer_path(directory, name), f"{fname}\n")
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
            files = {name: osp.join(directory, name, checkpoint_file_name(common)) for name in names}
            print(f"The models' last checkpoints differ ({epochs}); resuming all from epoch {common}")
        start_epoch = 0
        for name in names:
            fpath = files[name]
            checkpoint = self._load_usable(fpath, hint=resume_hint(directory, name))
            problem = resume_config_problem(checkpoint, self.cfg, fpath)  # another dataset or config: refuse
            if problem:
                raise CheckpointError(problem)
            self.load_state_into(name, checkpoint["state_dict"], fpath)
            if self._optims[name] is not None and checkpoint.get("optimizer") is not None:
                self._optims[name].load_state_dict(checkpoint["optimizer"])
            if self._scheds[name] is not None and checkpoint.get("scheduler") is not None:
                self._scheds[name].load_state_dict(checkpoint["scheduler"])
            start_epoch = checkpoint["epoch"]
            if isinstance(checkpoint.get("wall_time_s"), (int, float)):
                self.wall_time_before = float(checkpoint["wall_time_s"])
            if checkpoint.get("rng") is not None:
                self.set_rng_state(checkpoint["rng"])
            print(f'Loaded model weights from "{fpath}" (epoch = {start_epoch})')
        best = osp.join(directory, names[0], BEST_FILE)
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
        for name, model_path in model_files(directory, epoch, self.get_model_names()).items():
            checkpoint = self._load_usable(model_path)
            self.load_state_into(name, checkpoint["state_dict"], model_path)
            val_result = checkpoint.get("val_result")
            extra = f", val_result = {val_result:.1f}" if isinstance(val_result, (int, float)) else ""
            print(f'Load {model_path} to {name} (epoch = {checkpoint["epoch"]}{extra})')


def _epoch_of(fpath):
    """N of a "model.pth.tar-N" file name, else None."""
    base, prefix = osp.basename(fpath), EPOCH_FILE_PREFIX
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
