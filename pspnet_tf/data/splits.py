"""Opens the split of the dataset an experiment config names: from TFRecord shards, the
demo set (generated on first use) or the dataset's folder; train.py and evaluate.py alike.

The config is only a type hint here: config.py imports data/ (for the dataset names), so a
runtime import of config.py would make data/ depend on the layer above it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pspnet_tf.data.datasets import SegmentationDataset, get_dataset
from pspnet_tf.data.demo import ensure_demo_dataset
from pspnet_tf.data.tfrecord import ShardedDataset
from pspnet_tf.errors import ParameterError

if TYPE_CHECKING:
    from pspnet_tf.config import ExperimentConfig


def load_split(config: ExperimentConfig, split: str) -> SegmentationDataset:
    """Opens one split of the configured dataset and checks its class count."""
    data = config.data
    if data.tfrecord_dir:
        dataset = ShardedDataset(data.tfrecord_dir, split, data.dataset)
    else:
        if data.dataset == "demo":
            ensure_demo_dataset(data.data_root)
        dataset = get_dataset(data.dataset, data.data_root, split)
    if data.reduce_zero_label:
        dataset.reduce_zero_label()
    if dataset.num_classes != config.model.num_classes:
        raise ParameterError("{num_classes}={given} but dataset {name} has {count} classes; "
                             "set {num_classes}={count}", given=config.model.num_classes,
                             name=data.dataset, count=dataset.num_classes)
    return dataset
