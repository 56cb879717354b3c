"""Checks that a split file cannot leak and that the images are the ones the dataset shipped.

- `check_split_leaks`: an image listed twice, a test (or val) image also in train, one image under
  two labels, or a path that leaves the image folder (`../`, absolute) is an error naming the
  entries. CoOp's published split files have none of these (checked on all seven in
  ../shared/data/splits), so none is a mere warning.
- `verify_manifest`: with DATASET.VERIFY_MANIFEST, the images a run uses are hashed and compared
  with the dataset's `MANIFEST.sha256` (`sha256sum` format, paths relative to the dataset folder).
- `note_small_classes`: one line when DATASET.NUM_SHOTS is more than some classes have.
"""
import hashlib
import os
import posixpath

from .errors import DatasetError

MANIFEST_NAME = "MANIFEST.sha256"
# Splits whose images a model learns from; any other split sharing an image with one of them leaks.
TRAIN_KEYS = ("train",)


def _normalized(rel):
    """The path a split entry names, normalized (`a/./b` and `a//b` are `a/b`), with "/" separators."""
    return posixpath.normpath(rel.replace("\\", "/"))


def check_split_leaks(parsed, filepath, keys=None):
    """DatasetError for the first leak in `parsed` ({split: [(relpath, label, classname)]})."""
    keys = list(keys or parsed)
    first = {}  # normalized path -> (key, index, label)
    for key in keys:
        for i, (rel, label, cname) in enumerate(parsed[key]):
            entry = f"{key}[{i}] = {[rel, label, cname]!r}"
            norm = _normalized(rel)
            if rel.startswith("/") or os.path.isabs(rel) or norm == ".." or norm.startswith("../"):
                raise DatasetError(
                    f"{filepath}: entry {entry} points outside the dataset's image folder (an absolute path or "
                    "one that climbs out with ../). Split paths are relative to the image folder; fix the entry "
                    "or re-download the split file.")
            if norm not in first:
                first[norm] = (key, i, label)
                continue
            key0, i0, label0 = first[norm]
            earlier = f"{key0}[{i0}]"
            if label0 != label:
                raise DatasetError(
                    f"{filepath}: image {rel!r} is listed under two labels: {earlier} has label {label0}, entry "
                    f"{entry} has label {label}. One image has one class; fix the split file.")
            if key0 == key:
                raise DatasetError(
                    f"{filepath}: image {rel!r} is listed twice in {key!r} ({earlier} and {key}[{i}]); it would "
                    "count twice in sampling and accuracy. Remove the duplicate.")
            if key0 in TRAIN_KEYS or key in TRAIN_KEYS:
                raise DatasetError(
                    f"{filepath}: image {rel!r} is in {key0!r} ({earlier}) and in {key!r} ({key}[{i}]): an image "
                    "trained on would also be evaluated (a leak that inflates accuracy). Fix the split file.")
            raise DatasetError(
                f"{filepath}: image {rel!r} is in both {key0!r} ({earlier}) and {key!r} ({key}[{i}]); validation "
                "and test must not share images. Fix the split file.")


# ---------------------------------------------------------------------------------------------
# MANIFEST.sha256

def read_manifest(path):
    """{normalized relative path: sha256} from `sha256sum` output ("<hex>  ./rel/path" per line)."""
    digests = {}
    with open(path, "r", errors="replace") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            digest, sep, rel = line.partition(" ")
            if not sep or len(digest) != 64:
                raise DatasetError(f"{path}: line {n} {line[:80]!r} is not '<sha256>  <path>' (sha256sum format).")
            rel = rel[1:] if rel.startswith(("*", " ")) else rel  # sha256sum's binary/text marker
            digests[_normalized(rel)] = digest.lower()
    return digests


def file_sha256(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def verify_manifest(dataset_dir, splits):
    """Hash every image of `splits` ({name: [Datum]}) against `<dataset_dir>/MANIFEST.sha256`.

    DatasetError naming the first damaged image and the count; a note when there is no manifest
    or some images are not listed in it. Returns the number of images verified."""
    path = os.path.join(dataset_dir, MANIFEST_NAME)
    if not os.path.isfile(path):
        print(f"Note: DATASET.VERIFY_MANIFEST is set but {path} does not exist; the images are not verified")
        return 0
    digests = read_manifest(path)
    seen, damaged, unlisted = set(), [], []
    for items in splits.values():
        for item in items or ():
            if item.impath in seen:
                continue
            seen.add(item.impath)
            rel = _normalized(os.path.relpath(item.impath, dataset_dir))
            if rel not in digests:
                unlisted.append(item.impath)
            elif file_sha256(item.impath) != digests[rel]:
                damaged.append(item.impath)
    if damaged:
        raise DatasetError(
            f"{len(damaged)} of {len(seen)} image(s) differ from {path}, e.g. {damaged[0]}: damaged or replaced "
            "since the manifest was written (they may still decode). Re-download or re-extract them, or set "
            "DATASET.VERIFY_MANIFEST False to use them as they are.")
    if unlisted:
        print(f"Note: {len(unlisted)} image(s) are not listed in {path}, e.g. {unlisted[0]}; they are not verified")
    print(f"Verified {len(seen) - len(unlisted)} image(s) against {path}")
    return len(seen) - len(unlisted)


# ---------------------------------------------------------------------------------------------
# few-shot sizes

def note_small_classes(train, num_shots, classnames=None):
    """Print once which classes have fewer than `num_shots` training images (they use all they have)."""
    sizes = {}
    for item in train:
        sizes[item.label] = sizes.get(item.label, 0) + 1
    small = sorted((n, label) for label, n in sizes.items() if n < num_shots)
    if not small:
        return []
    n, label = small[0]
    name = f" ({classnames[label]!r})" if classnames and label < len(classnames) else ""
    print(f"Note: DATASET.NUM_SHOTS is {num_shots}, but {len(small)} of {len(sizes)} classes have fewer training "
          f"images (the fewest: class {label}{name} with {n}); those classes use all their images")
    return [label for _, label in small]
