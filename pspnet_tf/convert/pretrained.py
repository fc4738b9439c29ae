"""Initialises a model from pretrained weights: converted .h5 files, PyTorch checkpoints, or
a published checkpoint by name (pspnet_tf.convert.registry)."""

import h5py
import keras
import numpy as np

from pspnet_tf.compat import legacy_h5_format
from pspnet_tf.convert.download import fetch
from pspnet_tf.convert.mapping import (
    BACKBONE_PREFIX,
    assign,
    convert_state_dict,
    imagenet_to_backbone_keys,
    is_backbone_layer,
    list_names,
)
from pspnet_tf.convert.registry import find_checkpoint, is_pretrained_name
from pspnet_tf.convert.torch_io import read_state_dict
from pspnet_tf.errors import ParameterError, UserError
from pspnet_tf.models.heads import is_auxiliary_layer

SOURCES = ("mmseg", "resnet_v1c")
AUX_HEAD_PREFIX = "auxiliary_head."


def detect_source(state: dict[str, np.ndarray]) -> str:
    """"mmseg" for a full PSPNet (keys under backbone.), else "resnet_v1c" (ImageNet)."""
    return "mmseg" if any(key.startswith(BACKBONE_PREFIX) for key in state) else "resnet_v1c"


def checkpoint_weights(model: keras.Model, state: dict[str, np.ndarray], path: str,
                       source: str, allow_missing_classifier: bool = False
                       ) -> dict[str, list[np.ndarray]]:
    """Converts a state dict of the given source for `model` (a training-heads PSPNet).

    mmseg checkpoints fill the whole model (the auxiliary head only when the checkpoint
    has one); ImageNet ResNetV1c checkpoints fill exactly the backbone.
    """
    detected = detect_source(state)
    if detected != source:
        raise ParameterError("{path} looks like a {detected} checkpoint, not {given}; pass "
                             "{source}={detected}", path=path, detected=detected, given=source)
    layers = [layer for layer in model.layers if layer.weights]
    if source == "mmseg":
        if not any(key.startswith(AUX_HEAD_PREFIX) for key in state):
            layers = [layer for layer in layers if not is_auxiliary_layer(layer.name)]
    else:
        state = imagenet_to_backbone_keys(state)
        layers = [layer for layer in layers if is_backbone_layer(layer.name)]
    return convert_state_dict(state, layers, path, allow_missing_classifier)


def _h5_weights(model: keras.Model, path: str) -> dict[str, list[np.ndarray]]:
    """A by-name .h5 file's layers, checked against the model; the backbone must be there."""
    try:
        with h5py.File(path, "r") as handle:
            names = legacy_h5_format.load_attributes_from_hdf5_group(handle, "layer_names")
            stored = {name: legacy_h5_format.load_subset_weights_from_hdf5_group(handle[name])
                      for name in names}
    except (OSError, KeyError) as error:
        raise UserError(f"{path} is not a pspnet_tf weights file ({error}); pass a .h5 "
                        "written by train.py or python -m pspnet_tf.convert, or a .pth") from error
    stored = {name: values for name, values in stored.items() if values}
    present = {layer.name: layer for layer in model.layers if layer.weights}
    unexpected = sorted(name for name in stored if name not in present)
    misshaped = sorted(name for name, values in stored.items() if name in present and
                       [v.shape for v in values] != [tuple(w.shape)
                                                     for w in present[name].weights])
    missing = sorted(name for name in present if is_backbone_layer(name) and name not in stored)
    if unexpected or misshaped or missing:
        found = [list_names(kind, names) for kind, names in
                 (("missing backbone layers", missing), ("unexpected layers", unexpected),
                  ("mis-shaped layers", misshaped)) if names]
        raise ParameterError("{path} does not fit the model: {found}. Check {backbone}, "
                             "{num_classes}, {psp_channels} and {aux_channels}", path=path,
                             found="; ".join(found))
    return stored


def apply_pretrained(model: keras.Model, source: str, cache_dir: str | None = None) -> list[str]:
    """Loads `source` into `model`: a path or URL of a .h5, or of a .pth converted on the fly,
    or the name of a published checkpoint (`pspnet_tf.list_presets()`), downloaded once.

    Layers the file does not cover (the heads, for backbone weights) keep their random
    initialisation. Returns the names of the layers that were loaded.
    """
    if is_pretrained_name(source):
        source = find_checkpoint(source).resolved_url()
    path = fetch(source, cache_dir)
    if path.endswith(".h5"):
        weights = _h5_weights(model, path)
    else:
        state = read_state_dict(path)
        weights = checkpoint_weights(model, state, path, detect_source(state))
    assign(model, weights)
    return sorted(weights)
