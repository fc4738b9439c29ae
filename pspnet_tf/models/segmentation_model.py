"""A PSPNet that carries what inference needs (class names, palette, test scale, dataset).

The metadata lives in the model's own `get_config`, so `model.save("m.keras")` writes it into
the .keras file's config.json and `keras.saving.load_model` (after `import pspnet_tf`) gives
it back, also after a load/save cycle by code that knows nothing of it. The alternatives
round-trip less cleanly: an extra entry in the .keras zip is dropped by the next
`model.save`, and a metadata layer would sit in the graph of every exported model.
`SegmentationModel` is a plain functional model otherwise (same layers, weights and
outputs), so `fold_batchnorm` and the SavedModel export treat it like any PSPNet.
"""

import os
import zipfile
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from pspnet_tf.atomic import write_atomically
from pspnet_tf.errors import UserError
from pspnet_tf.models.layers import PACKAGE


@keras.saving.register_keras_serializable(package=PACKAGE)
class SegmentationModel(keras.Model):
    """A functional segmentation model with a JSON-serialisable `metadata` dict.

    Built like `keras.Model(inputs, outputs)`; `metadata` holds plain JSON values (see
    `model_metadata` for the keys pspnet_tf writes).
    """

    # *args/**kwargs keep Keras treating this as a functional model (full graph config).
    def __init__(self, *args: Any, metadata: dict | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.metadata = dict(metadata or {})

    def get_config(self) -> dict:
        return {**super().get_config(), "metadata": self.metadata}

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None) -> "SegmentationModel":
        config = dict(config)
        metadata = config.pop("metadata", {})
        model = super().from_config(config, custom_objects=custom_objects)
        model.metadata = metadata
        return model


def model_metadata(dataset: str, data_root: str, class_names: Sequence[str],
                   palette: np.ndarray, scale: tuple[int, int]) -> dict:
    """The metadata of a SegmentationModel: JSON values only (they go into config.json).

    `data_root` is where the model's dataset was (or conventionally is) found, so that
    evaluate.py finds the validation split without flags on the machine it trained on.
    """
    return {"dataset": dataset, "data_root": data_root, "num_classes": len(class_names),
            "class_names": list(class_names), "palette": np.asarray(palette).tolist(),
            "scale": list(scale)}


def segmentation_model(model: keras.Model, metadata: dict) -> SegmentationModel:
    """The inference variant of a (training- or inference-heads) PSPNet, with `metadata`.

    It shares `model`'s layers, so it holds exactly the weights `model` has now, without a copy.
    """
    return SegmentationModel(model.input, model.get_layer("logits").output,
                             metadata=metadata, name=model.name)


def save_model(model: keras.Model, path: str) -> None:
    """`model.save(path)` for a .keras path; the file appears complete or not at all."""
    if not path.endswith(".keras"):
        raise UserError(f"model path {path} must end in .keras")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_atomically(path, model.save, suffix=".keras")


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
