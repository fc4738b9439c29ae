"""The model of evaluate.py, predict.py and export.py: a .keras file or a preset (`model`: a
published name, a preset folder, an hf:// or kaggle:// handle), or a .h5 weights file with the config that built it (`weights`), and the settings
that go with it.

A .keras model written by train.py or `PSPNetSegmenter.from_preset` describes itself (dataset, data
root, class count, class names, palette, test scale); settings the caller names as
`overridden` (the command line: flags given on it or in a flagfile) still win, e.g. --scale,
or --dataset/--data_root to evaluate on other data.
"""

import dataclasses
from collections.abc import Collection

import keras
import numpy as np

from pspnet_tf.config import ExperimentConfig
from pspnet_tf.data.descriptors import dataset_classes
from pspnet_tf.errors import ParameterError
from pspnet_tf.inference.precision import with_precision
from pspnet_tf.hubs import is_hub_handle
from pspnet_tf.models import PSPNetSegmenter, load_weights
from pspnet_tf.models.factory import build_model
from pspnet_tf.models.preset_files import is_preset_dir
from pspnet_tf.models.saving import load_model_file

# Settings a self-describing model brings; naming one in `overridden` keeps the config's.
_DESCRIBED = ("dataset", "data_root", "num_classes", "scale")


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """An inference PSPNet and the config it runs with (dataset, num_classes, scale)."""

    model: keras.Model
    config: ExperimentConfig
    described_classes: tuple[tuple[str, ...], np.ndarray] | None = None

    def classes(self) -> tuple[tuple[str, ...], np.ndarray]:
        """Class names and palette: the model's own, else those of the config's dataset."""
        if self.described_classes is not None:
            return self.described_classes
        config = self.config
        return dataset_classes(config.data.dataset, config.data.data_root,
                               config.model.num_classes)


def _described(model: keras.Model, config: ExperimentConfig,
               overridden: Collection[str]) -> LoadedModel:
    """`config` with the model's own settings wherever `overridden` does not name them."""
    described = {key: getattr(model, key) for key in _DESCRIBED
                 if getattr(model, key) is not None and key not in overridden}
    config = config.replace(**described)
    outputs = model.output_shape[-1]
    if config.model.num_classes != outputs:
        raise ParameterError("{num_classes}={given} but the {model} has {outputs} classes; "
                             "leave {num_classes} out or set it to {outputs}",
                             given=config.model.num_classes, outputs=outputs)
    own_classes = (model.class_names is not None and model.palette is not None
                   and config.data.dataset == model.dataset)
    classes = ((tuple(model.class_names), np.asarray(model.palette, np.uint8))
               if own_classes else None)
    return LoadedModel(model, config, classes)


def load_inference_model(config: ExperimentConfig, *, model: str | None = None,
                         weights: str | None = None, precision: str | None = None,
                         overridden: Collection[str] = frozenset()) -> LoadedModel:
    """The inference PSPNet of exactly one of `model` (a .keras file or a preset, with its own
    settings, except those named in `overridden`) and `weights` (a .h5 file,
    built from `config`). `precision` ("float32" or "bfloat16", see inference/precision.py)
    applies to `weights`; a `model` runs in the precision it was saved in."""
    if bool(model) == bool(weights):
        raise ParameterError("pass either {model}=PATH.keras (or a preset) or "
                             "{weights}=PATH.h5 with its {config}"
                             + (", not both" if model else ""))
    config = with_precision(config, precision)
    if weights:
        network = build_model(config, training_heads=False)
        load_weights(network, weights)
        return LoadedModel(network, config)
    if precision not in (None, "float32"):
        raise ParameterError("{precision}={value} works with {weights} and its {config}; a "
                             "{model} runs in the precision it was saved in", value=precision)
    is_preset = (model in PSPNetSegmenter.presets or is_hub_handle(model)
                 or is_preset_dir(model))
    network = PSPNetSegmenter.from_preset(model) if is_preset else load_model_file(model)
    return _described(network, config, overridden)
