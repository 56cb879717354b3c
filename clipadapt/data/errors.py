"""Errors that say which file is wrong, what was expected there, and where to read more."""
import os
from pathlib import Path


class DatasetError(Exception):
    """Dataset files are present but wrong: bad json, inconsistent labels, missing images, ..."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A dataset root, folder or file that the reader needs is not on disk."""


def datasets_doc():
    """Where DATASETS.md is: the repository's copy when it is there, else its name."""
    path = Path(__file__).resolve().parents[2] / "DATASETS.md"
    return str(path) if path.is_file() else "DATASETS.md (in the clipadapt repository)"


def render_tree(dataset_dir, entries):
    """A short tree: `$DATA/<dataset_dir>/` and one line per entry under it."""
    lines = ["$DATA/", f"└── {dataset_dir.rstrip('/')}/"]
    for i, entry in enumerate(entries):
        branch = "└── " if i == len(entries) - 1 else "├── "
        lines.append("    " + branch + entry)
    return "\n".join(lines)


def not_found(what, path, dataset=None, tree=None, hint=None):
    """A DatasetNotFoundError naming the missing path, the expected layout and DATASETS.md."""
    parts = [f"{what} not found: {path}"]
    if tree:
        parts.append("Expected layout (DATASET.ROOT is $DATA):\n" + tree)
    if hint:
        parts.append(hint)
    section = f" (section {dataset})" if dataset else ""
    parts.append(f"See {datasets_doc()}{section} for where to get it and how to lay it out.")
    return DatasetNotFoundError("\n".join(parts))


def is_writable_dir(path):
    """True when `path` is a directory we may write into.

    Mode bits count as well as `os.access`: a folder marked read-only (r-x) is left alone even
    when the process runs as root, which would otherwise write anywhere.
    """
    try:
        st = os.stat(path)
    except OSError:
        return False
    return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK) and bool(st.st_mode & 0o222)
