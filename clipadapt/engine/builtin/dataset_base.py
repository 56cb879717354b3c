"""Datum and DatasetBase with Dassl's names and behaviour."""
import os
import random
from collections import defaultdict


class Datum:
    """One labelled image. Like Dassl's, it refuses a path that is not a file."""

    __slots__ = ("_impath", "_label", "_domain", "_classname")

    def __init__(self, impath="", label=0, domain=0, classname=""):
        if not os.path.isfile(impath):
            raise FileNotFoundError(
                f"Image file not found: {impath}. The split file names an image that is not on disk; "
                "check DATASET.ROOT and that the dataset was extracted completely (see DATASETS.md)."
            )
        self._impath = impath
        self._label = int(label)
        self._domain = int(domain)
        self._classname = classname

    impath = property(lambda self: self._impath)
    label = property(lambda self: self._label)
    domain = property(lambda self: self._domain)
    classname = property(lambda self: self._classname)

    def __repr__(self):
        return f"Datum({self._impath!r}, label={self._label}, classname={self._classname!r})"


class DatasetBase:
    dataset_dir = ""
    domains = []

    def __init__(self, train_x=None, train_u=None, val=None, test=None):
        self._train_x = train_x
        self._train_u = train_u
        self._val = val
        self._test = test
        source = train_x if train_x else (test or [])
        self._num_classes = self.get_num_classes(source)
        self._lab2cname, self._classnames = self.get_lab2cname(source)

    train_x = property(lambda self: self._train_x)
    train_u = property(lambda self: self._train_u)
    val = property(lambda self: self._val)
    test = property(lambda self: self._test)
    lab2cname = property(lambda self: self._lab2cname)
    classnames = property(lambda self: self._classnames)
    num_classes = property(lambda self: self._num_classes)

    @staticmethod
    def get_num_classes(data_source):
        return max((item.label for item in data_source), default=-1) + 1

    @staticmethod
    def get_lab2cname(data_source):
        mapping = {item.label: item.classname for item in data_source}
        labels = sorted(mapping)
        return mapping, [mapping[label] for label in labels]

    def generate_fewshot_dataset(self, *data_sources, num_shots=-1, repeat=False):
        """K images per class drawn with python's `random` (seeded by the caller), as Dassl does."""
        if num_shots < 1:
            return data_sources[0] if len(data_sources) == 1 else data_sources
        print(f"Creating a {num_shots}-shot dataset")
        output = []
        for data_source in data_sources:
            tracker = self.split_dataset_by_label(data_source)
            dataset = []
            for items in tracker.values():
                if len(items) >= num_shots:
                    sampled = random.sample(items, num_shots)
                elif repeat:
                    sampled = random.choices(items, k=num_shots)
                else:
                    sampled = items
                dataset.extend(sampled)
            output.append(dataset)
        return output[0] if len(output) == 1 else output

    @staticmethod
    def split_dataset_by_label(data_source):
        output = defaultdict(list)
        for item in data_source:
            output[item.label].append(item)
        return output

    @staticmethod
    def split_dataset_by_domain(data_source):
        output = defaultdict(list)
        for item in data_source:
            output[item.domain].append(item)
        return output
