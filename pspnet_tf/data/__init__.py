"""Datasets on disk, the synthetic demo set, augmentations and tf.data pipelines."""

from pspnet_tf.data.datasets import SegmentationDataset, get_dataset
from pspnet_tf.data.demo import ensure_demo_dataset, generate_demo_dataset
from pspnet_tf.data.descriptors import DATASET_NAMES, DATASETS, DEMO_CLASS_NAMES, IGNORE_INDEX
from pspnet_tf.data.layouts import Sample
from pspnet_tf.data.pipeline import (
    build_eval_dataset,
    build_train_dataset,
    steps_per_epoch,
    train_sample_order,
)
from pspnet_tf.data.transforms import IMAGE_MEAN, IMAGE_STD, keep_ratio_size

__all__ = [
    "DATASETS",
    "DATASET_NAMES",
    "DEMO_CLASS_NAMES",
    "IGNORE_INDEX",
    "IMAGE_MEAN",
    "IMAGE_STD",
    "Sample",
    "SegmentationDataset",
    "build_eval_dataset",
    "build_train_dataset",
    "ensure_demo_dataset",
    "generate_demo_dataset",
    "get_dataset",
    "keep_ratio_size",
    "steps_per_epoch",
    "train_sample_order",
]
