"""Dataset readers: CoOp's real split files, real EuroSAT, few-shot caching, base/new, clear errors."""
import json
import os
import random
import shutil
import stat
import sys
from pathlib import Path

import pytest
from yacs.config import CfgNode

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import datasets  # noqa: E402  (registers every dataset)
from clipadapt.data import (DatasetError, DatasetNotFoundError, read_and_split_data, read_split,  # noqa: E402
                            sample_fewshot, save_split, subsample_classes)
from clipadapt.engine import DATASET_REGISTRY  # noqa: E402
from helpers import SHARED_DATA, SHARED_SPLITS, build_dataset, tiny_eurosat, touch_split, write_json  # noqa: E402
from helpers import impaths as paths  # noqa: E402

SHARED = Path(SHARED_DATA)
SPLITS = Path(SHARED_SPLITS)
needs_shared = pytest.mark.skipif(
    not SPLITS.is_dir(), reason=f"real CoOp split files not found at {SPLITS} (project test data, not shipped)")
needs_eurosat = pytest.mark.skipif(
    not (SHARED / "eurosat" / "2750").is_dir(), reason=f"real EuroSAT not found at {SHARED / 'eurosat'}")

EUROSAT_NAMES = ["Annual Crop Land", "Forest", "Herbaceous Vegetation Land", "Highway or Road",
                 "Industrial Buildings", "Pasture Land", "Permanent Crop Land", "Residential Buildings",
                 "River", "Sea or Lake"]


build = build_dataset


def readonly_eurosat(tmp_path):
    """The shared EuroSAT seen through a read-only folder of links, as CI (and many users) have it.

    Whether ../shared itself is writable depends on the machine; the few-shot tests must not, and
    they must never write into it.
    """
    view = tmp_path / "view" / "eurosat"
    view.mkdir(parents=True)
    for name in ("2750", "split_zhou_EuroSAT.json"):
        (view / name).symlink_to(SHARED / "eurosat" / name)
    view.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    return tmp_path / "view"


@pytest.fixture(autouse=True)
def _no_user_cache(monkeypatch):
    monkeypatch.delenv("CLIPADAPT_CACHE", raising=False)


# ---------------------------------------------------------------------------------------------
# real EuroSAT (read-only shared copy)

@needs_eurosat
def test_real_eurosat_counts_and_names():
    ds = build(SHARED, "EuroSAT")
    assert (len(ds.train_x), len(ds.val), len(ds.test)) == (13500, 5400, 8100)
    assert ds.num_classes == 10 and ds.classnames == EUROSAT_NAMES == ds.all_classnames
    assert ds.base_classnames == EUROSAT_NAMES[:5] and ds.new_classnames == EUROSAT_NAMES[5:]
    assert ds.subsample == "all"


@needs_eurosat
def test_real_eurosat_fewshot_stable_per_seed_and_cached_outside_readonly_share(tmp_path, monkeypatch, capsys):
    before = sorted(os.listdir(SHARED / "eurosat"))
    root = readonly_eurosat(tmp_path)
    monkeypatch.setenv("CLIPADAPT_CACHE", str(tmp_path / "cache"))
    a = build(root, "EuroSAT", shots=16, seed=1)
    assert (len(a.train_x), len(a.val)) == (160, 40) and len(a.test) == 8100
    cache = tmp_path / "cache" / "fewshot" / "eurosat" / "shot_16-seed_1.json"
    assert cache.is_file()
    assert str(tmp_path) not in cache.read_text() and str(SHARED) not in cache.read_text()  # relative paths
    capsys.readouterr()
    b = build(root, "EuroSAT", shots=16, seed=1)
    assert "Loading preprocessed few-shot data" in capsys.readouterr().out
    assert paths(a.train_x) == paths(b.train_x) and paths(a.val) == paths(b.val)
    c = build(root, "EuroSAT", shots=16, seed=2)
    assert set(paths(c.train_x)) != set(paths(a.train_x))
    assert sorted(os.listdir(SHARED / "eurosat")) == before  # the shared folder is never written


