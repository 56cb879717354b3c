"""Few-shot samples as CoOp makes them: Dassl's draw, and CoOp's own split_fewshot/*.pkl files.

The fixture `fixtures/dassl_fewshot_draws.json.gz` was made by running Dassl's own
`DatasetBase.generate_fewshot_dataset` (Dassl.pytorch, unmodified) on CoOp's split files, seeded as
Dassl's `set_random_seed` seeds Python's `random`, train with K shots then val with min(K, 4), as
CoOp's dataset classes call it. It holds indices into each split file's train / val lists.
"""
import gzip
import hashlib
import json
import os
import pickle
import random
import sys
import types
from pathlib import Path

import pytest

from clipadapt.data import DatasetError, draw_fewshot
from helpers import build_dataset
from helpers import SHARED_SPLITS, tiny_eurosat
from helpers import impaths as paths

FIXTURE = Path(__file__).parent / "fixtures" / "dassl_fewshot_draws.json.gz"
SPLITS = Path(SHARED_SPLITS)
SPLIT_FILES = ["split_zhou_Caltech101.json", "split_zhou_DescribableTextures.json", "split_zhou_EuroSAT.json",
               "split_zhou_OxfordFlowers.json", "split_zhou_OxfordPets.json", "split_zhou_StanfordCars.json",
               "split_zhou_UCF101.json"]


def split_items(path, key):
    """A split file's entries in file order, as the dataset readers pass them to the draw (the images
    themselves are not here, so read_split's existence check is not used)."""
    return [types.SimpleNamespace(impath=rel, label=int(label), classname=cname)
            for rel, label, cname in json.loads(path.read_text())[key]]


@pytest.fixture(scope="module")
def dassl_draws():
    with gzip.open(FIXTURE, "rt") as f:
        return json.load(f)


@pytest.mark.parametrize("split_file", SPLIT_FILES)
def test_fewshot_draw_equals_dassls_for_every_seed_and_shot_count(split_file, dassl_draws):
    path = SPLITS / split_file
    if not path.is_file():
        pytest.skip(f"CoOp's split file not found at {path} (project test data, not shipped)")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == dassl_draws["split_sha256"][split_file]
    train, val = (split_items(path, key) for key in ("train", "val"))
    index = {key: {d.impath: i for i, d in enumerate(items)} for key, items in (("train", train), ("val", val))}
    for seed in (1, 2, 3):
        for shots in (1, 2, 4, 8, 16):
            rng = random.Random(seed)
            ours_train = draw_fewshot(train, shots, rng)
            ours_val = draw_fewshot(val, min(shots, 4), rng)
            expected = dassl_draws["draws"][f"{split_file}|{seed}|{shots}"]
            assert [index["train"][d.impath] for d in ours_train] == expected["train"], (seed, shots)
            assert [index["val"][d.impath] for d in ours_val] == expected["val"], (seed, shots)


def test_sorted_label_order_would_differ_on_flowers(dassl_draws):
    """The check above can fail: Flowers' labels do not appear in sorted order in its split."""
    path = SPLITS / "split_zhou_OxfordFlowers.json"
    if not path.is_file():
        pytest.skip(f"CoOp's split file not found at {path}")
    train = split_items(path, "train")
    by_sorted_label = sorted(train, key=lambda d: d.label)  # stable: within-class order unchanged
    index = {d.impath: i for i, d in enumerate(train)}
    drawn = [index[d.impath] for d in draw_fewshot(by_sorted_label, 1, random.Random(1))]
    assert drawn != dassl_draws["draws"]["split_zhou_OxfordFlowers.json|1|1"]["train"]


# ---------------------------------------------------------------------------------------------
# CoOp's pkl files

class _Datum:
    """Pickles as Dassl's Datum does: module path, class name and its four private attributes."""

    def __init__(self, impath, label, classname):
        self._impath, self._label, self._domain, self._classname = impath, label, 0, classname


