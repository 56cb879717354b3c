"""Split files, few-shot samples and base/new subsampling, written once for every dataset.

Formats are CoOp's:

- a split file is json `{"train": [[relpath, label, classname], ...], "val": [...], "test": [...]}`
  with paths relative to the dataset's image folder;
- a few-shot sample is K images per class from train and min(K, 4) per class from val, drawn
  per seed over all classes before base/new subsampling, so base and new runs of one seed share
  their shots. The draw is Dassl's (`generate_fewshot_dataset` after `set_random_seed(seed)`):
  classes in order of first appearance in the split, `random.sample` per class, train then val.
  CoOp pickles the `Datum`s with absolute paths (`split_fewshot/shot_K-seed_S.pkl`); such a file
  is used when present (read by `coop_fewshot`, no code run). Our own cache is json with paths
  relative to the dataset folder, so moving DATASET.ROOT keeps it valid.
"""
import json
import math
import os
import random

from clipadapt.engine import Datum

from ..atomic import atomic_write_json as write_json_atomic
from .checks import check_split_leaks
from .coop_fewshot import coop_entries, load_coop_fewshot_pickle
from .errors import DatasetError, is_writable_dir, not_found

SPLIT_KEYS = ("train", "val", "test")
SUBSAMPLE_MODES = ("all", "base", "new", "gzsl")
CACHE_ENV = "CLIPADAPT_CACHE"


# ---------------------------------------------------------------------------------------------
# small file helpers

def listdir_nohidden(path, dirs_only=False, files_only=False):
    """Sorted names in `path` without hidden entries (".DS_Store", ".ipynb_checkpoints", ...)."""
    names = []
    for entry in os.scandir(path):
        if entry.name.startswith("."):
            continue
        try:
            if (dirs_only and not entry.is_dir()) or (files_only and not entry.is_file()):
                continue
        except OSError as exc:  # a symbolic link that loops (ELOOP) cannot be told file or folder
            raise DatasetError(f'"{entry.path}" cannot be read as a file or a folder ({exc.strerror}): a symbolic '
                               "link that points at itself, or round a loop? Remove it or point it at an image "
                               "or a class folder.") from None
        names.append(entry.name)
    return sorted(names)


def relative_path(impath, start):
    """`impath` relative to `start`, with "/" separators whatever the OS."""
    return os.path.relpath(impath, start).replace(os.sep, "/")


def load_json_file(filepath, required_keys, what="Split file"):
    """Read a json dict that must hold `required_keys`; a clear DatasetError names the file otherwise."""
    if not os.path.isfile(filepath):
        raise not_found(what, filepath)
    try:
        with open(filepath, "r") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"{what} {filepath} is not valid json ({err}). Delete or re-download it.") from err
    if not isinstance(data, dict):
        raise DatasetError(f"{what} {filepath} must hold a json object with keys {list(required_keys)}, "
                           f"found a {type(data).__name__}.")
    missing = [k for k in required_keys if k not in data]
    if missing:
        raise DatasetError(f"{what} {filepath} lacks the key(s) {missing}; it must hold {list(required_keys)}, "
                           f"each a list of [relative_path, label, classname].")
    return data


# ---------------------------------------------------------------------------------------------
# split files

