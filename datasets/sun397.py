"""SUN397 (Xiao et al.): 397 scene categories."""
from clipadapt.data import CoOpDataset
from clipadapt.engine import DATASET_REGISTRY


@DATASET_REGISTRY.register()
class SUN397(CoOpDataset):
    dataset_dir = "sun397"
    image_dir = "SUN397"
    split_file = "split_zhou_SUN397.json"
    layout = ("SUN397/<letter>/<scene>/.../*.jpg", "ClassName.txt, Training_01.txt, Testing_01.txt, ...",
              "split_zhou_SUN397.json")
