"""`CoOpDataset`: the one reader behind every dataset in `datasets/`.

A dataset file only says where its files are (`dataset_dir`, `image_dir`, `split_file`), how its
folders are named (`ignored`, `new_cnames`) and, when it has no CoOp split json, how to build the
split (`build_split`). Checking paths, reading the split, few-shot sampling and base/new
subsampling happen here, once.
"""
import os

from clipadapt.engine import Datum, DatasetBase

from .checks import note_small_classes, verify_manifest
from .errors import DatasetError, DatasetNotFoundError, is_writable_dir, not_found, render_tree
from .splits import (CACHE_ENV, SUBSAMPLE_MODES, base_new_labels, can_create_dir, entries_to_datums, listdir_nohidden,
                     load_json_file, parse_entries, read_and_split_data, read_split, relative_path,
                     sample_fewshot, save_split, subsample_classes, write_json_atomic)
from .unseeded import run_fewshot_sample


def resolve_root(cfg, dataset="", tree=None, hint=None):
    """The absolute DATASET.ROOT, or a DatasetNotFoundError saying what is missing."""
    root = cfg.DATASET.ROOT
    if not root:
        raise not_found("DATASET.ROOT is empty, so the dataset folder", "(no root given)", dataset, tree,
                        hint="Pass --root $DATA (or DATASET.ROOT $DATA), the folder that holds one sub folder per "
                             "dataset." + (f"\n{hint}" if hint else ""))
    root = os.path.abspath(os.path.expanduser(root))
    if not os.path.isdir(root):
        raise not_found("DATASET.ROOT", root, dataset, tree, hint)
    return root