@needs_eurosat
def test_real_eurosat_fewshot_without_cache_dir_is_deterministic_and_independent_of_global_rng(tmp_path, capsys):
    root = readonly_eurosat(tmp_path)
    random.seed(123)
    a = build(root, "EuroSAT", shots=4, seed=3)
    assert "is not cached" in capsys.readouterr().out
    random.seed(999)
    random.random()
    b = build(root, "EuroSAT", shots=4, seed=3)
    assert paths(a.train_x) == paths(b.train_x) and paths(a.val) == paths(b.val)


@needs_eurosat
def test_real_eurosat_base_new_share_shots(tmp_path, capsys):
    root = readonly_eurosat(tmp_path)
    full = build(root, "EuroSAT", shots=16, seed=1)
    base = build(root, "EuroSAT", shots=16, seed=1, subsample="base")
    new = build(root, "EuroSAT", shots=16, seed=1, subsample="new")
    out = capsys.readouterr().out
    assert "SUBSAMPLE BASE CLASSES!" in out and "SUBSAMPLE NEW CLASSES!" in out
    assert base.classnames == EUROSAT_NAMES[:5] and new.classnames == EUROSAT_NAMES[5:]
    assert base.num_classes == new.num_classes == 5
    assert {d.label for d in new.train_x} == set(range(5)) == {d.label for d in new.test}
    assert set(paths(base.train_x)) | set(paths(new.train_x)) == set(paths(full.train_x))
    assert len(base.test) + len(new.test) == 8100
    assert base.new_classnames == new.new_classnames == EUROSAT_NAMES[5:]


@needs_eurosat
def test_real_eurosat_gzsl_label_space(tmp_path):
    ds = build(readonly_eurosat(tmp_path), "EuroSAT", shots=2, seed=1, subsample="gzsl")
    assert {d.label for d in ds.train_x} == set(range(5)) == {d.label for d in ds.val}
    assert {d.label for d in ds.test} == set(range(10)) and len(ds.test) == 8100
    assert ds.classnames == EUROSAT_NAMES and ds.num_classes == 10 and ds.lab2cname[7] == "Residential Buildings"
    assert all(d.classname == EUROSAT_NAMES[d.label] for d in ds.test)
    assert "gzsl" in ds.label_space


# ---------------------------------------------------------------------------------------------
# few-shot cache on a writable copy

def test_fewshot_cache_survives_moving_the_root(tmp_path, capsys):
    tiny_eurosat(tmp_path / "a")
    a = build(tmp_path / "a", "EuroSAT", shots=3, seed=1)
    cache = tmp_path / "a" / "eurosat" / "split_fewshot" / "shot_3-seed_1.json"
    assert cache.is_file() and not list(cache.parent.glob(".tmp-*"))
    entries = json.loads(cache.read_text())["train"]
    assert all(not os.path.isabs(rel) and rel.startswith("2750/") for rel, _, _ in entries)
    shutil.move(str(tmp_path / "a"), str(tmp_path / "b"))
    capsys.readouterr()
    b = build(tmp_path / "b", "EuroSAT", shots=3, seed=1)
    out = capsys.readouterr().out
    assert "Loading preprocessed few-shot data" in out and "does not match" not in out
    rel = lambda ds, root: [os.path.relpath(p, root) for p in paths(ds.train_x)]  # noqa: E731
    assert rel(a, tmp_path / "a") == rel(b, tmp_path / "b")
    assert all(p.startswith(str(tmp_path / "b")) for p in paths(b.train_x))


def test_stale_fewshot_cache_is_redrawn_with_a_note(tmp_path, capsys):
    split = tiny_eurosat(tmp_path)
    a = build(tmp_path, "EuroSAT", shots=3, seed=1)
    cache = tmp_path / "eurosat" / "split_fewshot" / "shot_3-seed_1.json"
    data = json.loads(cache.read_text())
    test_entry = split["test"][0]
    data["train"][0] = ["2750/" + test_entry[0], test_entry[1], test_entry[2]]  # a file not in train
    cache.write_text(json.dumps(data))
    capsys.readouterr()
    b = build(tmp_path, "EuroSAT", shots=3, seed=1)
    out = capsys.readouterr().out
    assert "does not match the current split" in out and "not in the current train split" in out
    assert paths(a.train_x) == paths(b.train_x)
    cache.write_text("{not json")
    build(tmp_path, "EuroSAT", shots=3, seed=1)
    assert "not valid json" in capsys.readouterr().out
    assert json.loads(cache.read_text())["train"][0][0].startswith("2750/")


