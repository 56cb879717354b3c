"""Caltech101 (Fei-Fei et al.): 100 object classes (CoOp drops the background and easy-faces folders)."""
from clipadapt.data import CoOpDataset
from clipadapt.engine import DATASET_REGISTRY


@DATASET_REGISTRY.register()
class Caltech101(CoOpDataset):
    dataset_dir = "caltech-101"
    image_dir = "101_ObjectCategories"
    split_file = "split_zhou_Caltech101.json"
    split_from_folders = True
    ignored = ("BACKGROUND_Google", "Faces_easy")
    new_cnames = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}
    layout = ("101_ObjectCategories/<class>/image_*.jpg   102 folders (BACKGROUND_Google, Faces_easy unused)",
              "split_zhou_Caltech101.json")
