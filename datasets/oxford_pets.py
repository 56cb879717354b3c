"""Oxford-IIIT Pet (Parkhi et al.): 37 cat and dog breeds."""
from clipadapt.data import CoOpDataset
from clipadapt.engine import DATASET_REGISTRY


@DATASET_REGISTRY.register()
class OxfordPets(CoOpDataset):
    dataset_dir = "oxford_pets"
    image_dir = "images"
    split_file = "split_zhou_OxfordPets.json"
    layout = ("images/*.jpg", "annotations/", "split_zhou_OxfordPets.json")
