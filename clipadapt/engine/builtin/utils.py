"""Logging, seeding, environment info, meters and safe checkpoint I/O."""
import os
import os.path as osp
import random
import sys
import time
from collections import defaultdict

import numpy as np
import torch

from ...atomic import atomic_torch_save  # noqa: F401  (re-exported: clipadapt.engine)
from ...checkpoints import load_checkpoint  # noqa: F401  (re-exported: clipadapt.engine)


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


def count_num_param(model):
    return sum(p.numel() for p in model.parameters())
