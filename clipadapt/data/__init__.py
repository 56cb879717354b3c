"""Dataset splits, few-shot samples and base/new classes, written once for every dataset.

`datasets/<name>.py` files subclass `CoOpDataset` and only say where their files are.
"""
from .errors import DatasetError, DatasetNotFoundError, datasets_doc, is_writable_dir
from .splits import (CACHE_ENV, SUBSAMPLE_MODES, base_new_labels, draw_fewshot, fewshot_cache_dirs,
                     listdir_nohidden, read_and_split_data, read_split, sample_fewshot, save_split,
                     subsample_classes, write_json_atomic)
from .dataset import (CoOpDataset, TestOnlyDataset, cached_file_list, read_class_folders, read_classnames,
                      resolve_root)

__all__ = [
    "DatasetError", "DatasetNotFoundError", "datasets_doc", "is_writable_dir",
    "CACHE_ENV", "SUBSAMPLE_MODES", "base_new_labels", "draw_fewshot", "fewshot_cache_dirs", "listdir_nohidden",
    "read_and_split_data", "read_split", "sample_fewshot", "save_split", "subsample_classes", "write_json_atomic",
    "CoOpDataset", "TestOnlyDataset", "cached_file_list", "read_class_folders", "read_classnames", "resolve_root",
]
