"""Data for fine-tuning: the data-set registry, its readers, splits and in-memory batches.

``load_dataset(name, ...)`` reads a registered data set and splits it (train subset, validation
held out from train, official test split); :class:`BatchTransform` resizes, crops, flips and
normalises uint8 batches on the training device.
"""

from .batches import BatchTransform, EpochSampler, crop_params, iterate
from .images import IMAGE_EXTENSIONS, BadImageError, decode_image
from .readers import DEBIAN_FASHION_MNIST, read_idx  # importing registers the readers
from .registry import DATASETS, RawData, register_dataset
from .splits import DataSplits, check_reader_options, load_dataset, stratified_indices
from .subsets import classes_label, parse_classes, resolve_classes, select_classes

__all__ = ["DATASETS", "DEBIAN_FASHION_MNIST", "IMAGE_EXTENSIONS", "BadImageError",
           "BatchTransform", "DataSplits", "EpochSampler", "RawData", "check_reader_options",
           "classes_label", "crop_params", "decode_image", "iterate", "load_dataset",
           "parse_classes", "read_idx", "register_dataset", "resolve_classes", "select_classes",
           "stratified_indices"]
