"""On-disk cache of frozen image-encoder features.

The image encoder of every trainer here is frozen, so its features depend only on (image list,
backbone weights, transform, augmentation view, precision). They are computed once and shared by
every method, seed and checkpoint. The key hashes all of these, so any change misses the cache
instead of reusing stale features. Files are written to a temporary name and renamed (readers never
see half a file), and a lock file makes a second process wait for the first instead of duplicating
the work.
"""
import contextlib
import fcntl
import hashlib
import json
import os
import os.path as osp

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .engine import atomic_torch_save
from .engine.builtin.data_manager import read_image
from .paths import cache_root

CACHE_VERSION = 1


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


class FeatureCache:
    def __init__(self, cache_dir=""):
        self.cache_dir = cache_dir or default_cache_dir()

    def path(self, key):
        return osp.join(self.cache_dir, key[:2], f"{key}.pt")

    def load(self, key):
        path = self.path(key)
        if not osp.exists(path):
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)["features"]
        except Exception as exc:  # a damaged file is recomputed, never trusted
            print(f"Feature cache file {path} is unreadable ({exc}); recomputing it")
            return None

    @contextlib.contextmanager
    def _lock(self, key):
        os.makedirs(osp.dirname(self.path(key)), exist_ok=True)
        with open(self.path(key) + ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def get_or_compute(self, key, compute_fn, meta=None):
        features = self.load(key)
        if features is not None:
            return features
        with self._lock(key):
            features = self.load(key)  # another process may have filled it while we waited
            if features is None:
                features = compute_fn()
                atomic_torch_save({"features": features, "meta": meta or {}}, self.path(key))
        return features