class CoOpDataset(DatasetBase):
    """A CoOp dataset: `<ROOT>/<dataset_dir>/<image_dir>/...` plus `<ROOT>/<dataset_dir>/<split_file>`.

    Built as `Dataset(cfg)` from `DATASET.ROOT`, `DATASET.NUM_SHOTS` (-1 = all),
    `DATASET.SUBSAMPLE_CLASSES` ("all" | "base" | "new" | "gzsl") and `SEED`.

    Attributes for trainers (besides Dassl's train_x/val/test/classnames/lab2cname/num_classes):
    - `all_classnames`: every class of the dataset, in original label order;
    - `base_classnames`, `new_classnames`: CoCoOp's halves (first ceil(n/2) labels, the rest);
    - `subsample`: the mode the dataset was built with;
    - `label_space`: a one-line description of what the labels mean in that mode.

    Class attributes a dataset sets:
    - `dataset_dir`, `image_dir` (may be "" = the dataset folder), `split_file` ("" = no json:
      `build_split` makes the split each time);
    - `split_from_folders`: without the json, build a 50/20/30 split from the class folders
      (CoOp does this for Caltech101, DTD, EuroSAT, Food101) and save it as the json;
    - `ignored` (class folders to skip), `new_cnames` (folder -> classname);
    - `test_only` (train_x = test = all data, no few-shot), `val_is_test` (ImageNet);
    - `layout` (lines of the tree under `dataset_dir`, for errors), `setup_hint` (extra advice
      when files are missing; "{root}" is replaced by DATASET.ROOT).
    """

    dataset_dir = ""
    image_dir = ""
    split_file = ""
    split_from_folders = False
    ignored = ()
    new_cnames = None
    test_only = False
    val_is_test = False
    layout = ()
    setup_hint = ""

    def __init__(self, cfg):
        self._locate_folders(cfg)
        train, val, test = self.load_split()
        self._all_classnames = self._classnames_by_label(train, val, test)
        base, new = base_new_labels(range(len(self._all_classnames)))
        self._base_classnames = [self._all_classnames[y] for y in base]
        self._new_classnames = [self._all_classnames[y] for y in new]

        num_shots = int(cfg.DATASET.NUM_SHOTS)
        if num_shots >= 1 and self.test_only:
            print(f"{self.name} is a test-only dataset: DATASET.NUM_SHOTS={num_shots} does not apply to it")
        elif num_shots >= 1:
            note_small_classes(train, num_shots, self._all_classnames)
            if int(cfg.SEED) < 0 and cfg.get("OUTPUT_DIR"):  # unseeded: the run folder keeps its sample
                train, val = run_fewshot_sample(cfg.OUTPUT_DIR, self.dataset_dir, train, val, num_shots)
            else:
                train, val = sample_fewshot(self.dataset_dir, train, val, num_shots, cfg.SEED)

        if val is None:
            train, test = subsample_classes(train, test, subsample=self._subsample)
        else:
            train, val, test = subsample_classes(train, val, test, subsample=self._subsample)
        if self.val_is_test:
            val = test
        if cfg.DATASET.get("VERIFY_MANIFEST", False):
            verify_manifest(self.dataset_dir, {"train_x": train, "val": val, "test": test})
        super().__init__(train_x=train, val=val, test=test)

    def _locate_folders(self, cfg):
        """Name, subsample mode, and the dataset, image and split paths, each checked with a clear error."""
        cls = type(self)
        self.name = cls.__name__
        self._subsample = str(cfg.DATASET.SUBSAMPLE_CLASSES)
        if self._subsample not in SUBSAMPLE_MODES:
            raise ValueError(f"DATASET.SUBSAMPLE_CLASSES must be one of {list(SUBSAMPLE_MODES)}, "
                             f"got {self._subsample!r}")
        self.root = resolve_root(cfg, self.name, self.expected_layout(), self._hint(cfg.DATASET.ROOT or "ROOT"))
        self.dataset_dir = os.path.join(self.root, cls.dataset_dir)
        self.image_dir = os.path.join(self.dataset_dir, cls.image_dir) if cls.image_dir else self.dataset_dir
        self.split_path = os.path.join(self.dataset_dir, cls.split_file) if cls.split_file else ""
        self.check_dir(self.dataset_dir, "Dataset folder")
        self.check_dir(self.image_dir, "Image folder")

    # -- the label space ----------------------------------------------------------------------

    all_classnames = property(lambda self: list(self._all_classnames),
                              doc="Every class of the dataset, indexed by its original label.")
    base_classnames = property(lambda self: list(self._base_classnames),
                               doc="CoCoOp's base half: the first ceil(n/2) classes by original label.")
    new_classnames = property(lambda self: list(self._new_classnames),
                              doc="CoCoOp's new half: the classes after the base ones.")
    subsample = property(lambda self: self._subsample, doc="DATASET.SUBSAMPLE_CLASSES this dataset was built with.")

    @property
    def classnames(self):
        return self.all_classnames if self._subsample == "gzsl" else super().classnames

    @property
    def lab2cname(self):
        if self._subsample == "gzsl":
            return dict(enumerate(self._all_classnames))
        return super().lab2cname

    @property
    def num_classes(self):
        return len(self._all_classnames) if self._subsample == "gzsl" else super().num_classes

    @property
    def label_space(self):
        """What the labels mean, by `subsample` mode (n classes, m = ceil(n/2) base ones).

        - "all":  labels 0..n-1 everywhere; `classnames == all_classnames`.
        - "base": only base classes, labels 0..m-1; `classnames == base_classnames`.
        - "new":  only new classes, relabelled 0..n-m-1; `classnames == new_classnames`.
        - "gzsl": train_x/val hold base classes with labels 0..m-1; test holds all classes with
          their original labels (base 0..m-1, new m..n-1); `classnames`, `lab2cname` and
          `num_classes` describe all n classes (the test label space), so a test label y is a
          base class iff y < len(base_classnames).
        Returns that description for the current mode, in one line (handy for logs).
        """
        n, m = len(self._all_classnames), len(self._base_classnames)
        return {
            "all": f"all: {n} classes, labels 0..{n - 1}",
            "base": f"base: {m} of {n} classes, labels 0..{m - 1}",
            "new": f"new: {n - m} of {n} classes, relabelled 0..{n - m - 1}",
            "gzsl": f"gzsl: train/val {m} base classes (labels 0..{m - 1}); test all {n} classes "
                    f"(base 0..{m - 1}, new {m}..{n - 1})",
        }[self._subsample]

    # -- reading ----------------------------------------------------------------------------

    def load_split(self):
        """(train, val, test); val may be None (ImageNet, test-only sets)."""
        if self.split_path and os.path.isfile(self.split_path):
            return read_split(self.split_path, self.image_dir)
        train, val, test = self.build_split()
        if self.split_path:
            if is_writable_dir(self.dataset_dir):
                save_split(train, val, test, self.split_path, self.image_dir)
            else:
                print(f"Note: {self.dataset_dir} is not writable; the split built from the folders is not saved "
                      f"(it is rebuilt identically each run)")
        return train, val, test

    def build_split(self):
        """The split when there is no json. By default: class folders 50/20/30, if allowed."""
        if not self.split_from_folders:
            raise self.missing("Split file", self.split_path)
        print(f"{self.split_path} not found: building the split from the class folders in {self.image_dir}")
        return read_and_split_data(self.image_dir, ignored=self.ignored, new_cnames=self.new_cnames)

    # -- checks and messages -----------------------------------------------------------------

    @classmethod
    def expected_layout(cls):
        entries = list(cls.layout)
        if not entries:
            if cls.image_dir:
                entries.append(f"{cls.image_dir}/")
            if cls.split_file:
                entries.append(cls.split_file)
        return render_tree(cls.dataset_dir, entries)

    def _hint(self, root):
        return self.setup_hint.replace("{root}", str(root)) if self.setup_hint else None

    def missing(self, what, path):
        return not_found(what, path, self.name, self.expected_layout(), self._hint(self.root))

    def check_dir(self, path, what):
        if not os.path.isdir(path):
            raise self.missing(what, path)

    def check_file(self, path, what):
        if not os.path.isfile(path):
            raise self.missing(what, path)

    def _classnames_by_label(self, *splits):
        lab2cname = {}
        for split in splits:
            for d in split or ():
                lab2cname.setdefault(d.label, d.classname)
        n = len(lab2cname)
        if sorted(lab2cname) != list(range(n)):
            gaps = sorted(set(range(max(lab2cname, default=-1) + 1)) - set(lab2cname))
            raise DatasetError(f"{self.name} in {self.dataset_dir}: labels must be 0..{n - 1} with no gaps; "
                               f"missing label(s) {gaps[:10]}")
        return [lab2cname[y] for y in range(n)]


