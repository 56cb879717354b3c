"""EuroSAT (Helber et al.): 10 land-use classes of 64x64 Sentinel-2 RGB patches."""
from clipadapt.data import CoOpDataset
from clipadapt.engine import DATASET_REGISTRY

# CoOp's class names: the folder names read as land-use phrases.
NEW_CNAMES = {
    "AnnualCrop": "Annual Crop Land",
    "Forest": "Forest",
    "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road",
    "Industrial": "Industrial Buildings",
    "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land",
    "Residential": "Residential Buildings",
    "River": "River",
    "SeaLake": "Sea or Lake",
}


@DATASET_REGISTRY.register()
class EuroSAT(CoOpDataset):
    dataset_dir = "eurosat"
    image_dir = "2750"
    split_file = "split_zhou_EuroSAT.json"
    split_from_folders = True
    new_cnames = NEW_CNAMES
    layout = ("2750/<Class>/*.jpg          10 folders: AnnualCrop/, Forest/, ..., SeaLake/",
              "split_zhou_EuroSAT.json")