def test_readonly_dataset_dir_caches_under_env_or_not_at_all(tmp_path, monkeypatch, capsys):
    tiny_eurosat(tmp_path / "data")
    ds_dir = tmp_path / "data" / "eurosat"
    ds_dir.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    try:
        a = build(tmp_path / "data", "EuroSAT", shots=2, seed=5)
        assert "is not cached" in capsys.readouterr().out
        monkeypatch.setenv("CLIPADAPT_CACHE", str(tmp_path / "cache"))
        b = build(tmp_path / "data", "EuroSAT", shots=2, seed=5)
        assert (tmp_path / "cache" / "fewshot" / "eurosat" / "shot_2-seed_5.json").is_file()
        assert paths(a.train_x) == paths(b.train_x)
        assert not (ds_dir / "split_fewshot").exists()
    finally:
        ds_dir.chmod(0o755)


def test_sample_fewshot_function_counts_and_val_cap(tmp_path):
    tiny_eurosat(tmp_path)
    ds_dir = str(tmp_path / "eurosat")
    train, val, _ = read_split(os.path.join(ds_dir, "split_zhou_EuroSAT.json"), os.path.join(ds_dir, "2750"))
    tr, va = sample_fewshot(ds_dir, train, val, 8, seed=1, cache_dir=str(tmp_path / "c"))
    assert len(tr) == 4 * 5  # classes have 5 train images: all of them
    assert len(va) == 4 * 2  # min(8, 4) = 4, but only 2 val images per class
    tr2, va2 = sample_fewshot(ds_dir, train, None, 2, seed=1)
    assert len(tr2) == 8 and va2 is None


# ---------------------------------------------------------------------------------------------
# subsampling

def test_subsample_classes_rule_and_modes(tmp_path):
    tiny_eurosat(tmp_path, classes=("AnnualCrop", "Forest", "Highway", "River", "SeaLake"))
    ds_dir = str(tmp_path / "eurosat")
    train, val, test = read_split(os.path.join(ds_dir, "split_zhou_EuroSAT.json"), os.path.join(ds_dir, "2750"))
    assert subsample_classes(train, val, test, subsample="all") == (train, val, test)
    base = subsample_classes(train, val, test, subsample="base")
    new = subsample_classes(train, val, test, subsample="new")
    assert [{d.label for d in s} for s in base] == [{0, 1, 2}] * 3  # ceil(5/2) = 3 base classes
    assert [{d.label for d in s} for s in new] == [{0, 1}] * 3
    assert {d.classname for d in new[0]} == {"River", "SeaLake"}
    g_train, g_val, g_test = subsample_classes(train, val, test, subsample="gzsl")
    assert {d.label for d in g_train} == {0, 1, 2} and {d.label for d in g_test} == {0, 1, 2, 3, 4}
    with pytest.raises(ValueError, match="base2new"):
        subsample_classes(train, subsample="base2new")


# ---------------------------------------------------------------------------------------------
# errors name the path

def test_missing_root_folder_imagedir_and_split_name_the_path(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        build(tmp_path / "nope", "EuroSAT")
    assert str(tmp_path / "nope") in str(err.value) and "DATASETS.md" in str(err.value)
    with pytest.raises(FileNotFoundError) as err:
        build(tmp_path, "EuroSAT")
    msg = str(err.value)
    assert str(tmp_path / "eurosat") in msg and "2750/" in msg and "split_zhou_EuroSAT.json" in msg
    assert "DATASETS.md" in msg and "└──" in msg
    (tmp_path / "eurosat").mkdir()
    with pytest.raises(DatasetNotFoundError, match="Image folder not found: " + str(tmp_path / "eurosat" / "2750")):
        build(tmp_path, "EuroSAT")
    (tmp_path / "oxford_pets" / "images").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError) as err:
        build(tmp_path, "OxfordPets")
    assert "Split file not found: " + str(tmp_path / "oxford_pets" / "split_zhou_OxfordPets.json") in str(err.value)


