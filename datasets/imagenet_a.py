"""ImageNet-A (Hendrycks et al.): test only; 200 wnid folders relabelled 0..199 by sorted folder."""
from clipadapt.data import TestOnlyDataset, read_class_folders
from clipadapt.engine import DATASET_REGISTRY


@DATASET_REGISTRY.register()
class ImageNetA(TestOnlyDataset):
    dataset_dir = "imagenet-adversarial"
    image_dir = "imagenet-a"
    layout = ("imagenet-a/<wnid>/*.jpg   200 folders n01498041/, ... (README.txt is skipped)",
              "classnames.txt   a copy of imagenet/classnames.txt (or keep it at $DATA/imagenet/)")

    def read_data(self, classnames):
        return read_class_folders(self.image_dir, classnames, source=self.classnames_file)
