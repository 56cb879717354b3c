"""Every dataset of the project; importing this package registers them all in DATASET_REGISTRY."""
from . import eurosat, oxford_pets  # noqa: F401