def test_bad_split_files_name_the_file_and_entry(tmp_path):
    split = tiny_eurosat(tmp_path)
    path = tmp_path / "eurosat" / "split_zhou_EuroSAT.json"
    image_dir = str(tmp_path / "eurosat" / "2750")

    path.write_text("[1, 2")
    with pytest.raises(DatasetError, match="not valid json") as err:
        read_split(str(path), image_dir)
    assert str(path) in str(err.value)

    write_json({"train": split["train"], "test": split["test"]}, str(path))
    with pytest.raises(DatasetError, match=r"lacks the key\(s\) \['val'\]") as err:
        build(tmp_path, "EuroSAT")
    assert str(path) in str(err.value)

    bad = json.loads(json.dumps(split))
    bad["test"][2][1] = 7
    write_json(bad, str(path))
    with pytest.raises(DatasetError, match=r"entry test\[2\].*label 7 is out of range") as err:
        build(tmp_path, "EuroSAT")
    assert str(path) in str(err.value)

    bad = json.loads(json.dumps(split))
    bad["val"][1][2] = "Sea or Lake"
    write_json(bad, str(path))
    with pytest.raises(DatasetError, match=r"entry val\[1\].*inconsistent") as err:
        build(tmp_path, "EuroSAT")
    assert str(path) in str(err.value)

    bad = json.loads(json.dumps(split))
    bad["train"] = [e for e in bad["train"] if e[1] != 2]
    write_json(bad, str(path))
    with pytest.raises(DatasetError, match=r"class 2 \('Highway or Road'\) has no images in \"train\"") as err:
        build(tmp_path, "EuroSAT")
    assert str(path) in str(err.value)

    write_json(split, str(path))
    os.remove(os.path.join(image_dir, split["val"][3][0]))
    os.remove(os.path.join(image_dir, split["test"][0][0]))
    with pytest.raises(DatasetError) as err:
        build(tmp_path, "EuroSAT")
    msg = str(err.value)
    assert "names 2 of 40 images that are not on disk" in msg and str(path) in msg
    assert "the first is " + os.path.join(image_dir, split["val"][3][0]) in msg


def test_read_and_split_data_and_empty_class(tmp_path, capsys):
    image_dir = tmp_path / "eurosat" / "2750"
    for c, n in (("Forest", 10), ("AnnualCrop", 7)):
        (image_dir / c).mkdir(parents=True)
        for i in range(n):
            (image_dir / c / f"{c}_{i}.jpg").touch()
    ds = build(tmp_path, "EuroSAT")  # no json: built 50/20/30 from the folders, then saved
    assert ds.classnames == ["Annual Crop Land", "Forest"]
    assert (len(ds.train_x), len(ds.val), len(ds.test)) == (4 + 5, 1 + 2, 2 + 3)
    saved = tmp_path / "eurosat" / "split_zhou_EuroSAT.json"
    again = read_split(str(saved), str(image_dir))
    assert [paths(s) for s in again] == [paths(ds.train_x), paths(ds.val), paths(ds.test)]
    assert read_and_split_data(str(image_dir), seed=1)[0][0].impath == ds.train_x[0].impath
    (image_dir / "Pasture").mkdir()
    with pytest.raises(DatasetError, match="Pasture holds no images") as err:
        read_and_split_data(str(image_dir))
    assert str(image_dir / "Pasture") in str(err.value)


def test_save_split_is_relative_and_atomic(tmp_path):
    split = tiny_eurosat(tmp_path)
    image_dir = str(tmp_path / "eurosat" / "2750")
    train, val, test = read_split(str(tmp_path / "eurosat" / "split_zhou_EuroSAT.json"), image_dir)
    out = tmp_path / "out" / "split.json"
    save_split(train, val, test, str(out), image_dir)
    assert json.loads(out.read_text()) == split
    assert os.listdir(out.parent) == ["split.json"]


