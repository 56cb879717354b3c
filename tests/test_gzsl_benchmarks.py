"""CUB / AWA2 / SUN / FLO readers on small fake proposed-split .mat files in the real structure."""
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from yacs.config import CfgNode

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

scipy_io = pytest.importorskip("scipy.io")

import datasets  # noqa: E402,F401  (registers every dataset)
from clipadapt.data import DatasetError, DatasetNotFoundError  # noqa: E402
from clipadapt.engine import DATASET_REGISTRY  # noqa: E402
from helpers import SHARED_SPLITS, build_dataset  # noqa: E402
from datasets.gzsl_benchmarks import clean_classname, strip_author_prefix  # noqa: E402

REAL_CAT_TO_NAME = Path(SHARED_SPLITS) / "cat_to_name.json"

# The authors' path prefixes as they appear in the real res101.mat files.
PREFIX = {"CUB": "/BS/Deep_Fragments/work/MSc/CUB_200_2011/CUB_200_2011/images/",
          "AWA2": "/BS/xian/work/data/Animals_with_Attributes2//JPEGImages/",
          "SUN": "/BS/Deep_Fragments/work/MSc/data/SUN/images/",
          "FLO": "/BS/Deep_Fragments/work/MSc/data/Flowers/jpg/"}
# name, dataset folder, image folder, 6 raw class names (original labels 1..6)
BENCHMARKS = {
    "CUB": ("CUB", "cub", "CUB_200_2011/images",
            ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross", "004.Groove_billed_Ani",
             "005.Crested_Auklet", "006.Least_Auklet"]),
    "AWA2": ("AWA2", "awa2", "Animals_with_Attributes2/JPEGImages",
             ["antelope", "grizzly+bear", "killer+whale", "beaver", "dalmatian", "persian+cat"]),
    "SUN": ("SUNAttribute", "sun_attribute", "images",
            ["abbey", "airplane_cabin", "airport_terminal", "alley", "amphitheater", "apartment_building_outdoor"]),
    "FLO": ("FLO", "oxford_flowers", "jpg", None),
}
SEEN = [1, 3, 4, 6]  # not the first labels: the reader must put them first
UNSEEN = [2, 5]
TRAINVAL, TEST_SEEN, TEST_UNSEEN = 3, 2, 4  # images per class


def image_rel(code, raw, label, i):
    """An image path below the image folder, in the dataset's own naming."""
    if code == "CUB":
        return f"{raw}/{raw.split('.', 1)[1]}_{i:04d}_{label}.jpg"
    if code == "AWA2":
        return f"{raw}/{raw}_{10001 + i}.jpg"
    if code == "SUN":
        return f"{raw[0]}/{raw}/sun_{label}x{i}.jpg"
    return f"image_{label * 100 + i:05d}.jpg"


def cell(strings):
    """A MATLAB cell column of strings, as loadmat returns it: an (n, 1) object array."""
    out = np.empty((len(strings), 1), dtype=object)
    for k, s in enumerate(strings):
        out[k, 0] = s
    return out


def col(values):
    return np.asarray(values, dtype=np.float64).reshape(-1, 1)  # MATLAB stores doubles


