"""Data sets (in-memory tensors), batching and augmentation."""
from . import cifar, digits, idx, text, tinyimagenet  # noqa: F401  (register the loaders)
from .augment import AUGMENTATIONS, make_augment, register_augment
from .base import DATASETS, Dataset, data_root, load_dataset, register_dataset
from .loader import Batches

__all__ = ["AUGMENTATIONS", "DATASETS", "Batches", "Dataset", "data_root", "load_dataset",
           "make_augment", "register_augment", "register_dataset"]
