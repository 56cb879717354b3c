"""Guards against silently wrong results: one writer per run folder, resume only into the same
config, sane weights in and out of checkpoints, the backbone's weights identified by their values,
and write failures (full or read-only disk) named in one line.

Each guard is small and called from one place (train.py, the checkpoint mixin, the feature cache);
docs/RELIABILITY.md lists what each refuses and its message.
"""
import errno
import fcntl
import glob
import hashlib
import os
import os.path as osp
import socket

import torch
import yaml

# |weight| above this is divergence, not learning: CLIP-scale parameters (prompt context, adapters,
# generators) live within a few units; OPTIM.LR 1e6 on CoOp drives ctx to 1e20 with a finite loss.
MAX_ABS_WEIGHT = 1e6

# Config keys a resumed run may change: where things are and how much is printed, not what is learned.
RESUME_FREE_KEYS = (
    "OUTPUT_DIR", "RESUME", "DATASET.ROOT", "VERBOSE", "USE_CUDA", "DATALOADER.NUM_WORKERS",
    "DATALOADER.TEST.BATCH_SIZE", "TRAIN.PRINT_FREQ", "TRAIN.CHECKPOINT_FREQ", "FEATURES.CACHE",
    "FEATURES.CACHE_DIR", "MODEL.COMPILE_IMAGE_ENCODER", "DATASET.VERIFY_MANIFEST", "DATASET.SKIP_UNREADABLE",
    "TEST.NO_TEST", "TEST.PER_CLASS_RESULT", "TEST.COMPUTE_CMAT",
)

WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


# ---------------------------------------------------------------------------------------------
# one writer per run folder

class RunLockedError(RuntimeError):
    """Another live process writes into the same run folder."""


LOCK_NAME = ".train.lock"


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


class RunLock:
    """An exclusive lock on a run folder, held for the life of the process that trains into it.

    `RUN/.train.lock` holds "pid host". It is also flock'ed, so a killed holder releases it at once
    on a local disk; where flock is unsupported (some network file systems), a lock whose pid is
    gone on this host is stale and taken over. A lock held on another host is refused: its owner
    cannot be checked from here, and the message says to delete the file if that run is gone.
    """

    def __init__(self, directory):
        self.directory = directory
        self.path = osp.join(directory, LOCK_NAME)
        self._handle = None

    def acquire(self):
        os.makedirs(self.directory, exist_ok=True)
        while True:
            handle = open(self.path, "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                raise RunLockedError(self._held_message(*self._read_owner())) from None
            except OSError:  # no flock here (some NFS mounts): judge by pid and host alone
                owner = self._read_owner()
                if owner[0] is not None and self._owner_alive(*owner):
                    handle.close()
                    raise RunLockedError(self._held_message(*owner)) from None
                break
            # The holder before us deletes the file on release; a lock on that deleted file is no lock.
            try:
                if os.fstat(handle.fileno()).st_ino == os.stat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            handle.close()
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()} {socket.gethostname()}\n")
        handle.flush()
        self._handle = handle
        return self

    def release(self):
        if self._handle is None:
            return
        try:
            os.remove(self.path)
        except OSError:
            pass
        try:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
        except OSError:
            pass
        self._handle.close()
        self._handle = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()

    def _read_owner(self):
        try:
            with open(self.path) as f:
                pid, host = f.read().split()[:2]
            return int(pid), host
        except (OSError, ValueError):
            return None, None

    @staticmethod
    def _owner_alive(pid, host):
        return host != socket.gethostname() or (pid != os.getpid() and _pid_alive(pid))

    def _held_message(self, pid, host):
        who = f"process {pid} on host {host}" if pid is not None else "another process"
        return (f'Run folder "{self.directory}" is in use by {who} (lock file "{self.path}"). Two runs writing '
                "into one folder mix their logs and checkpoints: wait for it to finish, or pass another "
                "--output-dir. If that process is gone, delete the lock file.")


def remove_temp_files(directory):
    """Delete what writes killed before their rename left in a run folder (`.tmp-*.part`,
    `checkpoint.tmp`). Only called while holding the folder's lock, so no live writer owns them."""
    removed = []
    for pattern in (".tmp-*.part", "*/.tmp-*.part", "*/checkpoint.tmp"):
        for path in glob.glob(osp.join(glob.escape(directory), pattern)):
            try:
                os.remove(path)
                removed.append(path)
            except OSError:
                pass
    if removed:
        print(f"Removed {len(removed)} temporary file(s) left by an interrupted write, e.g. {removed[0]}")
    return removed


# ---------------------------------------------------------------------------------------------
# resume only into the same config

def _flatten(node, prefix=""):
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return out


def config_differences(saved_yaml, cfg):
    """[(key, saved value, current value)] for every key that decides what a run learns and differs
    between a checkpoint's config (its yaml dump) and `cfg`. Keys only one side has (an older or
    newer clipadapt) are not compared."""
    try:
        saved = _flatten(yaml.safe_load(saved_yaml) or {})
    except yaml.YAMLError:
        return []
    current = _flatten(yaml.safe_load(cfg.dump()))
    return [(k, saved[k], current[k]) for k in sorted(saved.keys() & current.keys())
            if k not in RESUME_FREE_KEYS and saved[k] != current[k]]


def resume_config_problem(checkpoint, cfg, fpath):
    """Why the run in `cfg` must not resume from `checkpoint` (a different config), or None."""
    saved = (checkpoint.get("meta") or {}).get("config")
    if not saved:
        return None
    diffs = config_differences(saved, cfg)
    if not diffs:
        return None
    shown = ", ".join(f"{k} {a!r} -> {b!r}" for k, a, b in diffs[:6]) + (" ..." if len(diffs) > 6 else "")
    return (f'Checkpoint "{fpath}" was trained with another config ({len(diffs)} key(s) differ, checkpoint -> now: '
            f"{shown}); resuming would mix two runs. Pass another --output-dir for the new config, or rerun with "
            "the checkpoint's values.")


# ---------------------------------------------------------------------------------------------
# sane weights

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
            "overwritten; use another epoch (--load-epoch, or the model.pth.tar-N named in the checkpoint pointer) "
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


# ---------------------------------------------------------------------------------------------
# write failures

def write_error_message(exc, what="output"):
    """One line for an OSError raised while writing (full disk, quota, read-only), else None."""
    if not isinstance(exc, OSError) or exc.errno not in WRITE_ERRNOS:
        return None
    where = f' "{exc.filename}"' if exc.filename else ""
    advice = {errno.ENOSPC: "free space on that disk", errno.EDQUOT: "free space in your quota",
              errno.EFBIG: "raise the file-size limit (ulimit -f)"}.get(exc.errno, "make it writable")
    return (f"Cannot write {what}{where}: {exc.strerror or os.strerror(exc.errno)}. Files saved before are left as "
            f"they were; {advice} or pass another --output-dir, then run the same command again to resume.")