def make_benchmark(root, code, mat_dir=None, names=True, image=None, files_of=None):
    """Fake `<dataset>/` with images and xlsa17/data/<code>/{res101,att_splits}.mat; returns the expected split."""
    name, dataset_dir, image_dir, raw_names = BENCHMARKS[code]
    raw_names = raw_names or [f"{k:03d}" for k in range(1, 7)]
    image_root = Path(root) / dataset_dir / image_dir
    rows = []  # (author path, label, split)
    for label in range(1, 7):
        n = TRAINVAL + TEST_SEEN if label in SEEN else TEST_UNSEEN
        for i in range(n):
            rel = image_rel(code, raw_names[label - 1], label, i)
            path = image_root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if image is None:
                path.write_bytes(b"")
            else:
                image(label).save(path, format="JPEG")
            split = "test_unseen" if label in UNSEEN else ("trainval" if i < TRAINVAL else "test_seen")
            rows.append((PREFIX[code] + rel, label, split))
    order = np.random.RandomState(0).permutation(len(rows))  # image_files in no particular order
    rows = [rows[k] for k in order]
    files = [r[0] for r in rows] if files_of is None else files_of(rows)
    loc = {s: [k + 1 for k, r in enumerate(rows) if r[2] == s] for s in ("trainval", "test_seen", "test_unseen")}
    folder = Path(mat_dir) if mat_dir else Path(root) / dataset_dir / "xlsa17" / "data" / code
    folder.mkdir(parents=True, exist_ok=True)
    scipy_io.savemat(folder / "res101.mat", {"image_files": cell(files), "labels": col([r[1] for r in rows]),
                                             "features": np.zeros((4, len(rows)))})
    att = {"trainval_loc": col(loc["trainval"]), "test_seen_loc": col(loc["test_seen"]),
           "test_unseen_loc": col(loc["test_unseen"]), "train_loc": col(loc["trainval"][:4]),
           "val_loc": col(loc["trainval"][4:]), "att": np.ones((5, 6))}
    if names:
        att["allclasses_names"] = cell(raw_names)
    scipy_io.savemat(folder / "att_splits.mat", att)
    return {"name": name, "image_root": image_root, "rows": rows, "folder": folder}


build = functools.partial(build_dataset, subsample="gzsl")  # the GZSL protocol unless a test says otherwise


@pytest.fixture(autouse=True)
def _no_user_cache(monkeypatch):
    monkeypatch.delenv("CLIPADAPT_CACHE", raising=False)


# ---------------------------------------------------------------------------------------------

def test_clean_classname_and_author_prefix():
    assert clean_classname("001.Black_footed_Albatross") == "black footed albatross"
    assert clean_classname("grizzly+bear") == "grizzly bear"
    assert clean_classname("airplane_cabin") == "airplane cabin"
    assert clean_classname("abbey") == "abbey"
    assert strip_author_prefix(PREFIX["AWA2"] + "antelope/antelope_10001.jpg", "JPEGImages") == \
        "antelope/antelope_10001.jpg"
    assert strip_author_prefix(PREFIX["CUB"] + "001.A/a.jpg", "images") == "001.A/a.jpg"
    assert strip_author_prefix(r"D:\data\Flowers\JPG\image_00001.jpg", "jpg") == "image_00001.jpg"
    assert strip_author_prefix("/somewhere/else/a.jpg", "images") is None


@pytest.mark.parametrize("code", ["CUB", "AWA2", "SUN"])
def test_gzsl_mode_puts_seen_classes_first_in_a_joint_test_space(code, tmp_path):
    fake = make_benchmark(tmp_path, code)
    ds = build(tmp_path, fake["name"])
    raw = BENCHMARKS[code][3]
    expected = [clean_classname(raw[y - 1]) for y in SEEN + UNSEEN]
    assert ds.classnames == ds.all_classnames == expected and ds.num_classes == 6
    assert ds.base_classnames == expected[:4] and ds.new_classnames == expected[4:]
    assert ds.lab2cname == dict(enumerate(expected))
    assert {d.label for d in ds.train_x} == {0, 1, 2, 3} and len(ds.train_x) == 4 * TRAINVAL
    assert sorted({d.label for d in ds.test}) == list(range(6))
    assert len(ds.test) == 4 * TEST_SEEN + 2 * TEST_UNSEEN and ds.val is None
    assert ds.label_space.startswith("gzsl: train/val 4 base classes")
    # every datum is the local copy of its authors' path, with the class of its original label
    by_rel = {r[0][len(PREFIX[code]):]: r for r in fake["rows"]}
    for d in ds.train_x + ds.test:
        author_path, orig, split = by_rel[os.path.relpath(d.impath, fake["image_root"]).replace(os.sep, "/")]
        assert d.label == (SEEN + UNSEEN).index(orig) and d.classname == expected[d.label]
        assert (split == "trainval") == (d in ds.train_x)


