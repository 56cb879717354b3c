"""The classic generalized zero-shot benchmarks CUB, AWA2, SUN and FLO, on Xian et al.'s "proposed split".

Xian et al. (TPAMI 2019, "Zero-Shot Learning - A Comprehensive Evaluation of the Good, the Bad
and the Ugly") ship, per dataset, `res101.mat` (`image_files`: a cell array of image paths on the
authors' machines; `labels`: 1-based class of each image) and `att_splits.mat`
(`allclasses_names`; `trainval_loc`, `test_seen_loc`, `test_unseen_loc`: 1-based indices into
`image_files`; `att`, ...). We read the images those files name, not their ResNet features.

Label space: the seen classes (those of `trainval_loc`) come first, labelled 0..S-1 in the order
of their original labels, then the unseen classes S..N-1, so the project's rule "base = the first
labels" holds with base = seen and new = unseen. By DATASET.SUBSAMPLE_CLASSES:

- "gzsl": train_x = trainval (K shots per class if NUM_SHOTS >= 1); test = test_seen + test_unseen
  in the joint 0..N-1 space (the GZSL evaluator reports Acc_S, Acc_U, H);
- "base": train_x = trainval; test = test_seen, labels 0..S-1;
- "new":  test = test_unseen relabelled 0..U-1; unseen classes have no training images, so
  train_x is the same test images (the mode is for --eval-only runs, as ImageNet-A's train_x is);
- "all":  as "gzsl" with one plain accuracy over all N classes.

There is no val split (the benchmark's val classes are a class split inside trainval, for
hyper-parameter search; not used here).
"""
import json
import os
import re

import numpy as np

from clipadapt.data import CACHE_ENV, CoOpDataset, DatasetError, sample_fewshot
from clipadapt.deps import require
from clipadapt.data.splits import can_create_dir, entries_to_datums
from clipadapt.engine import DATASET_REGISTRY, Datum

SPLIT_DIR = "xlsa17/data"  # where Xian et al.'s xlsa17.zip puts <CODE>/res101.mat and att_splits.mat
FEWSHOT_DIR = "split_fewshot_gzsl"  # apart from CoOp's split_fewshot/: FLO shares oxford_flowers/


def load_mat(path, required, optional=()):
    """The named variables of a MATLAB file (scipy is imported only here: `pip install scipy`)."""
    loadmat = require("scipy.io", "Reading the GZSL benchmarks' .mat split files", package="scipy").loadmat
    try:
        # Only the named variables: res101.mat also holds every image's 2048-d feature.
        data = loadmat(path, variable_names=list(required) + list(optional))
    except NotImplementedError as err:  # MATLAB v7.3 (HDF5) files
        raise DatasetError(f"{path}: {err}. Use the original v5 .mat files of the proposed split.") from err
    except Exception as err:  # scipy raises several types on a damaged file
        raise DatasetError(f"{path} is not a readable .mat file ({type(err).__name__}: {err}).") from err
    missing = [key for key in required if key not in data]
    if missing:
        found = sorted(k for k in data if not k.startswith("__"))
        raise DatasetError(f"{path} lacks {missing} (found {found}); is it the proposed split's file?")
    return data


def mat_string(cell):
    """The string in one cell of a MATLAB cell array (loadmat nests it in 1-element arrays)."""
    while isinstance(cell, np.ndarray):
        if cell.size == 0:
            return ""
        cell = cell.ravel()[0]
    return str(cell)


def mat_ints(data, key, path):
    values = np.asarray(data[key]).ravel()
    if values.size and not np.all(np.mod(values, 1) == 0):
        raise DatasetError(f"{path}: {key} must hold whole numbers.")
    return values.astype(np.int64)


def clean_classname(raw):
    """`001.Black_footed_Albatross` -> "black footed albatross"; `grizzly+bear` -> "grizzly bear"."""
    name = re.sub(r"^\d+\.", "", raw.strip())
    name = re.sub(r"[_+/]+", " ", name)
    return " ".join(name.split()).lower()