@pytest.fixture
def dassl_datum_module(monkeypatch):
    """A stand-in `dassl.data.datasets.base_dataset` so pickle names Dassl's class, as CoOp's files do."""
    names = ["dassl", "dassl.data", "dassl.data.datasets", "dassl.data.datasets.base_dataset"]
    for name in names:
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    _Datum.__module__, _Datum.__qualname__ = names[-1], "Datum"
    sys.modules[names[-1]].Datum = _Datum
    yield
    _Datum.__module__, _Datum.__qualname__ = __name__, "_Datum"


def write_coop_pickle(path, split, chosen, foreign_root="/home/someone/DATA/eurosat/2750"):
    """A CoOp pkl of the given [rel, label, cname] entries, with the writer's absolute paths."""
    data = {key: [_Datum(f"{foreign_root}/{rel}", label, cname) for rel, label, cname in chosen[key]]
            for key in chosen}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)


def pick(split, key, per_class, offset=0):
    by_label = {}
    for entry in split[key]:
        by_label.setdefault(entry[1], []).append(entry)
    return [e for group in by_label.values() for e in group[offset:offset + per_class]]


def test_coop_pickle_is_used_rerooted_and_never_overwritten(tmp_path, dassl_datum_module, capsys):
    split = tiny_eurosat(tmp_path)
    pkl = tmp_path / "eurosat" / "split_fewshot" / "shot_2-seed_1.pkl"
    chosen = {"train": pick(split, "train", 2, offset=3), "val": pick(split, "val", 2)}
    write_coop_pickle(pkl, split, chosen)
    before = pkl.read_bytes()
    ds = build_dataset(tmp_path, "EuroSAT", shots=2, seed=1)
    out = capsys.readouterr().out
    assert f"Loading preprocessed few-shot data from {pkl}" in out
    image_dir = tmp_path / "eurosat" / "2750"
    assert paths(ds.train_x) == [str(image_dir / rel) for rel, _, _ in chosen["train"]]
    assert paths(ds.val) == [str(image_dir / rel) for rel, _, _ in chosen["val"]]
    assert pkl.read_bytes() == before
    assert not (tmp_path / "eurosat" / "split_fewshot" / "shot_2-seed_1.json").exists()
    # without the pkl, our own draw (not the pkl's hand-picked images) is made
    pkl.unlink()
    drawn = build_dataset(tmp_path, "EuroSAT", shots=2, seed=1)
    assert paths(drawn.train_x) != paths(ds.train_x)


def test_coop_pickle_that_does_not_fit_the_split_is_refused(tmp_path, dassl_datum_module):
    split = tiny_eurosat(tmp_path)
    pkl = tmp_path / "eurosat" / "split_fewshot" / "shot_2-seed_1.pkl"
    write_coop_pickle(pkl, split, {"train": pick(split, "train", 1), "val": pick(split, "val", 2)})
    with pytest.raises(DatasetError, match=r"does not fit the current split: class \d+ has 1 train images"):
        build_dataset(tmp_path, "EuroSAT", shots=2, seed=1)
    wrong = {"train": pick(split, "test", 2), "val": pick(split, "val", 2)}  # test images named as train
    write_coop_pickle(pkl, split, wrong)
    with pytest.raises(DatasetError, match="not in the current train split"):
        build_dataset(tmp_path, "EuroSAT", shots=2, seed=1)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_planted_pickle_is_refused_without_running(tmp_path):
    tiny_eurosat(tmp_path)
    marker = tmp_path / "pwned"
    pkl = tmp_path / "eurosat" / "split_fewshot" / "shot_2-seed_1.pkl"
    pkl.parent.mkdir(parents=True)
    pkl.write_bytes(pickle.dumps({"train": [_Payload(marker)], "val": []}))
    with pytest.raises(DatasetError, match=r"refers to (posix|os|nt)\.system.*not loaded"):
        build_dataset(tmp_path, "EuroSAT", shots=2, seed=1)
    assert not marker.exists()