def test_base_new_and_all_modes(tmp_path):
    make_benchmark(tmp_path, "CUB")
    base = build(tmp_path, "CUB", subsample="base")
    assert base.classnames == ["black footed albatross", "sooty albatross", "groove billed ani", "least auklet"]
    assert {d.label for d in base.test} == {0, 1, 2, 3} and len(base.test) == 4 * TEST_SEEN
    new = build(tmp_path, "CUB", subsample="new")
    assert new.classnames == ["laysan albatross", "crested auklet"] and new.num_classes == 2
    assert {d.label for d in new.test} == {0, 1} and len(new.test) == 2 * TEST_UNSEEN
    assert new.train_x == new.test  # unseen classes have no training images: an eval-only slice
    everything = build(tmp_path, "CUB", subsample="all")
    assert everything.num_classes == 6 and len(everything.classnames) == 6
    assert len(everything.test) == 4 * TEST_SEEN + 2 * TEST_UNSEEN
    assert {d.label for d in everything.train_x} == {0, 1, 2, 3}


def test_fewshot_draws_seen_classes_only_and_caches_apart_from_coop(tmp_path, capsys):
    make_benchmark(tmp_path, "AWA2")
    gzsl = build(tmp_path, "AWA2", shots=2, seed=3)
    assert len(gzsl.train_x) == 8 and {d.label for d in gzsl.train_x} == {0, 1, 2, 3}
    assert len(gzsl.test) == 4 * TEST_SEEN + 2 * TEST_UNSEEN  # the test set is never sampled
    cache = tmp_path / "awa2" / "split_fewshot_gzsl" / "shot_2-seed_3.json"
    assert cache.is_file() and not (tmp_path / "awa2" / "split_fewshot").exists()
    base = build(tmp_path, "AWA2", shots=2, seed=3, subsample="base")
    assert [d.impath for d in base.train_x] == [d.impath for d in gzsl.train_x]
    assert "Loading preprocessed few-shot data" in capsys.readouterr().out


def test_readonly_copy_caches_fewshot_under_env(tmp_path, monkeypatch):
    make_benchmark(tmp_path, "CUB")
    os.chmod(tmp_path / "cub", 0o555)
    try:
        monkeypatch.setenv("CLIPADAPT_CACHE", str(tmp_path / "cache"))
        ds = build(tmp_path, "CUB", shots=1)
        assert len(ds.train_x) == 4
        assert (tmp_path / "cache" / "fewshot" / "CUB" / "shot_1-seed_1.json").is_file()
    finally:
        os.chmod(tmp_path / "cub", 0o755)


def test_flo_names_come_from_cat_to_name(tmp_path, capsys):
    make_benchmark(tmp_path, "FLO", names=False)  # the real FLO att_splits.mat has no allclasses_names
    nameless = build(tmp_path, "FLO")
    assert nameless.classnames[:2] == ["flower 1", "flower 3"]
    assert "cat_to_name.json not found" in capsys.readouterr().out
    cat_to_name = {str(k): f"flower name {k}" for k in range(1, 103)}
    if REAL_CAT_TO_NAME.is_file():
        cat_to_name = json.loads(REAL_CAT_TO_NAME.read_text())
    (tmp_path / "oxford_flowers" / "cat_to_name.json").write_text(json.dumps(cat_to_name))
    ds = build(tmp_path, "FLO")
    assert ds.classnames == [cat_to_name[str(y)] for y in SEEN + UNSEEN]
    if REAL_CAT_TO_NAME.is_file():
        assert ds.classnames[:2] == ["pink primrose", "canterbury bells"]