def test_shapes_missing_says_how_to_generate(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        build(tmp_path, "Shapes")
    msg = str(err.value)
    assert str(tmp_path / "shapes") in msg and f"python -m clipadapt.world.shapes --root {tmp_path}" in msg
    with pytest.raises(DatasetNotFoundError, match="python -m clipadapt.world.shapes --root"):
        build(tmp_path / "absent", "Shapes")


def test_shapes_reads_coop_layout(tmp_path):
    split = {"train": [], "val": [], "test": []}
    for label, c in enumerate(["red circle", "blue square", "green triangle"]):
        folder = c.replace(" ", "_")
        split["train"] += [[f"{folder}/{i}.png", label, c] for i in range(3)]
        split["val"].append([f"{folder}/3.png", label, c])
        split["test"] += [[f"{folder}/{i}.png", label, c] for i in (4, 5)]
    touch_split(split, str(tmp_path / "shapes" / "images"))
    write_json(split, str(tmp_path / "shapes" / "split_zhou_Shapes.json"))
    ds = build(tmp_path, "Shapes", subsample="new")
    assert ds.classnames == ["green triangle"] and ds.base_classnames == ["red circle", "blue square"]
    assert ds.all_classnames == ["red circle", "blue square", "green triangle"]
    assert (len(ds.train_x), len(ds.val), len(ds.test)) == (3, 1, 2)


# ---------------------------------------------------------------------------------------------
# CoOp's real split files on a tree of empty files

REAL_SPLITS = {
    # name: (json, dataset_dir, image_dir, n_classes, n_base, first classname)
    "Caltech101": ("split_zhou_Caltech101.json", "caltech-101", "101_ObjectCategories", 100, 50, "face"),
    "DescribableTextures": ("split_zhou_DescribableTextures.json", "dtd", "images", 47, 24, "banded"),
    "EuroSAT": ("split_zhou_EuroSAT.json", "eurosat", "2750", 10, 5, "Annual Crop Land"),
    "OxfordFlowers": ("split_zhou_OxfordFlowers.json", "oxford_flowers", "jpg", 102, 51, "pink primrose"),
    "OxfordPets": ("split_zhou_OxfordPets.json", "oxford_pets", "images", 37, 19, "abyssinian"),
    "StanfordCars": ("split_zhou_StanfordCars.json", "stanford_cars", "", 196, 98, "2000 AM General Hummer SUV"),
    "UCF101": ("split_zhou_UCF101.json", "ucf101", "UCF-101-midframes", 101, 51, "Apply_Eye_Makeup"),
}


@needs_shared
@pytest.mark.parametrize("name", sorted(REAL_SPLITS))
def test_real_split_files(name, tmp_path, capsys):
    json_name, dataset_dir, image_dir, n_classes, n_base, first = REAL_SPLITS[name]
    with open(SPLITS / json_name) as f:
        split = json.load(f)
    touch_split(split, str(tmp_path / dataset_dir / image_dir))
    shutil.copy(SPLITS / json_name, tmp_path / dataset_dir / json_name)

    ds = build(tmp_path, name)
    assert (len(ds.train_x), len(ds.val), len(ds.test)) == tuple(len(split[k]) for k in ("train", "val", "test"))
    assert ds.num_classes == n_classes == len(ds.classnames) and ds.classnames[0] == first
    assert ds.train_x[0].impath == os.path.join(tmp_path, dataset_dir, image_dir, split["train"][0][0])
    names = {label: cname for _, label, cname in split["train"]}
    assert ds.all_classnames == [names[y] for y in range(n_classes)]
    assert (len(ds.base_classnames), len(ds.new_classnames)) == (n_base, n_classes - n_base)

    new = build(tmp_path, name, subsample="new", shots=1, seed=1)
    assert new.classnames == ds.new_classnames and new.num_classes == n_classes - n_base
    assert len(new.train_x) == n_classes - n_base
    assert len(new.test) == sum(1 for _, y, _ in split["test"] if y >= n_base)
    assert "SUBSAMPLE NEW CLASSES!" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# ImageNet and its variants, FGVC-Aircraft

def imagenet_names():
    lines = (SPLITS / "imagenet_classnames.txt").read_text().splitlines()
    return lines, {ln.split(" ")[0]: ln.split(" ", 1)[1] for ln in lines}


def touch_folders(base, folders, n=2, ext="JPEG"):
    for folder in folders:
        (base / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (base / folder / f"img_{i}.{ext}").touch()


@needs_shared
def test_imagenet_fake_tree_and_relative_cache(tmp_path, capsys):
    lines, names = imagenet_names()
    wnids = [ln.split(" ")[0] for ln in lines]
    chosen = [wnids[900], wnids[3], wnids[517], wnids[40]]  # 517 is one of the two "crane"s
    root = tmp_path / "a"
    (root / "imagenet").mkdir(parents=True)
    shutil.copy(SPLITS / "imagenet_classnames.txt", root / "imagenet" / "classnames.txt")
    touch_folders(root / "imagenet" / "images" / "train", chosen, n=5)
    touch_folders(root / "imagenet" / "images" / "val", chosen, n=2)

    ds = build(root, "ImageNet")
    assert ds.classnames == [names[w] for w in sorted(chosen)]  # labels follow sorted folders
    assert (len(ds.train_x), len(ds.test)) == (20, 8) and ds.val is ds.test
    cache = root / "imagenet" / "preprocessed.json"
    assert cache.is_file() and str(root) not in cache.read_text()

    shutil.move(str(root), str(tmp_path / "b"))
    capsys.readouterr()
    few = build(tmp_path / "b", "ImageNet", shots=2, seed=1, subsample="base")
    out = capsys.readouterr().out
    assert "Loading the cached file list" in out and "ignoring" not in out
    assert few.classnames == ds.classnames[:2] and len(few.train_x) == 4 and len(few.test) == 4
    assert few.val is few.test
    fewshot = json.loads((tmp_path / "b" / "imagenet" / "split_fewshot" / "shot_2-seed_1.json").read_text())
    assert "val" not in fewshot and len(fewshot["train"]) == 8  # drawn over all 4 classes

    os.remove(tmp_path / "b" / "imagenet" / "images" / "val" / chosen[0] / "img_0.JPEG")
    again = build(tmp_path / "b", "ImageNet")
    assert "ignoring the cached file list" in capsys.readouterr().out and len(again.test) == 7

    (tmp_path / "b" / "imagenet" / "images" / "val" / chosen[0]).rename(tmp_path / "b" / "moved")
    with pytest.raises(DatasetError, match="hold different class folders"):
        build(tmp_path / "b", "ImageNet")


@needs_shared
@pytest.mark.parametrize("name,dataset_dir,image_dir", [("ImageNetA", "imagenet-adversarial", "imagenet-a"),
                                                        ("ImageNetR", "imagenet-rendition", "imagenet-r"),
                                                        ("ImageNetSketch", "imagenet-sketch", "images")])
def test_imagenet_variants_relabel_by_sorted_folder(name, dataset_dir, image_dir, tmp_path):
    lines, names = imagenet_names()
    wnids = [ln.split(" ")[0] for ln in lines]
    chosen = [wnids[i] for i in (999, 1, 500, 250, 7)]
    image_root = tmp_path / dataset_dir / image_dir
    touch_folders(image_root, chosen, n=3, ext="jpg")
    (image_root / "README.txt").touch()
    with pytest.raises(DatasetNotFoundError, match="classnames.txt"):
        build(tmp_path, name)
    (tmp_path / "imagenet").mkdir()
    shutil.copy(SPLITS / "imagenet_classnames.txt", tmp_path / "imagenet" / "classnames.txt")

    ds = build(tmp_path, name, shots=16)  # test-only: NUM_SHOTS does not apply
    assert [ds.lab2cname[y] for y in range(5)] == [names[w] for w in sorted(chosen)]
    assert ds.num_classes == 5 and len(ds.test) == 15 and ds.train_x == ds.test and ds.val is None
    assert all(os.path.basename(os.path.dirname(d.impath)) == sorted(chosen)[d.label] for d in ds.test)
    # a classnames.txt in the dataset's own folder takes precedence
    (tmp_path / dataset_dir / "classnames.txt").write_text("".join(f"{w} my {w}\n" for w in chosen))
    assert build(tmp_path, name).classnames == [f"my {w}" for w in sorted(chosen)]


@needs_shared
def test_imagenetv2_folders_are_labels(tmp_path):
    lines, _ = imagenet_names()
    image_root = tmp_path / "imagenetv2" / "imagenetv2-matched-frequency-format-val"
    touch_folders(image_root, [str(y) for y in range(1000) if y != 3], n=1, ext="jpeg")
    shutil.copy(SPLITS / "imagenet_classnames.txt", tmp_path / "imagenetv2" / "classnames.txt")
    with pytest.raises(DatasetError, match="lacks 1 of the 1000 class folders") as err:
        build(tmp_path, "ImageNetV2")
    assert str(image_root / "3") in str(err.value)
    touch_folders(image_root, ["3"], n=2, ext="jpeg")
    ds = build(tmp_path, "ImageNetV2")
    assert ds.num_classes == 1000 and len(ds.test) == 1001
    assert ds.classnames == [ln.split(" ", 1)[1] for ln in lines]
    assert {d.label for d in ds.test if "/3/" in d.impath} == {3}


def test_fgvc_aircraft_from_official_txt_files(tmp_path):
    ds_dir = tmp_path / "fgvc_aircraft"
    (ds_dir / "images").mkdir(parents=True)
    variants = ["707-320", "A300B4", "Cessna 172", "F/A-18"]
    (ds_dir / "variants.txt").write_text("\n".join(variants) + "\n")
    n = 0
    for split, per in (("train", 3), ("val", 2), ("test", 2)):
        lines = []
        for v in variants:
            for _ in range(per):
                n += 1
                lines.append(f"{1000000 + n} {v}")
                (ds_dir / "images" / f"{1000000 + n}.jpg").touch()
        (ds_dir / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
    ds = build(tmp_path, "FGVCAircraft", subsample="base", shots=2, seed=1)
    assert ds.classnames == ["707-320", "A300B4"] and len(ds.train_x) == 4 and len(ds.test) == 4
    full = build(tmp_path, "FGVCAircraft")
    assert full.classnames == variants and (len(full.train_x), len(full.val), len(full.test)) == (12, 8, 8)
    with open(ds_dir / "images_variant_val.txt", "a") as f:
        f.write("1999999 Boeing 797\n")
    with pytest.raises(DatasetError, match="images_variant_val.txt: line 9 .*'Boeing 797'"):
        build(tmp_path, "FGVCAircraft")
    os.remove(ds_dir / "variants.txt")
    with pytest.raises(DatasetNotFoundError, match="variants.txt"):
        build(tmp_path, "FGVCAircraft")


def test_caltech_without_json_ignores_and_renames_folders(tmp_path):
    image_dir = tmp_path / "caltech-101" / "101_ObjectCategories"
    touch_folders(image_dir, ["BACKGROUND_Google", "Faces_easy", "Faces", "airplanes", "accordion", "Leopards"],
                  n=10, ext="jpg")
    ds = build(tmp_path, "Caltech101")
    assert ds.classnames == ["face", "leopard", "accordion", "airplane"]
    assert (len(ds.train_x), len(ds.val), len(ds.test)) == (20, 8, 12)
    assert (tmp_path / "caltech-101" / "split_zhou_Caltech101.json").is_file()


def test_every_dataset_is_registered_with_a_config():
    expected = {"imagenet": "ImageNet", "caltech101": "Caltech101", "oxford_pets": "OxfordPets",
                "stanford_cars": "StanfordCars", "oxford_flowers": "OxfordFlowers", "food101": "Food101",
                "fgvc_aircraft": "FGVCAircraft", "sun397": "SUN397", "dtd": "DescribableTextures",
                "eurosat": "EuroSAT", "ucf101": "UCF101", "imagenetv2": "ImageNetV2",
                "imagenet_sketch": "ImageNetSketch", "imagenet_a": "ImageNetA", "imagenet_r": "ImageNetR",
                "shapes": "Shapes"}
    for stem, name in expected.items():
        cfg = CfgNode.load_cfg(open(REPO / "configs" / "datasets" / f"{stem}.yaml"))
        assert cfg.DATASET.NAME == name and name in DATASET_REGISTRY
    assert datasets.__name__ == "datasets"
