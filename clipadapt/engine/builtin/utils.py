"""Logging, seeding, environment info, meters and safe checkpoint I/O."""
import collections
import os
import os.path as osp
import random
import sys
import time
from collections import defaultdict

import numpy as np
import torch

from ...atomic import atomic_torch_save  # noqa: F401  (re-exported: clipadapt.engine)


def mkdir_if_missing(dirname):
    os.makedirs(dirname, exist_ok=True)


def check_isfile(fpath):
    isfile = osp.isfile(fpath)
    if not isfile:
        print(f'No file found at "{fpath}"')
    return isfile


def listdir_nohidden(path, sort=False):
    items = [f for f in os.listdir(path) if not f.startswith(".")]
    return sorted(items) if sort else items


class _Tee:
    """Writes to the console and to a log file (Dassl's `Logger`)."""

    def __init__(self, fpath):
        self.console = sys.stdout
        self.file = open(fpath, "a", buffering=1)

    def write(self, msg):
        self.console.write(msg)
        self.file.write(msg)

    def flush(self):
        self.console.flush()
        self.file.flush()
        os.fsync(self.file.fileno())

    def isatty(self):
        return False

    def close(self):
        self.file.close()


def setup_logger(output=None, append=False):
    """Tee stdout to <output>/log.txt. An existing log.txt is kept and a timestamped one started
    (Dassl's behaviour), unless `append`: a resumed training run continues its own log.txt, so the
    result it ends with is where parse_test_res.py looks."""
    if output is None:
        return
    if output.endswith(".txt") or output.endswith(".log"):
        fpath = output
    else:
        fpath = osp.join(output, "log.txt")
    if osp.exists(fpath) and not append:
        fpath += time.strftime("-%Y-%m-%d-%H-%M-%S")
    mkdir_if_missing(osp.dirname(fpath) or ".")
    if isinstance(sys.stdout, _Tee):
        sys.stdout.close()
        sys.stdout = sys.stdout.console
    sys.stdout = _Tee(fpath)
    return fpath


def set_random_seed(seed, deterministic=False):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def collect_env_info():
    from torch.utils.collect_env import get_pretty_env_info
    import PIL
    try:
        import open_clip
        oc = open_clip.__version__
    except Exception:  # pragma: no cover - open_clip is a hard dependency
        oc = "not installed"
    return get_pretty_env_info() + f"\n        Pillow ({PIL.__version__})\n        open_clip ({oc})"


class AverageMeter:
    def __init__(self, ema=False):
        self.ema = ema
        self.reset()

    def reset(self):
        self.val = 0
        self.avg = 0
        self.sum = 0
        self.count = 0

    def update(self, val, n=1):
        if isinstance(val, torch.Tensor):
            val = val.item()
        self.val = val
        self.sum += val * n
        self.count += n
        self.avg = self.sum / self.count


class MetricMeter:
    def __init__(self, delimiter=" "):
        self.meters = defaultdict(AverageMeter)
        self.delimiter = delimiter

    def update(self, input_dict):
        if input_dict is None:
            return
        if not isinstance(input_dict, dict):
            raise TypeError("Input to MetricMeter.update() must be a dictionary")
        for k, v in input_dict.items():
            if isinstance(v, torch.Tensor):
                v = v.item()
            self.meters[k].update(v)

    def __str__(self):
        return self.delimiter.join(f"{name} {meter.val:.4f} ({meter.avg:.4f})" for name, meter in self.meters.items())


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
    state_dict and epoch). Any other non-allowlisted global refuses the file, as before.
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


def count_num_param(model):
    return sum(p.numel() for p in model.parameters())
