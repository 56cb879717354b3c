"""ImageNet-R (Hendrycks et al.): test only; 200 wnid folders relabelled 0..199 by sorted folder."""
from clipadapt.data import TestOnlyDataset, read_class_folders
from clipadapt.engine import DATASET_REGISTRY


@DATASET_REGISTRY.register()
class ImageNetR(TestOnlyDataset):
    dataset_dir = "imagenet-rendition"
    image_dir = "imagenet-r"
    layout = ("imagenet-r/<wnid>/*.jpg   200 folders n01443537/, ... (README.txt is skipped)",
              "classnames.txt   a copy of imagenet/classnames.txt (or keep it at $DATA/imagenet/)")

    def read_data(self, classnames):
        return read_class_folders(self.image_dir, classnames, source=self.classnames_file)