def strip_author_prefix(path, marker):
    """The part of an authors' path after its last `marker` folder (case-insensitive), or None.

    `/BS/Deep_Fragments/work/MSc/CUB_200_2011/CUB_200_2011/images/001.X/a.jpg` with marker
    "images" -> `001.X/a.jpg`; doubled slashes (AWA2's `Animals_with_Attributes2//JPEGImages`)
    and Windows separators are tolerated.
    """
    parts = [p for p in re.split(r"[/\\]+", path) if p]
    hits = [i for i, p in enumerate(parts) if p.lower() == marker.lower()]
    if not hits or hits[-1] == len(parts) - 1:
        return None
    return "/".join(parts[hits[-1] + 1:])


class XianGZSLDataset(CoOpDataset):
    """A benchmark read from `res101.mat` + `att_splits.mat`; subclasses say where its files are.

    Class attributes (besides CoOpDataset's `dataset_dir`, `image_dir`, `layout`, `setup_hint`):
    - `split_code`: the folder of the dataset in xlsa17 (`CUB`, `AWA2`, `SUN`, `FLO`); the two
      .mat files are read from `<dataset_dir>/xlsa17/data/<code>/` or `$DATA/xlsa17/data/<code>/`;
    - `image_marker`: the folder of the authors' paths after which a path is relative to
      `image_dir` (`images`, `JPEGImages`, `jpg`).
    """

    split_code = ""
    image_marker = ""

    def __init__(self, cfg):
        self._locate_folders(cfg)  # split_file is empty: the split comes from the .mat files
        trainval, test_seen, test_unseen = self.read_proposed_split()
        num_shots = int(cfg.DATASET.NUM_SHOTS)
        if num_shots >= 1:
            trainval, _ = sample_fewshot(self.dataset_dir, trainval, None, num_shots, cfg.SEED,
                                         cache_dir=self.fewshot_cache_dir())

        num_seen = len(self._base_classnames)
        if self._subsample == "base":
            train, test = trainval, test_seen
        elif self._subsample == "new":
            test = [Datum(impath=d.impath, label=d.label - num_seen, classname=d.classname) for d in test_unseen]
            train = test
            print(f"{self.name}: unseen classes have no training images, so train_x is the test_unseen images "
                  f"in this mode; use it with --eval-only")
        else:
            train, test = trainval, test_seen + test_unseen
        print(f"{self.name} (proposed split): {self.label_space}")
        super(CoOpDataset, self).__init__(train_x=train, val=None, test=test)

    # -- the label space: "all" spans every class too (train_x holds only the seen ones) -------

    def _joint(self):
        return self._subsample in ("all", "gzsl")

    @property
    def classnames(self):
        return self.all_classnames if self._joint() else super().classnames

    @property
    def lab2cname(self):
        return dict(enumerate(self._all_classnames)) if self._joint() else super().lab2cname

    @property
    def num_classes(self):
        return len(self._all_classnames) if self._joint() else super().num_classes

    # -- reading ----------------------------------------------------------------------------

    def split_files(self):
        """Paths of res101.mat and att_splits.mat: the dataset's own copy, else $DATA/xlsa17/."""
        candidates = [os.path.join(self.dataset_dir, SPLIT_DIR, self.split_code),
                      os.path.join(self.root, SPLIT_DIR, self.split_code)]
        for folder in candidates:
            if os.path.isfile(os.path.join(folder, "res101.mat")):
                att = os.path.join(folder, "att_splits.mat")
                self.check_file(att, "Split file att_splits.mat (beside res101.mat)")
                return os.path.join(folder, "res101.mat"), att
        raise self.missing("Proposed-split file res101.mat", " or ".join(os.path.join(c, "res101.mat")
                                                                          for c in candidates))

    def read_proposed_split(self):
        """(trainval, test_seen, test_unseen) Datums in the joint label space; sets the class names."""
        res_path, att_path = self.split_files()
        res = load_mat(res_path, ("image_files", "labels"))
        att = load_mat(att_path, ("trainval_loc", "test_seen_loc", "test_unseen_loc"), ("allclasses_names",))
        files = [mat_string(c) for c in np.asarray(res["image_files"]).ravel()]
        labels = mat_ints(res, "labels", res_path)
        if len(files) != len(labels):
            raise DatasetError(f"{res_path}: {len(files)} image_files but {len(labels)} labels.")
        locs = {}
        for key in ("trainval_loc", "test_seen_loc", "test_unseen_loc"):
            loc = mat_ints(att, key, att_path)
            bad = loc[(loc < 1) | (loc > len(files))]
            if bad.size:
                raise DatasetError(f"{att_path}: {key} holds {bad.size} index(es) outside 1..{len(files)} (the "
                                   f"images of {res_path}), e.g. {int(bad[0])}; are the two files from the same "
                                   f"dataset?")
            locs[key] = loc - 1  # MATLAB indices are 1-based

        seen = sorted(set(labels[locs["trainval_loc"]].tolist()))
        unseen = sorted(set(labels[locs["test_unseen_loc"]].tolist()))
        stray = sorted(set(labels[locs["test_seen_loc"]].tolist()) - set(seen))
        if stray:
            raise DatasetError(f"{att_path}: test_seen_loc has images of class(es) {stray[:10]} that have no "
                               f"trainval images, so they are not seen classes.")
        if set(seen) & set(unseen):
            raise DatasetError(f"{att_path}: class(es) {sorted(set(seen) & set(unseen))[:10]} are in both "
                               f"trainval_loc and test_unseen_loc; seen and unseen classes must not overlap.")

        raw_names = ([mat_string(c) for c in np.asarray(att["allclasses_names"]).ravel()]
                     if "allclasses_names" in att else None)
        if raw_names is not None and len(raw_names) < max(seen + unseen):
            raise DatasetError(f"{att_path}: allclasses_names has {len(raw_names)} names but labels go up to "
                               f"{max(seen + unseen)}.")
        names = self.classnames_for(seen + unseen, raw_names)
        joint = {orig: i for i, orig in enumerate(seen + unseen)}
        self._all_classnames = [names[orig] for orig in seen + unseen]
        self._base_classnames = self._all_classnames[:len(seen)]
        self._new_classnames = self._all_classnames[len(seen):]

        parsed, unmatched = {}, []
        for key in locs:
            entries = []
            for i in locs[key]:
                rel = strip_author_prefix(files[i], self.image_marker)
                if rel is None:
                    unmatched.append(files[i])
                    continue
                entries.append((rel, joint[labels[i]], names[labels[i]]))
            parsed[key] = entries
        if unmatched:
            raise DatasetError(f"{res_path}: {len(unmatched)} image_files have no '{self.image_marker}' folder in "
                               f"their path, e.g. {unmatched[0]!r}; the path after the last '{self.image_marker}/' "
                               f"is read relative to {self.image_dir}.")
        datums = entries_to_datums(parsed, self.image_dir, res_path, keys=tuple(parsed))
        return datums["trainval_loc"], datums["test_seen_loc"], datums["test_unseen_loc"]

    def classnames_for(self, labels, raw_names):
        """{original label: class name} for the 1-based `labels`; `raw_names` may be None."""
        if raw_names is None:
            raise DatasetError(f"{self.name}: att_splits.mat has no allclasses_names, so the classes have no "
                               f"names to prompt CLIP with.")
        return {y: clean_classname(raw_names[y - 1]) for y in labels}

    def fewshot_cache_dir(self):
        """`<dataset_dir>/split_fewshot_gzsl`, or `$CLIPADAPT_CACHE/fewshot/<Name>` for a read-only copy."""
        own = os.path.join(self.dataset_dir, FEWSHOT_DIR)
        env = os.environ.get(CACHE_ENV)
        if can_create_dir(own) or not env:
            return own  # when read-only too, sample_fewshot draws the sample without saving it
        return os.path.join(os.path.abspath(os.path.expanduser(env)), "fewshot", self.name)


