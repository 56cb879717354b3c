"""ImageNetV2 matched-frequency (Recht et al.): test only; folders 0..999 are ImageNet's labels."""
import os

from clipadapt.data import DatasetError, TestOnlyDataset, listdir_nohidden
from clipadapt.engine import DATASET_REGISTRY, Datum


@DATASET_REGISTRY.register()
class ImageNetV2(TestOnlyDataset):
    dataset_dir = "imagenetv2"
    image_dir = "imagenetv2-matched-frequency-format-val"
    layout = ("imagenetv2-matched-frequency-format-val/<0..999>/*.jpeg",
              "classnames.txt   a copy of imagenet/classnames.txt (or keep it at $DATA/imagenet/)")

    def read_data(self, classnames):
        names = list(classnames.values())
        absent = [str(y) for y in range(len(names)) if not os.path.isdir(os.path.join(self.image_dir, str(y)))]
        if absent:
            raise DatasetError(f"{self.image_dir} lacks {len(absent)} of the {len(names)} class folders "
                               f"0..{len(names) - 1} (first: {os.path.join(self.image_dir, absent[0])}); "
                               f"was the archive extracted completely?")
        items = []
        for label, classname in enumerate(names):
            class_dir = os.path.join(self.image_dir, str(label))
            items += [Datum(impath=os.path.join(class_dir, im), label=label, classname=classname)
                      for im in listdir_nohidden(class_dir, files_only=True)]
        return items
