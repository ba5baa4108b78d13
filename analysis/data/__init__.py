"""Data for fine-tuning: the data-set registry, its readers, splits and batches.

``load_dataset(name, ...)`` reads a registered data set and splits it (train subset, validation
held out from train, official test split); image folders are decoded once into a memory-mapped
decode cache (:func:`decode_folder`) and train from it with bounded memory (:class:`ImageArray`);
:func:`write_photo_folder` generates a photo-like image folder for benchmarks and tests;
:class:`BatchTransform` resizes, crops, flips and normalises uint8 batches on the training device.
"""

from .arrays import ImageArray, ImageRows, Images, as_rows, take, to_device
from .batches import BatchTransform, EpochSampler, crop_params, iterate
from .decode_cache import CACHE_ENV, DecodedFolder, DecodeSpec, decode_folder, default_cache_dir
from .images import IMAGE_EXTENSIONS, BadImageError, decode_image, decode_pixels
from .photos import PHOTO_SOURCES, PhotoFolder, write_photo_folder
from .readers import DEBIAN_FASHION_MNIST, read_idx  # importing registers the readers
from .registry import DATASETS, RawData, decodes_files, register_dataset
from .resize import DEFAULT_RESIZE, RESIZE_POLICIES, check_resize, fit_image
from .splits import DataSplits, check_reader_options, load_dataset, stratified_indices
from .subsets import classes_label, parse_classes, resolve_classes, select_classes

__all__ = ["BadImageError", "BatchTransform", "CACHE_ENV", "DATASETS", "DEBIAN_FASHION_MNIST",
           "DEFAULT_RESIZE", "DataSplits", "DecodeSpec", "DecodedFolder", "EpochSampler",
           "IMAGE_EXTENSIONS", "ImageArray", "ImageRows", "Images", "PHOTO_SOURCES", "PhotoFolder",
           "RESIZE_POLICIES", "RawData", "as_rows", "check_reader_options", "check_resize", "classes_label",
           "crop_params", "decode_folder", "decode_image", "decode_pixels", "decodes_files",
           "default_cache_dir", "fit_image", "iterate", "load_dataset", "parse_classes",
           "read_idx", "register_dataset", "resolve_classes", "select_classes",
           "stratified_indices", "take", "to_device", "write_photo_folder"]
