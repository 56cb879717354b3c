"""UCF101 (Soomro et al.): 101 actions, one middle frame per video (CoOp's UCF-101-midframes)."""
from clipadapt.data import CoOpDataset
from clipadapt.engine import DATASET_REGISTRY


@DATASET_REGISTRY.register()
class UCF101(CoOpDataset):
    dataset_dir = "ucf101"
    image_dir = "UCF-101-midframes"
    split_file = "split_zhou_UCF101.json"
    layout = ("UCF-101-midframes/<Action_Name>/v_*.jpg   101 folders: Apply_Eye_Makeup/, ...",
              "split_zhou_UCF101.json")
