"""On-disk cache of frozen image-encoder features.

The image encoder of every trainer here is frozen, so its features depend only on (image list,
backbone weights, transform, augmentation view, precision). They are computed once and shared by
every method, seed and checkpoint. The key hashes all of these, so any change misses the cache
instead of reusing stale features. Files are written to a temporary name and renamed (readers never
see half a file), and a lock file makes a second process wait for the first instead of duplicating
the work.
The lock is clipadapt.locks.file_lock.
"""
import glob
import hashlib
import json
import os
import os.path as osp

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .engine import atomic_torch_save
from .loading import read_image
from .locks import file_lock
from .paths import cache_root

CACHE_VERSION = 1  # the key's version; files also carry a checksum (older ones are recomputed)


def default_cache_dir():
    return osp.join(cache_root(), "features")


def feature_key(**parts):
    """A stable hash of everything that determines a feature tensor."""
    blob = json.dumps({"version": CACHE_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def image_list_digest(data_source, root=""):
    """Hash of (path relative to the data root, label, size, mtime) for every item, in order.

    Size and mtime make a dataset regenerated in place under the same names a new key; moving the
    data root keeps the key (paths are relative, `mv` keeps mtimes)."""
    h = hashlib.sha256()
    for item in data_source:
        path = osp.relpath(item.impath, root) if root else item.impath
        try:
            stat = os.stat(item.impath)
            stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        h.update(f"{path}\t{item.label}\t{stamp}\n".encode())
    return h.hexdigest()[:32]


class _ViewDataset(Dataset):
    """Images through `transform`; with `view_seed`, item i's augmentation is seeded by (view_seed, i),
    so a view is the same whatever the batch size, worker count or process."""

    def __init__(self, data_source, transform, view_seed=None):
        self.data_source = data_source
        self.transform = transform
        self.view_seed = view_seed

    def __len__(self):
        return len(self.data_source)

    def __getitem__(self, idx):
        img = read_image(self.data_source[idx].impath)
        if self.view_seed is None:
            return self.transform(img)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.view_seed * 1_000_003 + idx)
            return self.transform(img)


@torch.no_grad()
def encode_images(encode_fn, data_source, transform, view_seed=None, batch_size=128, num_workers=0,
                  device="cpu", desc="Extracting image features"):
    """(N, D) float32 features of `data_source` in order, computed by `encode_fn(images)`."""
    loader = DataLoader(_ViewDataset(data_source, transform, view_seed), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, pin_memory=torch.device(device).type == "cuda",
                        persistent_workers=False)
    feats = []
    for images in tqdm(loader, desc=desc, mininterval=2.0, leave=False):
        feats.append(encode_fn(images.to(device, non_blocking=True)).float().cpu())
    return torch.cat(feats)


def features_checksum(features):
    """sha256 of a feature tensor's bytes (with its shape and dtype): what a cache file must still hold."""
    t = features.detach().cpu().contiguous()
    h = hashlib.sha256(f"{tuple(t.shape)}:{t.dtype}".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def damage_of(entry):
    """Why a loaded cache entry cannot be trusted (bytes changed, wrong shape, NaN/inf rows), or None."""
    features = entry.get("features") if isinstance(entry, dict) else None
    if not torch.is_tensor(features):
        return "it holds no feature tensor"
    if entry.get("shape") is not None and tuple(features.shape) != tuple(entry["shape"]):
        return f"its features have shape {tuple(features.shape)}, but it was written with {tuple(entry['shape'])}"
    if entry.get("sha256") is None:
        return "it has no checksum (written by an older clipadapt)"
    if features_checksum(features) != entry["sha256"]:
        return "its bytes changed since it was written (checksum mismatch)"
    bad_rows = (~torch.isfinite(features.reshape(len(features), -1))).any(dim=1).nonzero().flatten() \
        if features.ndim and len(features) else torch.zeros(0)
    if len(bad_rows):
        return f"{len(bad_rows)} row(s) hold NaN or inf, e.g. row {int(bad_rows[0])}"
    return None


# Cache folders this process found unwritable (full disk, quota, read-only): said once, not retried.
_UNWRITABLE = set()


def _note_unwritable(cache_dir, exc, what):
    if cache_dir not in _UNWRITABLE:
        _UNWRITABLE.add(cache_dir)
        print(f"Note: {what} ({exc.strerror or exc}); features are computed without caching them from now on in "
              "this run (this note is not repeated)")


class FeatureCache:
    """Files `<cache_dir>/<key[:2]>/<key>.pt` holding {"features", "shape", "sha256", "meta"}; a file
    whose checksum, shape or values do not hold up is recomputed with a printed note. A cache that
    cannot be written (read-only, full) is skipped with a note: features are computed online."""

    def __init__(self, cache_dir=""):
        self.cache_dir = cache_dir or default_cache_dir()

    def path(self, key):
        return osp.join(self.cache_dir, key[:2], f"{key}.pt")

    def load(self, key):
        path = self.path(key)
        if not osp.exists(path):
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a damaged file is recomputed, never trusted
            print(f"Feature cache file {path} is unreadable ({exc}); recomputing it")
            return None
        damage = damage_of(entry)
        if damage:
            print(f"Feature cache file {path} is damaged ({damage}); recomputing it")
            return None
        return entry["features"]

    def _lock(self, key):
        return file_lock(self.path(key) + ".lock")

    def _temp_prefix(self, key):
        return f".tmp-{key}-"

    def _remove_leftovers(self, key):
        """Temp files of this key are only written under its lock, so any found now are from a killed writer."""
        for tmp in glob.glob(osp.join(glob.escape(osp.dirname(self.path(key))), self._temp_prefix(key) + "*.part")):
            try:
                os.remove(tmp)
                print(f"Removed {tmp}, left by an interrupted feature-cache write")
            except OSError:
                pass

    def get_or_compute(self, key, compute_fn, meta=None):
        features = self.load(key)
        if features is not None:
            return features
        if self.cache_dir in _UNWRITABLE:
            return self._checked(compute_fn(), meta)
        try:
            lock = self._lock(key)
            lock.__enter__()
        except OSError as exc:  # read-only or full cache folder: the features are still computable
            _note_unwritable(self.cache_dir, exc, f"feature cache {self.cache_dir} cannot be written")
            return self._checked(compute_fn(), meta)
        try:
            self._remove_leftovers(key)
            features = self.load(key)  # another process may have filled it while we waited
            if features is None:
                print(f"Computing image features for the cache: {self.path(key)}")
                features = self._checked(compute_fn(), meta)
                entry = {"features": features, "shape": list(features.shape), "sha256": features_checksum(features),
                         "meta": meta or {}}
                try:
                    atomic_torch_save(entry, self.path(key), prefix=self._temp_prefix(key))
                except OSError as exc:
                    _note_unwritable(self.cache_dir, exc, f"could not write the feature cache file {self.path(key)}")
        finally:
            lock.__exit__(None, None, None)
        return features

    @staticmethod
    def _checked(features, meta):
        """Features the image encoder returned with NaN/inf are an error here, not a cache entry."""
        flat = features.reshape(len(features), -1) if features.ndim and len(features) else features
        bad = (~torch.isfinite(flat)).any(dim=1).nonzero().flatten() if flat.ndim == 2 else []
        if len(bad):
            what = ", ".join(f"{k} {v}" for k, v in (meta or {}).items() if v is not None)
            raise FloatingPointError(
                f"The image encoder returned NaN or inf features for {len(bad)} image(s) ({what}), e.g. row "
                f"{int(bad[0])}; they are not cached. Check the backbone weights, or set the trainer's PREC to fp32 "
                "(fp16 can overflow).")
        return features
