"""FGVC-Aircraft (Maji et al.): 100 aircraft variants, read from the official split files (no CoOp json)."""
import os

from clipadapt.data import CoOpDataset, DatasetError
from clipadapt.engine import DATASET_REGISTRY, Datum


@DATASET_REGISTRY.register()
class FGVCAircraft(CoOpDataset):
    dataset_dir = "fgvc_aircraft"
    image_dir = "images"
    layout = ("images/<id>.jpg", "variants.txt   one variant per line; line order = label",
              "images_variant_train.txt, images_variant_val.txt, images_variant_test.txt   '<id> <variant>'")

    def build_split(self):
        variants_file = os.path.join(self.dataset_dir, "variants.txt")
        self.check_file(variants_file, "Class list variants.txt")
        with open(variants_file) as f:
            classnames = [line.strip() for line in f if line.strip()]
        cname2lab = {c: i for i, c in enumerate(classnames)}
        return tuple(self.read_data(cname2lab, f"images_variant_{s}.txt") for s in ("train", "val", "test"))

    def read_data(self, cname2lab, split_file):
        filepath = os.path.join(self.dataset_dir, split_file)
        self.check_file(filepath, f"Split file {split_file}")
        items, missing = [], []
        with open(filepath) as f:
            for i, line in enumerate(f):
                imname, _, classname = line.strip().partition(" ")
                if not imname:
                    continue
                if classname not in cname2lab:
                    raise DatasetError(f"{filepath}: line {i + 1} {line.strip()!r} names variant {classname!r}, "
                                       f"which is not in variants.txt.")
                impath = os.path.join(self.image_dir, imname + ".jpg")
                if not os.path.isfile(impath):
                    missing.append(impath)
                    continue
                items.append(Datum(impath=impath, label=cname2lab[classname], classname=classname))
        if missing:
            raise DatasetError(f"{filepath} names {len(missing)} images that are not on disk; "
                               f"the first is {missing[0]}.")
        return items
