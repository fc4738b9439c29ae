"""Datasets on disk, the synthetic demo set, augmentations and tf.data pipelines."""

from typing import TYPE_CHECKING

from pspnet_tf.lazy_exports import lazy_exports

if TYPE_CHECKING:
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

# Loaded on first use, so that importing the package loads no TensorFlow (lazy_exports.py).
__getattr__, __dir__ = lazy_exports(__name__, {
    "DATASETS": "pspnet_tf.data.descriptors",
    "DATASET_NAMES": "pspnet_tf.data.descriptors",
    "DEMO_CLASS_NAMES": "pspnet_tf.data.descriptors",
    "IGNORE_INDEX": "pspnet_tf.data.descriptors",
    "IMAGE_MEAN": "pspnet_tf.data.transforms",
    "IMAGE_STD": "pspnet_tf.data.transforms",
    "Sample": "pspnet_tf.data.layouts",
    "SegmentationDataset": "pspnet_tf.data.datasets",
    "build_eval_dataset": "pspnet_tf.data.pipeline",
    "build_train_dataset": "pspnet_tf.data.pipeline",
    "ensure_demo_dataset": "pspnet_tf.data.demo",
    "generate_demo_dataset": "pspnet_tf.data.demo",
    "get_dataset": "pspnet_tf.data.datasets",
    "keep_ratio_size": "pspnet_tf.data.transforms",
    "steps_per_epoch": "pspnet_tf.data.pipeline",
    "train_sample_order": "pspnet_tf.data.pipeline",
})

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
