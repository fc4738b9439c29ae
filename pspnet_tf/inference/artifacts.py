"""train.py's run_dir/final_model.keras: the trained network as a self-describing model
(`pspnet_tf.models.segmentation_model`) with its run's dataset, classes and test scale, so
that evaluate.py, predict.py and export.py need only `--model=PATH.keras`.
"""

import keras

from pspnet_tf.config import ExperimentConfig
from pspnet_tf.data.datasets import SegmentationDataset
from pspnet_tf.models.segmentation_model import model_metadata, save_model, segmentation_model


def save_final_model(model: keras.Model, config: ExperimentConfig,
                     dataset: SegmentationDataset, path: str) -> None:
    """Writes the inference variant of a trained `model` with its run's dataset and scale.

    The class names and palette come from the opened `dataset` (also TFRecord shards,
    whose data root may hold no class file).
    """
    metadata = model_metadata(config.data.dataset, config.data.data_root, dataset.class_names,
                              dataset.palette, config.data.scale)
    save_model(segmentation_model(model, metadata), path)

