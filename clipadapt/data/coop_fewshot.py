"""CoOp's pickled file lists, read without running code: the few-shot files
`split_fewshot/shot_K-seed_S.pkl`, and ImageNet's `preprocessed.pkl`.

CoOp pickles `{"train": [Datum, ...], "val": [Datum, ...]}` (ImageNet: train only) with Dassl's
`Datum` objects, whose attributes hold absolute paths of the machine that wrote the file. Python's
`pickle.load` would import and call whatever a file names; this reader accepts only Dassl's `Datum`
(rebuilt as an inert record) and plain containers, and refuses anything else before it is created.
The paths are matched to the current split by their trailing components, so a file written on
another machine (or under another DATA root) is used as it is.
"""
import io
import os
import pickle

from .errors import DatasetError

# What CoOp's files name: Dassl's Datum (module path as Dassl defines it) and nothing else.
DATUM_GLOBALS = {("dassl.data.datasets.base_dataset", "Datum"), ("dassl.data.datasets", "Datum")}
# Pickle protocols 0/1 rebuild plain objects through copyreg; protocol >= 2 needs no global for it.
COPYREG_GLOBALS = {("copyreg", "_reconstructor"), ("builtins", "object")}


class PickledDatum:
    """Inert stand-in for Dassl's Datum: it only stores the attributes the pickle sets."""

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"a Datum's state is a {type(state).__name__}, not a dict")
        self.__dict__.update(state)

    @property
    def impath(self):
        return self.__dict__.get("_impath", self.__dict__.get("impath"))

    @property
    def label(self):
        return self.__dict__.get("_label", self.__dict__.get("label"))

    @property
    def classname(self):
        return self.__dict__.get("_classname", self.__dict__.get("classname"))


class _DatumUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in DATUM_GLOBALS:
            return PickledDatum
        if (module, name) in COPYREG_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a CoOp few-shot file never holds "
                                     "(only Dassl's Datum); it was not loaded")


def load_coop_datum_pickle(path, what, keys, required, remedy):
    """{key: [PickledDatum]} from a pkl CoOp wrote (keys among `keys`, `required` present); a
    DatasetError naming `what` and `remedy` for anything else."""
    try:
        with open(path, "rb") as f:
            data = _DatumUnpickler(io.BytesIO(f.read())).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
        raise DatasetError(f'{what} "{path}" cannot be read safely: {err}. {remedy}') from None
    listed = " and ".join(f'"{k}"' for k in keys)
    if not isinstance(data, dict) or any(k not in data for k in required):
        raise DatasetError(f'{what} "{path}" is not a dict with {listed} lists, as CoOp writes it.')
    for key, items in data.items():
        if key not in keys or not isinstance(items, list):
            raise DatasetError(f'{what} "{path}": unexpected entry "{key}" (CoOp writes {listed} lists).')
        for item in items:
            if not isinstance(item, PickledDatum) or item.impath is None or item.label is None:
                raise DatasetError(f'{what} "{path}": an item of "{key}" is not a Datum with a path and a label.')
    return data


def load_coop_fewshot_pickle(path):
    """{"train": [PickledDatum], "val": [...]} from CoOp's split_fewshot pkl."""
    return load_coop_datum_pickle(path, "CoOp few-shot file", ("train", "val"), ("train",),
                                  "Delete it to let the sample be drawn again (the draw is CoOp's for the same seed).")


def path_parts(impath):
    """The components of a pickled path, whichever OS wrote it."""
    return os.path.normpath(str(impath)).replace("\\", "/").split("/")


def match_to_split(impath, pool):
    """The relative path (a key of `pool`) that `impath` ends with, or None.

    `pool` maps paths relative to the dataset folder to the split's Datums; `impath` is absolute on
    the machine that wrote the file. The shortest trailing part of `impath` that is a key wins (the
    split's keys are unique, so for a path of this dataset exactly one suffix is a key).
    """
    parts = path_parts(impath)
    for n in range(1, len(parts) + 1):
        candidate = "/".join(parts[-n:])
        if candidate in pool:
            return candidate
    return None


def coop_entries(items, pool, path, key):
    """[relative path, label, classname] for each pickled Datum, or a DatasetError naming the first misfit."""
    entries = []
    for item in items:
        rel = match_to_split(item.impath, pool)
        if rel is None:
            raise DatasetError(f'CoOp few-shot file "{path}" names {item.impath}, which is not in the current '
                               f"{key} split of this dataset: the file was made for another split or dataset. "
                               "Move it away to draw the sample here (the draw is CoOp's for the same seed).")
        entries.append([rel, int(item.label), item.classname])
    return entries


def read_coop_imagenet_list(path, image_dir, classnames):
    """(train, test) Datums from CoOp's `imagenet/preprocessed.pkl`, in the file's order.

    CoOp lists each class folder unsorted (os.listdir order, which depends on the filesystem) and
    draws few-shot samples from that order, so this file, not a sorted listing, gives a CoOp user
    CoOp's draws. Paths are re-rooted to `image_dir/{train,val}/<wnid>/<file>`; labels and names are
    checked against the folder order and `classnames` (wnid -> name).
    """
    from clipadapt.engine import Datum
    remedy = "Move it away to list the image folders here instead."
    data = load_coop_datum_pickle(path, "CoOp's ImageNet file list", ("train", "test"), ("train", "test"), remedy)
    wnids = sorted({path_parts(d.impath)[-2] for d in data["train"]})
    label_of = {wnid: label for label, wnid in enumerate(wnids)}
    splits = {}
    for key, folder in (("train", "train"), ("test", "val")):
        items = []
        for item in data[key]:
            wnid, fname = path_parts(item.impath)[-2:]
            if label_of.get(wnid) != int(item.label) or classnames.get(wnid) != item.classname:
                raise DatasetError(f'CoOp\'s ImageNet file list "{path}": {item.impath} has label {item.label} '
                                   f"({item.classname!r}), but folder {wnid} is label {label_of.get(wnid)} "
                                   f"({classnames.get(wnid)!r}) here. {remedy}")
            impath = os.path.join(image_dir, folder, wnid, fname)
            try:
                items.append(Datum(impath=impath, label=int(item.label), classname=item.classname))
            except (FileNotFoundError, AssertionError):  # the built-in Datum raises one, Dassl's the other
                raise DatasetError(f'CoOp\'s ImageNet file list "{path}" names {item.impath}, and {impath} does not '
                                   f"exist: the file was written for other image folders. {remedy}") from None
        splits[key] = items
    return splits["train"], splits["test"]