def parse_entries(data, filepath, keys=SPLIT_KEYS):
    """Check every `[relpath, label, classname]` entry of `data[key]`; return {key: [(rel, label, cname)]}.

    Labels must be 0..n-1 for the n classes in the file with one classname per label, and every
    class must have training images.
    """
    parsed = {}
    for key in keys:
        items = data[key]
        if not isinstance(items, list):
            raise DatasetError(f"{filepath}: \"{key}\" must be a list of [relative_path, label, classname], "
                               f"found a {type(items).__name__}.")
        for i, entry in enumerate(items):
            ok = (isinstance(entry, (list, tuple)) and len(entry) == 3 and isinstance(entry[0], str)
                  and isinstance(entry[1], int) and not isinstance(entry[1], bool) and isinstance(entry[2], str))
            if not ok:
                raise DatasetError(f"{filepath}: entry {key}[{i}] = {entry!r} is not "
                                   f"[relative_path, label, classname].")
        parsed[key] = [tuple(entry) for entry in items]

    # n distinct labels must be 0..n-1, one classname each (two classes may share a name:
    # ImageNet has two "crane" and two "maillot").
    labels = {label for key in keys for _, label, _ in parsed[key]}
    n = len(labels)
    lab2cname, where = {}, {}
    for key in keys:
        for i, (rel, label, cname) in enumerate(parsed[key]):
            entry = [rel, label, cname]
            if not 0 <= label < n:
                others = len(labels - {label})  # the stray label is not one of the file's classes
                raise DatasetError(
                    f"{filepath}: entry {key}[{i}] = {entry!r}: label {label} is out of range; the file's other "
                    f"entries have {others} classes, so labels must be 0..{others - 1}.")
            if lab2cname.setdefault(label, cname) != cname:
                raise DatasetError(
                    f"{filepath}: entry {key}[{i}] = {entry!r} names label {label} {cname!r}, but entry "
                    f"{where[label]} names it {lab2cname[label]!r}: labels and classnames are inconsistent.")
            where.setdefault(label, f"{key}[{i}]")
    if "train" in parsed:
        train_labels = {label for _, label, _ in parsed["train"]}
        for label in sorted(lab2cname):
            if label not in train_labels:
                raise DatasetError(empty_class_message(parsed, keys, label, lab2cname, filepath))
    return parsed


def empty_class_message(parsed, keys, label, lab2cname, filepath):
    """A label with no training image is most often a typo in a few entries: name them, and the label
    their classname has elsewhere."""
    entries = [(f"{key}[{i}]", [rel, y, c]) for key in keys for i, (rel, y, c) in enumerate(parsed[key]) if y == label]
    cname = lab2cname[label]
    others = sorted({y for key in keys for _, y, c in parsed[key] if c == cname and y != label})
    shown = ", ".join(f"{where} = {entry!r}" for where, entry in entries[:3]) + (" ..." if len(entries) > 3 else "")
    if others:
        return (f"{filepath}: label {label} is out of place in {len(entries)} entry(ies) ({shown}): their classname "
                f"{cname!r} is label {others[0]} elsewhere, and label {label} has no training images. Fix the label "
                "in those entries.")
    return (f"{filepath}: class {label} ({cname!r}) has no images in \"train\", only {len(entries)} other entry(ies) "
            f"({shown}): an empty class cannot be learned or sampled. Fix those entries' label, or add training "
            "images of the class.")


def entries_to_datums(parsed, path_prefix, filepath, keys=SPLIT_KEYS):
    """Datums for parsed entries; a missing image raises one error naming the first and the count."""
    out, missing, first = {}, 0, None
    for key in keys:
        items = []
        for rel, label, cname in parsed[key]:
            impath = os.path.join(path_prefix, rel)
            try:
                items.append(Datum(impath=impath, label=label, classname=cname))
            except (FileNotFoundError, AssertionError):  # ours raises the former, Dassl's asserts
                missing += 1
                first = first or impath
        out[key] = items
    if missing:
        total = sum(len(parsed[k]) for k in keys)
        raise DatasetError(
            f"{filepath} names {missing} of {total} images that are not on disk; the first is {first}. "
            f"Check DATASET.ROOT, that the archive was extracted completely into {path_prefix}, "
            f"and that the split file belongs to this copy of the dataset (see DATASETS.md).")
    return out


def read_split(filepath, path_prefix):
    """Read a CoOp split json into (train, val, test) lists of Datum; paths are joined to `path_prefix`."""
    data = load_json_file(filepath, SPLIT_KEYS)
    parsed = parse_entries(data, filepath)
    check_split_leaks(parsed, filepath)
    datums = entries_to_datums(parsed, path_prefix, filepath)
    return datums["train"], datums["val"], datums["test"]


def save_split(train, val, test, filepath, path_prefix):
    """Write (train, val, test) as CoOp's split json with paths relative to `path_prefix` (atomic)."""
    def _extract(items):
        return [[relative_path(d.impath, path_prefix), d.label, d.classname] for d in items]

    write_json_atomic({"train": _extract(train), "val": _extract(val), "test": _extract(test)}, filepath)
    print(f"Saved split to {filepath}")


