"""Stanford Cars (Krause et al.): 196 make/model/year classes; split paths start with cars_train/ or cars_test/."""
from clipadapt.data import CoOpDataset
from clipadapt.engine import DATASET_REGISTRY


@DATASET_REGISTRY.register()
class StanfordCars(CoOpDataset):
    dataset_dir = "stanford_cars"
    image_dir = ""  # the split names cars_train/xxxxx.jpg and cars_test/xxxxx.jpg
    split_file = "split_zhou_StanfordCars.json"
    layout = ("cars_train/*.jpg", "cars_test/*.jpg", "cars_test_annos_withlabels.mat", "devkit/",
              "split_zhou_StanfordCars.json")
