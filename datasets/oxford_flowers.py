"""Oxford Flowers-102 (Nilsback and Zisserman): 102 flower species."""
from clipadapt.data import CoOpDataset
from clipadapt.engine import DATASET_REGISTRY


@DATASET_REGISTRY.register()
class OxfordFlowers(CoOpDataset):
    dataset_dir = "oxford_flowers"
    image_dir = "jpg"
    split_file = "split_zhou_OxfordFlowers.json"
    layout = ("jpg/image_*.jpg", "imagelabels.mat", "cat_to_name.json", "split_zhou_OxfordFlowers.json")