def read_and_split_data(image_dir, p_trn=0.5, p_val=0.2, ignored=(), new_cnames=None, seed=1):
    """Split `image_dir/<category>/*` per class into train/val/test (50/20/30 by default).

    Categories (sub folders not in `ignored`) are sorted and labelled by index; `new_cnames`
    renames a folder to its classname. Images are shuffled by a local `random.Random(seed)`, so
    the split depends only on the files, never on the global RNG.
    """
    if not os.path.isdir(image_dir):
        raise not_found("Image folder", image_dir)
    categories = [c for c in listdir_nohidden(image_dir, dirs_only=True) if c not in set(ignored)]
    if not categories:
        raise DatasetError(f"No class folders found in {image_dir} (ignored: {list(ignored)}); expected one "
                           f"sub folder of images per class.")
    p_tst = 1 - p_trn - p_val
    print(f"Splitting into {p_trn:.0%} train, {p_val:.0%} val, and {p_tst:.0%} test")
    rng = random.Random(seed)
    new_cnames = new_cnames or {}
    train, val, test = [], [], []
    for label, category in enumerate(categories):
        category_dir = os.path.join(image_dir, category)
        images = [os.path.join(category_dir, im) for im in listdir_nohidden(category_dir, files_only=True)]
        if not images:
            raise DatasetError(f"Class folder {category_dir} holds no images: an empty class cannot be split. "
                               f"Remove it or add it to the dataset's ignored folders.")
        rng.shuffle(images)
        n_total = len(images)
        n_train, n_val = round(n_total * p_trn), round(n_total * p_val)
        n_test = n_total - n_train - n_val
        if min(n_train, n_val, n_test) <= 0:
            raise DatasetError(f"Class folder {category_dir} holds {n_total} images, too few for a "
                               f"{p_trn:.0%}/{p_val:.0%}/{p_tst:.0%} split with images in each part.")
        classname = new_cnames.get(category, category)

        def _collate(paths):
            return [Datum(impath=p, label=label, classname=classname) for p in paths]

        train += _collate(images[:n_train])
        val += _collate(images[n_train:n_train + n_val])
        test += _collate(images[n_train + n_val:])
    return train, val, test


# ---------------------------------------------------------------------------------------------
# few-shot samples

def fewshot_cache_dirs(dataset_dir, cache_dir=None):
    """(where to read, where to write) the few-shot cache of one dataset.

    Read order: `cache_dir` if given, else `<dataset_dir>/split_fewshot` (CoOp's place) and then
    `$CLIPADAPT_CACHE/fewshot/<dataset>/`. Write to the first of those that can be written: a
    read-only dataset folder (a shared copy, say) is never touched; without `$CLIPADAPT_CACHE`
    the sample is simply not cached (sampling is deterministic per seed anyway).
    """
    if cache_dir:
        return [cache_dir], (cache_dir if can_create_dir(cache_dir) else None)
    candidates = [os.path.join(dataset_dir, "split_fewshot")]
    env = os.environ.get(CACHE_ENV)
    if env:
        name = os.path.basename(os.path.normpath(dataset_dir))
        candidates.append(os.path.join(os.path.abspath(os.path.expanduser(env)), "fewshot", name))
    return candidates, next((c for c in candidates if can_create_dir(c)), None)


def can_create_dir(folder):
    """True when `folder` exists and is writable, or its nearest existing parent is."""
    path = os.path.abspath(folder)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return is_writable_dir(path)


# Our json caches say which draw made them; one without this mark (labels in sorted order, before
# the draw followed Dassl) is drawn again.
DRAW = "dassl"


def draw_fewshot(items, num_shots, rng):
    """`num_shots` items per label (all of them for a smaller class), as Dassl's generate_fewshot_dataset:

    labels in order of first appearance in `items` (not sorted: on OxfordFlowers and StanfordCars
    the two orders give different samples), one `rng.sample` per label with enough items.
    """
    by_label = {}  # insertion order = first appearance
    for item in items:
        by_label.setdefault(item.label, []).append(item)
    out = []
    for group in by_label.values():
        out += rng.sample(group, num_shots) if len(group) >= num_shots else list(group)
    return out