def _layout(image_entry, code):
    return (image_entry,
            f"xlsa17/data/{code}/res101.mat, att_splits.mat   (or one shared $DATA/xlsa17/data/{code}/)")


@DATASET_REGISTRY.register()
class CUB(XianGZSLDataset):
    """CUB-200-2011 (Wah et al.): 200 bird species, 150 seen / 50 unseen."""
    dataset_dir = "cub"
    image_dir = "CUB_200_2011/images"
    split_code = "CUB"
    image_marker = "images"
    layout = _layout("CUB_200_2011/images/001.Black_footed_Albatross/*.jpg, ...", "CUB")


@DATASET_REGISTRY.register()
class AWA2(XianGZSLDataset):
    """Animals with Attributes 2 (Xian et al.): 50 animal classes, 40 seen / 10 unseen."""
    dataset_dir = "awa2"
    image_dir = "Animals_with_Attributes2/JPEGImages"
    split_code = "AWA2"
    image_marker = "JPEGImages"
    layout = _layout("Animals_with_Attributes2/JPEGImages/antelope/*.jpg, ...", "AWA2")


@DATASET_REGISTRY.register()
class SUNAttribute(XianGZSLDataset):
    """SUN Attribute (Patterson and Hays): 717 scene classes, 645 seen / 72 unseen (not SUN397's split)."""
    dataset_dir = "sun_attribute"
    image_dir = "images"
    split_code = "SUN"
    image_marker = "images"
    layout = _layout("images/a/abbey/*.jpg, ...", "SUN")


