"""ImageNet (ILSVRC-2012): 1,000 classes; the official val set is the test set (and CoOp's val)."""
import os

from clipadapt.data import (CoOpDataset, DatasetError, cached_file_list, listdir_nohidden, read_class_folders,
                            read_classnames)
from clipadapt.data.coop_fewshot import read_coop_imagenet_list
from clipadapt.engine import DATASET_REGISTRY


@DATASET_REGISTRY.register()
class ImageNet(CoOpDataset):
    dataset_dir = "imagenet"
    image_dir = "images"
    val_is_test = True
    cache_file = "preprocessed.json"  # our file list: relative paths, sorted folder listing
    coop_file = "preprocessed.pkl"  # CoOp's file list: used when present (its order is CoOp's draws')
    layout = ("images/train/<wnid>/*.JPEG   1,000 folders n01440764/, n01443537/, ...",
              "images/val/<wnid>/*.JPEG     the same 1,000 folders",
              "classnames.txt               1,000 lines 'n01440764 tench'")

    def build_split(self):
        text_file = os.path.join(self.dataset_dir, "classnames.txt")
        self.check_file(text_file, "ImageNet classnames.txt")
        classnames = read_classnames(text_file)
        train_dir, val_dir = (os.path.join(self.image_dir, s) for s in ("train", "val"))
        self.check_dir(train_dir, "ImageNet train folder")
        self.check_dir(val_dir, "ImageNet val folder")
        coop_file = os.path.join(self.dataset_dir, self.coop_file)
        if os.path.isfile(coop_file):
            print(f"Loading CoOp's file list {coop_file}")
            train, test = read_coop_imagenet_list(coop_file, self.image_dir, classnames)
            return train, None, test

        def list_folders():
            folders = listdir_nohidden(train_dir, dirs_only=True)
            val_folders = listdir_nohidden(val_dir, dirs_only=True)
            if folders != val_folders:
                odd = sorted(set(folders) ^ set(val_folders))
                raise DatasetError(f"{train_dir} and {val_dir} hold different class folders ({len(odd)} differ, "
                                   f"e.g. {odd[0]}); val must be sorted into the same <wnid>/ folders as train.")
            return (read_class_folders(train_dir, classnames, folders, text_file), [],
                    read_class_folders(val_dir, classnames, folders, text_file))

        def check(parsed):  # a cache made with another classnames.txt is stale
            for key in ("train", "test"):
                for rel, _, cname in parsed[key]:
                    if classnames.get(rel.split("/")[1]) != cname:
                        return f"{rel} is named {cname!r}, but {text_file} says otherwise"
            return None

        train, _, test = cached_file_list(self.dataset_dir, self.cache_file, list_folders, self.image_dir, check)
        return train, None, test
