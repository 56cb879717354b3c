"""The image-feature cache: equal to fresh features, keyed on everything that matters, never half-read."""
import os

import pytest
import torch

from clipadapt.features import FeatureCache, feature_key, image_list_digest
from helpers import make_cfg


@pytest.fixture
def coop_trainer(shapes_root, tmp_path):
    from clipadapt.engine import build_trainer
    cfg = make_cfg("CoOp", "configs/trainers/CoOp/vit_b16_ep50_ctxv1.yaml", shapes_root, tmp_path / "out",
                   ["DATASET.NUM_SHOTS", "2", "FEATURES.CACHE_DIR", str(tmp_path / "feats")])
    return build_trainer(cfg)


def test_cached_features_equal_fresh_ones(coop_trainer):
    trainer = coop_trainer
    cached = trainer.cached_features("test")
    images = torch.stack([trainer.transform_test(__import__("PIL.Image").Image.open(d.impath).convert("RGB"))
                          for d in trainer.dm.dataset.test])
    torch.testing.assert_close(cached, trainer.encode_images(images), rtol=1e-5, atol=1e-5)
    trainer._features.clear()
    again = trainer.cached_features("test")  # now read from disk
    torch.testing.assert_close(again, cached)


def test_training_views_are_deterministic_and_differ_by_view(coop_trainer):
    trainer = coop_trainer
    v0, v1 = trainer.cached_features("train_x", 0).clone(), trainer.cached_features("train_x", 1).clone()
    assert not torch.allclose(v0, v1)  # different augmentations
    trainer._features.clear()
    cache_files = sum(len(f) for _, _, f in os.walk(trainer.cfg.FEATURES.CACHE_DIR))
    torch.testing.assert_close(trainer.cached_features("train_x", 0), v0)
    assert sum(len(f) for _, _, f in os.walk(trainer.cfg.FEATURES.CACHE_DIR)) == cache_files  # reused


def test_key_changes_with_every_ingredient(shapes_root):
    base = dict(dataset="Shapes", split="test", images="abc", backbone="tiny:1", transform="T", view_seed=None, prec="fp32")
    keys = {feature_key(**base)}
    for field, value in [("backbone", "tiny:2"), ("transform", "T2"), ("view_seed", 3), ("images", "abd"),
                         ("split", "val"), ("prec", "bf16")]:
        keys.add(feature_key(**{**base, field: value}))
    assert len(keys) == 7
    assert feature_key(**base) == feature_key(**dict(reversed(list(base.items()))))


def test_image_list_digest_follows_paths_and_labels_not_root(shapes_root, tmp_path):
    class Item:
        def __init__(self, impath, label):
            self.impath, self.label = impath, label
    a = [Item("/r1/x/1.png", 0), Item("/r1/x/2.png", 1)]
    moved = [Item("/r2/x/1.png", 0), Item("/r2/x/2.png", 1)]
    assert image_list_digest(a, "/r1") == image_list_digest(moved, "/r2")
    assert image_list_digest(a, "/r1") != image_list_digest([a[1], a[0]], "/r1")
    assert image_list_digest(a, "/r1") != image_list_digest([Item("/r1/x/1.png", 1), a[1]], "/r1")


def test_damaged_or_partial_cache_file_is_recomputed(tmp_path):
    cache = FeatureCache(str(tmp_path))
    key = feature_key(test="x")
    calls = []

    def compute():
        calls.append(1)
        return torch.arange(6.0).view(2, 3)

    first = cache.get_or_compute(key, compute)
    with open(cache.path(key), "r+b") as f:  # a truncated file, as a crash mid-write would leave without rename
        f.truncate(20)
    again = cache.get_or_compute(key, compute)
    torch.testing.assert_close(first, again)
    assert len(calls) == 2
    leftovers = [f for _, _, fs in os.walk(tmp_path) for f in fs if f.endswith(".part")]
    assert leftovers == []


def test_image_list_digest_changes_when_a_file_is_rewritten(tmp_path):
    class Item:
        def __init__(self, impath, label):
            self.impath, self.label = impath, label
    path = tmp_path / "a.png"
    path.write_bytes(b"one")
    items = [Item(str(path), 0)]
    before = image_list_digest(items, str(tmp_path))
    path.write_bytes(b"other content")  # regenerated in place under the same name
    assert image_list_digest(items, str(tmp_path)) != before
