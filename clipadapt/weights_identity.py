"""What a backbone's weights are, whatever path or name a user gives them.

Two digests, each computed once per file and remembered by (real path, size, mtime) in
``<cache root>/weights_index.json``:

- ``file_digest``: sha256 of the file's bytes. It decides a run's identity (its folder, run.json, the
  resume check) and needs no torch: the planner computes it. OpenAI's own ``.pt`` files are
  recognised by it (their download URL carries it;
  backbones.OPENAI_FILE_SHA256), so a copy of OpenAI's file is the "openai" tag.
- ``tensor_digest``: sha256 of the tensors a file holds (names, shapes, values in fp32). It names the
  weights in feature-cache keys, so the same tensors in another format (open_clip's download of the
  "openai" tag and OpenAI's TorchScript file) share one cache entry.

Where a file lives, what it is called and its mtime are never part of an identity: a copy, a moved
file or a download of the same file again keep their runs and their cached features; another file
of the same name and size does not.
"""
import hashlib
import json
import os
import os.path as osp
import sys

from .backbones import COOP_NAMES, OPENAI_FILE_SHA256
from .paths import cache_root

INDEX_NAME = "weights_index.json"
DIGEST_CHARS = 16
_CHUNK = 1 << 22
_REMEMBERED = {}  # (real path, size, mtime_ns) -> index entry, for this process


def _stamp(path):
    real = osp.realpath(osp.expanduser(path))
    stat = os.stat(real)
    return real, stat.st_size, stat.st_mtime_ns


def _index_path():
    return osp.join(cache_root(), INDEX_NAME)


def _read_index():
    try:
        with open(_index_path()) as f:
            index = json.load(f)
        return index if isinstance(index, dict) else {}
    except (OSError, ValueError):
        return {}


def _entry(path):
    """The remembered entry of a file (a dict that may be filled in), valid for its size and mtime."""
    real, size, mtime = _stamp(path)
    key = (real, size, mtime)
    if key not in _REMEMBERED:
        saved = _read_index().get(real) or {}
        _REMEMBERED[key] = saved if (saved.get("size"), saved.get("mtime_ns")) == (size, mtime) else {}
    return real, size, mtime, _REMEMBERED[key]


def _remember(real, size, mtime, entry):
    """Write the entry to the index; a cache folder that cannot be written only costs a recomputation."""
    from .atomic import atomic_write_text
    entry.update(size=size, mtime_ns=mtime)
    index = _read_index()
    index[real] = entry
    try:
        os.makedirs(cache_root(), exist_ok=True)
        atomic_write_text(_index_path(), json.dumps(index, indent=1, sort_keys=True))
    except OSError:
        pass


def file_digest(path):
    """sha256 (hex) of a file's bytes, read once per file version."""
    real, size, mtime, entry = _entry(path)
    if "sha256" not in entry:
        if size > 64 << 20:  # on stderr: the planner's stdout is shell assignments
            print(f"Computing the sha256 of {real} ({size / 2**20:.0f} MB), once for this file", file=sys.stderr)
        h = hashlib.sha256()
        with open(real, "rb") as f:
            for block in iter(lambda: f.read(_CHUNK), b""):
                h.update(block)
        entry["sha256"] = h.hexdigest()
        _remember(real, size, mtime, entry)
    return entry["sha256"]


def state_digest(state):
    """sha256 (hex) of a state dict's tensors: sorted names, shapes and values as fp32."""
    import torch
    h = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach()
        h.update(f"{name}:{tuple(tensor.shape)};".encode())
        values = tensor.float() if tensor.is_floating_point() else tensor.to(torch.int64)
        h.update(values.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def tensor_digest(path, state):
    """state_digest of the tensors `state` read from `path`, remembered for the file."""
    real, size, mtime, entry = _entry(path)
    if "tensors" not in entry:
        entry["tensors"] = state_digest(state)
        _remember(real, size, mtime, entry)
    return entry["tensors"]


_OPENAI_FILES = {digest: name for name, digest in OPENAI_FILE_SHA256.items()}


def _existing_file(value):
    return bool(value) and isinstance(value, str) and osp.isfile(osp.expanduser(value))


def file_architecture(path):
    """The backbone name a weights file's own contents give: the CoOp name whose architecture an
    OpenAI-layout file has, or a project checkpoint's "arch"; None when neither (remembered)."""
    real, size, mtime, entry = _entry(path)
    if "arch" not in entry:
        held = _OPENAI_FILES.get(file_digest(path))
        if held is None:
            from .clip.loader import _coop_name_of
            from .clip.weights import BackboneError, read_weights
            try:
                state, arch, _ = read_weights(real)
            except BackboneError:
                return None  # not remembered: the loader names the problem
            held = arch or _coop_name_of(state)
        entry["arch"] = held
        _remember(real, size, mtime, entry)
    return entry["arch"]


def canonical_backbone(name, tag):
    """(MODEL.BACKBONE.NAME, MODEL.BACKBONE.PRETRAINED_TAG) as a run's identity sees them.

    A weights file is named by what it holds: OpenAI's own file of a CoOp architecture is that name
    with its default weights (NAME "ViT-B/32", TAG ""); any other file is TAG "sha256-<digest>". A
    file given as NAME is the architecture it holds plus that TAG, so `NAME /x.pt` and
    `NAME ViT-B/32 PRETRAINED_TAG /x.pt` are one identity (the loader builds one model from them).
    Values that are no existing file are returned as given.
    """
    if _existing_file(name):
        digest = file_digest(name)
        held = _OPENAI_FILES.get(digest)
        if held:
            return held, ""
        return file_architecture(name) or "", f"sha256-{digest[:DIGEST_CHARS]}"
    if _existing_file(tag):
        digest = file_digest(tag)
        held = _OPENAI_FILES.get(digest)
        if held and held == name:
            return name, ""
        if held and COOP_NAMES[held] in (name, f"{name}-quickgelu"):
            return name, "openai"
        return name, f"sha256-{digest[:DIGEST_CHARS]}"
    if name in COOP_NAMES and tag == "openai":
        return name, ""
    return name, tag


def backbone_name(cfg):
    """MODEL.BACKBONE.NAME as checkpoints record and compare it: a weights file by what it holds."""
    bb = cfg.MODEL.BACKBONE
    return canonical_backbone(bb.NAME, bb.get("PRETRAINED_TAG", ""))[0]
