"""Self-describing .keras models: the metadata inference needs, written and read back.

train.py writes run_dir/final_model.keras and `from_pretrained` caches converted checkpoints
in this form, so evaluate.py, predict.py and export.py need only `--model=PATH.keras`.
"""

import os
import zipfile
from collections.abc import Sequence

import keras
import numpy as np

from pspnet_tf.config import ExperimentConfig
from pspnet_tf.data.datasets import SegmentationDataset
from pspnet_tf.errors import UserError
from pspnet_tf.models.segmentation_model import save_model, segmentation_model


def model_metadata(dataset: str, data_root: str, class_names: Sequence[str],
                   palette: np.ndarray, scale: tuple[int, int]) -> dict:
    """The metadata of a SegmentationModel: JSON values only (they go into config.json).

    `data_root` is where the model's dataset was (or conventionally is) found, so that
    evaluate.py finds the validation split without flags on the machine it trained on.
    """
    return {"dataset": dataset, "data_root": data_root, "num_classes": len(class_names),
            "class_names": list(class_names), "palette": np.asarray(palette).tolist(),
            "scale": list(scale)}


def save_final_model(model: keras.Model, config: ExperimentConfig,
                     dataset: SegmentationDataset, path: str) -> None:
    """Writes the inference variant of a trained `model` with its run's dataset and scale.

    The class names and palette come from the opened `dataset` (also TFRecord shards,
    whose data root may hold no class file).
    """
    metadata = model_metadata(config.data.dataset, config.data.data_root, dataset.class_names,
                              dataset.palette, config.data.scale)
    save_model(segmentation_model(model, metadata), path)


def load_model_file(path: str) -> keras.Model:
    """`keras.saving.load_model(path)` with one UserError for a missing or foreign file."""
    if not os.path.isfile(path):
        raise UserError(f"model file {path} does not exist; check --model (a .keras file, or "
                        "a name from pspnet_tf.list_pretrained())")
    try:
        return keras.saving.load_model(path)
    except (ValueError, TypeError, OSError, KeyError, zipfile.BadZipFile) as error:
        raise UserError(f"{path} is not a Keras model file that pspnet_tf can load ({error}); "
                        "pass a .keras file written by train.py or model.save") from error
