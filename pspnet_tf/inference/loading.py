"""The model of evaluate.py, predict.py and export.py: --model (a .keras file or a published
name) or --weights (a .h5 with the flags that built it), and the settings that go with it.

A .keras model written by train.py or `from_pretrained` describes itself (dataset, data
root, class count, class names, palette, test scale); flags given on the command line (or
in a flagfile) still win, e.g. --scale, or --dataset/--data_root to evaluate on other data.
"""

import dataclasses
from typing import Any

import keras
import numpy as np
from absl import flags

from pspnet_tf.config import ExperimentConfig
from pspnet_tf.convert.hub import from_pretrained
from pspnet_tf.convert.registry import is_pretrained_name
from pspnet_tf.data.descriptors import dataset_classes
from pspnet_tf.errors import UserError
from pspnet_tf.models import load_weights
from pspnet_tf.models.factory import build_model
from pspnet_tf.models.saving import load_model_file

# Settings a self-describing model brings; a flag the user passes overrides each.
_DESCRIBED = ("dataset", "data_root", "num_classes", "scale")


def define_model_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines --model and --weights (call once, from an entry point)."""
    flags.DEFINE_string("model", None, "A .keras model written by train.py (run_dir/"
                        "final_model.keras) or model.save, or a published checkpoint name "
                        "from pspnet_tf.list_pretrained() (downloaded and converted once). "
                        "It brings its dataset, classes and --scale; flags given override them.",
                        flag_values=flag_values)
    flags.DEFINE_string("weights", None, "Instead of --model: a weights file (.h5) written by "
                        "train.py or the converter, with the --flagfile that built it.",
                        flag_values=flag_values)


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


def _given(values: Any, name: str) -> bool:
    return values[name].present > 0


def _described(model: keras.Model, config: ExperimentConfig, values: Any) -> LoadedModel:
    """`config` with the model's own settings wherever no flag was given for them."""
    metadata = getattr(model, "metadata", {})
    described = {key: tuple(value) if key == "scale" else value
                 for key, value in metadata.items()
                 if key in _DESCRIBED and not _given(values, key)}
    config = config.replace(**described)
    outputs = model.output_shape[-1]
    if config.model.num_classes != outputs:
        raise UserError(f"--num_classes={config.model.num_classes} but the --model has "
                        f"{outputs} classes; leave --num_classes out or set it to {outputs}")
    own_classes = "class_names" in metadata and config.data.dataset == metadata.get("dataset")
    classes = ((tuple(metadata["class_names"]), np.asarray(metadata["palette"], np.uint8))
               if own_classes else None)
    return LoadedModel(model, config, classes)


def model_from_flags(config: ExperimentConfig, values: Any = None) -> LoadedModel:
    """The inference model that --model or --weights names (exactly one of them)."""
    values = values or flags.FLAGS
    if bool(values.model) == bool(values.weights):
        raise UserError("pass either --model=PATH.keras (or a published name) or "
                        "--weights=PATH.h5 with its --flagfile" +
                        (", not both" if values.model else ""))
    if values.weights:
        model = build_model(config, training_heads=False)
        load_weights(model, values.weights)
        return LoadedModel(model, config)
    source = values.model
    if getattr(values, "precision", None) not in (None, "float32"):
        raise UserError(f"--precision={values.precision} works with --weights and its "
                        "--flagfile; a --model runs in the precision it was saved in")
    model = from_pretrained(source) if is_pretrained_name(source) else load_model_file(source)
    return _described(model, config, values)
