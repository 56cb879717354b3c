"""Every dataset of the project; importing this package registers them all in DATASET_REGISTRY.

Each file only says where its files are; reading, few-shot sampling and base/new subsampling
live once in `clipadapt.data` (see `CoOpDataset`).
"""
from . import (caltech101, dtd, eurosat, fgvc_aircraft, food101, gzsl_benchmarks, imagenet, imagenet_a,  # noqa: F401
               imagenet_r, imagenet_sketch, imagenetv2, oxford_flowers, oxford_pets, shapes, stanford_cars, sun397,
               ucf101)