@DATASET_REGISTRY.register()
class FLO(XianGZSLDataset):
    """Oxford Flowers-102 on the GZSL split: 82 seen / 20 unseen; shares CoOp's oxford_flowers/ folder.

    The proposed split's FLO files number the classes instead of naming them; the names come from
    `cat_to_name.json` (CoOp's, keyed by Oxford's 1-based label) in the dataset folder.
    """
    dataset_dir = "oxford_flowers"
    image_dir = "jpg"
    split_code = "FLO"
    image_marker = "jpg"
    layout = ("jpg/image_00001.jpg, ...", "cat_to_name.json   Oxford label -> flower name",
              "xlsa17/data/FLO/res101.mat, att_splits.mat   (or one shared $DATA/xlsa17/data/FLO/)")

    def classnames_for(self, labels, raw_names):
        """The class number (from allclasses_names when it has digits, else the label) -> cat_to_name."""
        numbers = {}
        for y in labels:
            digits = re.search(r"\d+", raw_names[y - 1]) if raw_names is not None else None
            numbers[y] = int(digits.group()) if digits else y
        path = os.path.join(self.dataset_dir, "cat_to_name.json")
        if not os.path.isfile(path):
            if raw_names is not None and not any(re.search(r"\d", raw_names[y - 1]) for y in labels):
                return {y: clean_classname(raw_names[y - 1]) for y in labels}
            print(f"Warning: {path} not found, so FLO's classes are named by number ('flower 1', ...), which "
                  f"CLIP cannot read; copy CoOp's cat_to_name.json there (see DATASETS.md, section FLO)")
            return {y: f"flower {numbers[y]}" for y in labels}
        try:
            with open(path) as f:
                cat_to_name = json.load(f)
        except (OSError, ValueError) as err:
            raise DatasetError(f"{path} is not valid json ({err}).") from err
        unknown = [n for n in numbers.values() if str(n) not in cat_to_name]
        if unknown:
            raise DatasetError(f"{path} has no name for FLO class(es) {unknown[:10]} (keys must be Oxford's "
                               f"1-based labels, \"1\" .. \"102\").")
        return {y: str(cat_to_name[str(numbers[y])]) for y in labels}