def _check_cached(entries, pool, num_shots, key):
    """Datums for cached entries, or a reason why they do not fit the current split."""
    sizes = {}
    for d in pool.values():
        sizes[d.label] = sizes.get(d.label, 0) + 1
    out, seen, counts = [], set(), {}
    for entry in entries:
        if not (isinstance(entry, list) and len(entry) == 3):
            return None, f"{key} entry {entry!r} is not [relative_path, label, classname]"
        rel, label, cname = entry
        d = pool.get(rel)
        if d is None:
            return None, f"it names {rel}, which is not in the current {key} split"
        if d.label != label or d.classname != cname:
            return None, f"{rel} has label {label} ({cname!r}) there but {d.label} ({d.classname!r}) in the split"
        if rel in seen:
            return None, f"{rel} appears twice"
        seen.add(rel)
        counts[label] = counts.get(label, 0) + 1
        out.append(d)
    for label, size in sizes.items():
        if counts.get(label, 0) != min(num_shots, size):
            return None, (f"class {label} has {counts.get(label, 0)} {key} images there, "
                          f"expected {min(num_shots, size)}")
    return out, None


def _load_fewshot_cache(path, dataset_dir, train, val, num_shots, seed):
    keys = ("train",) if val is None else ("train", "val")
    try:
        data = load_json_file(path, keys, what="Few-shot cache")
    except DatasetError as err:
        return None, str(err).splitlines()[0]
    if data.get("num_shots", num_shots) != num_shots or data.get("seed", seed) != seed:
        return None, f"it was drawn for num_shots={data.get('num_shots')}, seed={data.get('seed')}"
    if data.get("draw") != DRAW:
        return None, "it was drawn with classes in sorted order, not in Dassl's order of first appearance"
    return _fit_entries(data, keys, dataset_dir, train, val, num_shots)


def _fit_entries(data, keys, dataset_dir, train, val, num_shots):
    """(train, val) Datums of the split named by `data[key]` entries, or (None, why they do not fit)."""
    result = []
    for key, split, shots in (("train", train, num_shots), ("val", val, min(num_shots, 4))):
        if key not in keys:
            result.append(None)
            continue
        pool = {relative_path(d.impath, dataset_dir): d for d in split}
        items, reason = _check_cached(data[key], pool, shots, key)
        if reason:
            return None, reason
        result.append(items)
    return tuple(result), None


def fewshot_record(num_shots, seed, train, val, dataset_dir):
    """The json form of a few-shot sample (what `_load_fewshot_cache` reads back)."""
    data = {"num_shots": num_shots, "seed": seed, "draw": DRAW,
            "train": [[relative_path(d.impath, dataset_dir), d.label, d.classname] for d in train]}
    if val is not None:
        data["val"] = [[relative_path(d.impath, dataset_dir), d.label, d.classname] for d in val]
    return data


def _load_coop_pickle(path, dataset_dir, train, val, num_shots):
    """CoOp's pkl mapped onto the current split's Datums; DatasetError when it does not fit."""
    data = load_coop_fewshot_pickle(path)
    keys = ("train",) if val is None else ("train", "val")
    if val is not None and "val" not in data:
        raise DatasetError(f'CoOp few-shot file "{path}" has no "val" list, but this dataset draws val shots.')
    entries = {}
    for key, split in (("train", train), ("val", val)):
        if key in keys:
            pool = {relative_path(d.impath, dataset_dir): d for d in split}
            entries[key] = coop_entries(data[key], pool, path, key)
    loaded, reason = _fit_entries(entries, keys, dataset_dir, train, val, num_shots)
    if loaded is None:
        raise DatasetError(f'CoOp few-shot file "{path}" does not fit the current split: {reason}. '
                           "Move it away to draw the sample here (the draw is CoOp's for the same seed).")
    return loaded