def test_json_cache_from_the_sorted_draw_is_drawn_again(tmp_path, capsys):
    tiny_eurosat(tmp_path)
    first = build_dataset(tmp_path, "EuroSAT", shots=2, seed=1)
    cache = tmp_path / "eurosat" / "split_fewshot" / "shot_2-seed_1.json"
    data = json.loads(cache.read_text())
    assert data["draw"] == "dassl"
    del data["draw"]
    cache.write_text(json.dumps(data))
    capsys.readouterr()
    again = build_dataset(tmp_path, "EuroSAT", shots=2, seed=1)
    assert "sorted order" in capsys.readouterr().out
    assert paths(again.train_x) == paths(first.train_x) and json.loads(cache.read_text())["draw"] == "dassl"


def fake_imagenet(root, wnids, per_class):
    """An ImageNet tree of empty files and its classnames.txt (made-up wnids are enough here)."""
    (root / "imagenet").mkdir(parents=True)
    (root / "imagenet" / "classnames.txt").write_text("".join(f"{w} class {w[-1]}\n" for w in wnids))
    for split, n in (("train", per_class), ("val", 2)):
        for w in wnids:
            (root / "imagenet" / "images" / split / w).mkdir(parents=True)
            for i in range(n):
                (root / "imagenet" / "images" / split / w / f"{w}_{i}.JPEG").touch()


def test_coop_imagenet_file_list_gives_coops_order_and_draw(tmp_path, dassl_datum_module, capsys):
    """CoOp lists ImageNet's class folders unsorted (os.listdir order) and pickles the list as
    preprocessed.pkl; its few-shot draws follow that order, so the run reads that file."""
    wnids = ["n0003", "n0001", "n0002"]
    fake_imagenet(tmp_path, wnids, per_class=6)
    label = {w: i for i, w in enumerate(sorted(wnids))}
    rng = random.Random(5)
    data = {}
    for key, folder, n in (("train", "train", 6), ("test", "val", 2)):
        items = []
        for w in sorted(wnids):
            names = [f"{w}_{i}.JPEG" for i in range(n)]
            rng.shuffle(names)  # a filesystem's order, not a sorted one
            items += [_Datum(f"/old/DATA/imagenet/images/{folder}/{w}/{f}", label[w], f"class {w[-1]}") for f in names]
        data[key] = items
    pkl = tmp_path / "imagenet" / "preprocessed.pkl"
    with open(pkl, "wb") as f:
        pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)

    ds = build_dataset(tmp_path, "ImageNet", shots=2, seed=1)
    assert f"Loading CoOp's file list {pkl}" in capsys.readouterr().out
    image_dir = tmp_path / "imagenet" / "images"
    full = build_dataset(tmp_path, "ImageNet")
    assert paths(full.train_x) == [str(image_dir / d._impath.split("/images/")[1]) for d in data["train"]]
    assert paths(full.test) == [str(image_dir / d._impath.split("/images/")[1]) for d in data["test"]]
    assert [d.label for d in full.train_x] == [d._label for d in data["train"]]
    # the few-shot draw is Dassl's over the pkl's order (random.sample per label, seeded with the run's seed)
    random.seed(1)
    by_label = {}
    for d in full.train_x:
        by_label.setdefault(d.label, []).append(d.impath)
    want = [p for lab in by_label for p in random.sample(by_label[lab], 2)]
    assert paths(ds.train_x) == want
    assert not (tmp_path / "imagenet" / "preprocessed.json").exists()

    # a file written for other folders, or with labels that do not follow the folders, is refused by name
    data["train"][0]._label = 2
    with open(pkl, "wb") as f:
        pickle.dump(data, f)
    with pytest.raises(DatasetError, match="preprocessed.pkl.*has label 2"):
        build_dataset(tmp_path, "ImageNet")
    data["train"][0]._label = label["n0001"]
    data["test"][-1]._impath = "/old/DATA/imagenet/images/val/n0003/missing.JPEG"
    with open(pkl, "wb") as f:
        pickle.dump(data, f)
    with pytest.raises(DatasetError, match="missing.JPEG does not exist.*Move it away"):
        build_dataset(tmp_path, "ImageNet")