def test_split_files_may_live_in_one_shared_xlsa17_folder(tmp_path):
    make_benchmark(tmp_path, "SUN", mat_dir=tmp_path / "xlsa17" / "data" / "SUN")
    ds = build(tmp_path, "SUNAttribute")
    assert ds.classnames[:2] == ["abbey", "airport terminal"] and ds.classnames[-1] == "amphitheater"


def test_missing_files_name_the_path_and_the_layout(tmp_path):
    (tmp_path / "cub" / "CUB_200_2011" / "images").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError) as err:
        build(tmp_path, "CUB")
    message = str(err.value)
    assert "res101.mat" in message and "xlsa17/data/CUB" in message and "DATASETS.md" in message
    (tmp_path / "awa2").mkdir()
    with pytest.raises(DatasetNotFoundError, match="Image folder"):
        build(tmp_path, "AWA2")


def test_missing_images_and_bad_indices_are_reported(tmp_path):
    fake = make_benchmark(tmp_path, "CUB")
    first = fake["image_root"] / fake["rows"][0][0][len(PREFIX["CUB"]):]
    first.unlink()
    with pytest.raises(DatasetError, match=r"names 1 of 28 images that are not on disk"):
        build(tmp_path, "CUB")
    first.write_bytes(b"")
    scipy_io.savemat(fake["folder"] / "att_splits.mat", {"trainval_loc": col([1, 99]), "test_seen_loc": col([2]),
                                                         "test_unseen_loc": col([3])})
    with pytest.raises(DatasetError, match=r"trainval_loc holds 1 index\(es\) outside 1..28"):
        build(tmp_path, "CUB")


def test_paths_without_the_image_folder_are_reported(tmp_path):
    make_benchmark(tmp_path, "AWA2", files_of=lambda rows: [r[0].replace("JPEGImages", "pics") for r in rows])
    with pytest.raises(DatasetError, match="no 'JPEGImages' folder"):
        build(tmp_path, "AWA2")


def test_missing_scipy_says_how_to_install(tmp_path, monkeypatch):
    make_benchmark(tmp_path, "CUB")
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    with pytest.raises(ImportError, match="pip install scipy"):
        build(tmp_path, "CUB")


def test_configs_name_registered_datasets():
    for stem, name in {"cub": "CUB", "awa2": "AWA2", "sun_gzsl": "SUNAttribute", "flo": "FLO"}.items():
        cfg = CfgNode.load_cfg(open(REPO / "configs" / "datasets" / f"{stem}.yaml"))
        assert cfg.DATASET.NAME == name and name in DATASET_REGISTRY


def test_zeroshot_gzsl_run_on_fake_cub_reports_seen_unseen_h(tmp_path):
    """The whole path: train.py, the reader, the GZSL evaluator (4 seen of 6: not CoCoOp's ceil(n/2))."""
    from PIL import Image
    from helpers import TINY_OPTS
    make_benchmark(tmp_path, "CUB", image=lambda y: Image.new("RGB", (32, 32), (40 * y, 255 - 40 * y, 128)))
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "train.py", "--root", str(tmp_path), "--seed", "1", "--trainer", "ZeroshotCLIP",
         "--dataset-config-file", "configs/datasets/cub.yaml", "--config-file",
         "configs/trainers/ZeroshotCLIP/vit_b16.yaml", "--output-dir", str(out), "--eval-only",
         *TINY_OPTS, "DATASET.SUBSAMPLE_CLASSES", "gzsl"],
        cwd=REPO, capture_output=True, text=True, env=dict(os.environ, CLIPADAPT_CACHE=str(tmp_path / "cache")))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    log = (out / "log.txt").read_text()
    assert "gzsl: train/val 4 base classes (labels 0..3); test all 6 classes" in log
    assert f"* total: {4 * TEST_SEEN + 2 * TEST_UNSEEN}" in log
    for key in ("* acc_seen:", "* acc_unseen:", "* hm:"):
        assert key in log
