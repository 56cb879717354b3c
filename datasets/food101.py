"""Food-101 (Bossard et al.): 101 dishes."""
from clipadapt.data import CoOpDataset
from clipadapt.engine import DATASET_REGISTRY


@DATASET_REGISTRY.register()
class Food101(CoOpDataset):
    dataset_dir = "food-101"
    image_dir = "images"
    split_file = "split_zhou_Food101.json"
    split_from_folders = True
    layout = ("images/<dish>/*.jpg   101 folders: apple_pie/, baby_back_ribs/, ...",
              "meta/", "split_zhou_Food101.json")
