"""Describable Textures (Cimpoi et al.): 47 texture classes."""
from clipadapt.data import CoOpDataset
from clipadapt.engine import DATASET_REGISTRY


@DATASET_REGISTRY.register()
class DescribableTextures(CoOpDataset):
    dataset_dir = "dtd"
    image_dir = "images"
    split_file = "split_zhou_DescribableTextures.json"
    split_from_folders = True
    layout = ("images/<texture>/*.jpg   47 folders: banded/, blotchy/, ...",
              "imdb/", "labels/", "split_zhou_DescribableTextures.json")