def sample_fewshot(dataset_dir, train, val, num_shots, seed, cache_dir=None):
    """K shots per class from `train` and min(K, 4) from `val` (None: train only) -> (train, val).

    Drawn as Dassl draws it (`draw_fewshot`) with `random.Random(seed)`, the stream Dassl's
    `set_random_seed(seed)` gives the global RNG, over ALL classes: the sample is CoOp's for the
    same seed, depends on the seed and the split only (not on the global RNG), and base/new runs of
    a seed share it. CoOp's `<dataset_dir>/split_fewshot/shot_{K}-seed_{seed}.pkl` is used instead
    when present (and never overwritten). Cached as
    `shot_{K}-seed_{seed}.json` (see `fewshot_cache_dirs`) with paths relative to `dataset_dir`;
    a cache that does not fit the current split is redrawn with a printed note. SEED < 0 draws an
    unseeded sample and does not cache it.
    """
    if num_shots < 1:
        return train, val
    seed = int(seed)
    if seed < 0:
        print("SEED < 0: drawing an unseeded few-shot sample (not reproducible, not cached)")
        rng = random.Random()
        return draw_fewshot(train, num_shots, rng), (None if val is None else draw_fewshot(val, min(num_shots, 4), rng))

    coop_file = os.path.join(dataset_dir, "split_fewshot", f"shot_{num_shots}-seed_{seed}.pkl")
    if os.path.isfile(coop_file):  # CoOp's own sample wins: the user's CoOp runs trained on it
        print(f"Loading preprocessed few-shot data from {coop_file}")
        return _load_coop_pickle(coop_file, dataset_dir, train, val, num_shots)

    filename = f"shot_{num_shots}-seed_{seed}.json"
    read_dirs, write_dir = fewshot_cache_dirs(dataset_dir, cache_dir)
    for folder in read_dirs:
        path = os.path.join(folder, filename)
        if not os.path.exists(path):
            continue
        loaded, reason = _load_fewshot_cache(path, dataset_dir, train, val, num_shots, seed)
        if loaded is not None:
            print(f"Loading preprocessed few-shot data from {path}")
            return loaded
        print(f"Note: few-shot cache {path} does not match the current split ({reason}); drawing the sample again")

    rng = random.Random(seed)
    train = draw_fewshot(train, num_shots, rng)
    val = None if val is None else draw_fewshot(val, min(num_shots, 4), rng)
    if write_dir is None:
        print(f"Note: {os.path.join(dataset_dir, 'split_fewshot')} is not writable and ${CACHE_ENV} is not set: "
              f"the {num_shots}-shot sample (seed {seed}) is not cached; it is redrawn identically each run")
        return train, val
    path = os.path.join(write_dir, filename)
    data = fewshot_record(num_shots, seed, train, val, dataset_dir)
    try:
        write_json_atomic(data, path)
        print(f"Saving preprocessed few-shot data to {path}")
    except OSError as err:
        print(f"Note: could not write the few-shot cache {path} ({err}); continuing without it")
    return train, val


# ---------------------------------------------------------------------------------------------
# base / new classes

def base_new_labels(labels):
    """CoCoOp's rule on a set of labels: sorted, base = first ceil(n/2), new = the rest."""
    labels = sorted(set(labels))
    m = math.ceil(len(labels) / 2)
    return labels[:m], labels[m:]


def _relabel(items, relabeler):
    if all(k == v for k, v in relabeler.items()):
        return [d for d in items if d.label in relabeler]
    return [Datum(impath=d.impath, label=relabeler[d.label], domain=d.domain, classname=d.classname)
            for d in items if d.label in relabeler]


def subsample_classes(*splits, subsample="all"):
    """Keep the base or new half of the classes, CoCoOp's way (the labels of `splits[0]` decide).

    - "all": the splits unchanged.
    - "base" / "new": labels sorted, base = first ceil(n/2), new = the rest; every split keeps
      only those classes, relabelled from 0.
    - "gzsl": every split but the LAST (train, val) keeps the base classes, and the last (test)
      keeps all classes; labels stay 0..n-1, so base classes are 0..m-1 and new ones m..n-1.
    Returns a tuple with one list per split.
    """
    if subsample not in SUBSAMPLE_MODES:
        raise ValueError(f"DATASET.SUBSAMPLE_CLASSES must be one of {list(SUBSAMPLE_MODES)}, got {subsample!r}")
    if subsample == "all":
        return splits
    labels = sorted({d.label for d in splits[0]})
    base, new = base_new_labels(labels)
    if subsample == "gzsl":
        print("SUBSAMPLE BASE CLASSES FOR TRAINING, ALL CLASSES FOR TEST (GZSL)!")
        full = {y: i for i, y in enumerate(labels)}
        base_only = {y: full[y] for y in base}
        return tuple(_relabel(s, base_only) for s in splits[:-1]) + (_relabel(splits[-1], full),)
    selected = base if subsample == "base" else new
    print(f"SUBSAMPLE {subsample.upper()} CLASSES!")
    relabeler = {y: i for i, y in enumerate(selected)}
    return tuple(_relabel(s, relabeler) for s in splits)
