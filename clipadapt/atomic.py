"""Atomic file writes: a temporary file beside the target, flushed and fsynced, then renamed over it.

A reader (or a run killed mid-write) sees the old file or the new one, never half a file. A failed
write (full disk, quota, read-only) raises OSError naming the target, and the temporary file goes.
Temporary files are named `<prefix>*.part`, the pattern clipadapt.run_folder cleans up after a kill.
The file gets the mode a plain open() would give it (0666 less the umask), not mkstemp's 0600, so the
shared caches and data folders stay readable by whom the umask allows.
"""
import json
import os
import tempfile


def atomic_write(fpath, write, binary=True, prefix=".tmp-"):
    """Call `write(f)` on a temporary file beside `fpath` (opened "wb", or "w" unless `binary`),
    then fsync it and rename it to `fpath`."""
    dirname = os.path.dirname(os.path.abspath(fpath))
    tmp = None
    try:
        os.makedirs(dirname, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".part", dir=dirname)
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, fpath)
    except OSError as exc:
        _remove_quietly(tmp)
        if exc.filename is None:
            exc.filename = fpath
        raise
    except BaseException:
        _remove_quietly(tmp)
        raise


def atomic_write_text(fpath, text, prefix=".tmp-"):
    atomic_write(fpath, lambda f: f.write(text), binary=False, prefix=prefix)


def atomic_write_json(obj, fpath, indent=4, prefix=".tmp-"):
    """json.dump(obj) atomically; indent None writes the compact form (no spaces after separators)."""
    separators = (",", ": ") if indent else (",", ":")
    atomic_write(fpath, lambda f: json.dump(obj, f, indent=indent, separators=separators), binary=False,
                 prefix=prefix)


def atomic_torch_save(obj, fpath, prefix=".tmp-"):
    """torch.save(obj, fpath) atomically, keeping the OSError that torch.save would hide."""
    import torch  # here, so that the json/text writers need no torch import (clipadapt.runs stays light)

    def write(f):
        writer = _WriteErrorRecorder(f)
        try:
            torch.save(obj, writer)
        except RuntimeError:
            if writer.error is None:
                raise
            raise writer.error from None

    atomic_write(fpath, write, prefix=prefix)


class _WriteErrorRecorder:
    """A file wrapper that keeps the OSError of a failed write: torch.save turns it into a
    RuntimeError ("unexpected pos ..."), which would hide a full disk."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data):
        try:
            return self.f.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self):
        self.f.flush()


def current_umask():
    """The process's umask (read by setting it, so set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _remove_quietly(path):
    try:
        if path and os.path.exists(path):
            os.remove(path)
    except OSError:
        pass
