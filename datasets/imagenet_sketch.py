"""ImageNet-Sketch (Wang et al.): test only; 1,000 wnid folders labelled by sorted order."""
from clipadapt.data import TestOnlyDataset, read_class_folders
from clipadapt.engine import DATASET_REGISTRY


@DATASET_REGISTRY.register()
class ImageNetSketch(TestOnlyDataset):
    dataset_dir = "imagenet-sketch"
    image_dir = "images"
    layout = ("images/<wnid>/*.JPEG   1,000 folders n01440764/, ...",
              "classnames.txt   a copy of imagenet/classnames.txt (or keep it at $DATA/imagenet/)")

    def read_data(self, classnames):
        return read_class_folders(self.image_dir, classnames, source=self.classnames_file)