# ---------------------------------------------------------------------------------------------
# folder-per-class readers (ImageNet and its variants)

def read_classnames(text_file):
    """ImageNet's classnames.txt: `wnid classname words` per line -> ordered {wnid: classname}."""
    classnames = {}
    with open(text_file, "r") as f:
        for i, line in enumerate(f):
            parts = line.strip().split(" ")
            if not parts[0]:
                continue
            if len(parts) < 2:
                raise DatasetError(f"{text_file}: line {i + 1} {line.strip()!r} is not 'wnid classname'.")
            classnames[parts[0]] = " ".join(parts[1:])
    return classnames


def read_class_folders(split_dir, classnames, folders=None, source=None):
    """Datums for `split_dir/<folder>/*`, folder i (sorted) labelled i, named by `classnames[folder]`."""
    folders = listdir_nohidden(split_dir, dirs_only=True) if folders is None else folders
    unknown = [f for f in folders if f not in classnames]
    if unknown:
        raise DatasetError(f"{os.path.join(split_dir, unknown[0])}: folder {unknown[0]!r} is not in the class "
                           f"list {source or ''} ({len(unknown)} unknown folder(s)).")
    items = []
    for label, folder in enumerate(folders):
        class_dir = os.path.join(split_dir, folder)
        for imname in listdir_nohidden(class_dir, files_only=True):
            items.append(Datum(impath=os.path.join(class_dir, imname), label=label, classname=classnames[folder]))
    return items


class TestOnlyDataset(CoOpDataset):
    """An evaluation-only set (ImageNetV2/Sketch/A/R): train_x = test = all images, val None.

    Its class names come from ImageNet's classnames.txt, in the dataset's own folder (as CoOp's
    DATASETS.md says to copy it there) or else at `<ROOT>/imagenet/classnames.txt`.
    """

    test_only = True

    def build_split(self):
        data = self.read_data(self.imagenet_classnames())
        if not data:
            raise DatasetError(f"{self.name}: no images found under {self.image_dir}")
        return data, None, data

    def read_data(self, classnames):
        raise NotImplementedError

    def imagenet_classnames(self):
        candidates = [os.path.join(self.dataset_dir, "classnames.txt"),
                      os.path.join(self.root, "imagenet", "classnames.txt")]
        for path in candidates:
            if os.path.isfile(path):
                self.classnames_file = path
                return read_classnames(path)
        raise self.missing("ImageNet classnames.txt", " or ".join(candidates))


def cached_file_list(dataset_dir, filename, build, path_prefix, check=None):
    """(train, val, test) from a relative-path json cache of a folder listing, or `build()` it and save.

    The cache is `<dataset_dir>/<filename>`, or `$CLIPADAPT_CACHE/<dataset>/<filename>` when the
    dataset folder is read-only; paths are relative to `path_prefix`, so it survives moving the
    root. A cache naming absent files, or failing `check(parsed)` (a reason string or None), is
    rebuilt with a note. Delete it after adding or removing images.
    """
    name = os.path.basename(os.path.normpath(dataset_dir))
    candidates = [os.path.join(dataset_dir, filename)]
    env = os.environ.get(CACHE_ENV)
    if env:
        candidates.append(os.path.join(os.path.abspath(os.path.expanduser(env)), name, filename))
    for path in candidates:
        if not os.path.isfile(path):
            continue
        try:
            data = load_json_file(path, ("train", "val", "test"), what="Cached file list")
            parsed = parse_entries(data, path)
            reason = check(parsed) if check else None
            if reason is None:
                print(f"Loading the cached file list {path}")
                datums = entries_to_datums(parsed, path_prefix, path)
                return datums["train"], datums["val"], datums["test"]
        except DatasetError as err:
            reason = str(err).splitlines()[0]
        print(f"Note: ignoring the cached file list {path} ({reason}); listing the folders again")

    train, val, test = build()
    writable = [p for p in candidates if can_create_dir(os.path.dirname(p))]
    if writable:
        data = {k: [[relative_path(d.impath, path_prefix), d.label, d.classname] for d in split]
                for k, split in (("train", train), ("val", val), ("test", test))}
        write_json_atomic(data, writable[0], indent=None)
        print(f"Saved the file list to {writable[0]}")
    else:
        print(f"Note: {dataset_dir} is not writable and ${CACHE_ENV} is not set: the file list is not cached")
    return train, val, test


__all__ = ["CoOpDataset", "TestOnlyDataset", "DatasetNotFoundError", "read_classnames", "read_class_folders",
           "cached_file_list", "resolve_root"]
