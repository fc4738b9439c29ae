"""Initialises a model from pretrained weights: converted .h5 files, PyTorch checkpoints, or
a published checkpoint by name (pspnet_tf.models.presets)."""

import h5py
import keras
import numpy as np

from pspnet_tf.compat import legacy_h5_format
from pspnet_tf.download import fetch
from pspnet_tf.errors import ParameterError, UserError
from pspnet_tf.models.presets import ALL_PRESETS
from pspnet_tf.models.torch_weights import (
    assign,
    checkpoint_weights,
    detect_source,
    is_backbone_layer,
    list_names,
)
from pspnet_tf.torch_io import read_state_dict

def _h5_weights(model: keras.Model, path: str) -> dict[str, list[np.ndarray]]:
    """A by-name .h5 file's layers, checked against the model; the backbone must be there."""
    try:
        with h5py.File(path, "r") as handle:
            names = legacy_h5_format.load_attributes_from_hdf5_group(handle, "layer_names")
            stored = {name: legacy_h5_format.load_subset_weights_from_hdf5_group(handle[name])
                      for name in names}
    except (OSError, KeyError) as error:
        raise UserError(f"{path} is not a pspnet_tf weights file ({error}); pass a .h5 "
                        "written by train.py or pspnet-convert, or a .pth") from error
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
    if source in ALL_PRESETS:
        source = ALL_PRESETS[source].resolved_url()
    path = fetch(source, cache_dir)
    if path.endswith(".h5"):
        weights = _h5_weights(model, path)
    else:
        state = read_state_dict(path)
        weights = checkpoint_weights(model, state, path, detect_source(state))
    assign(model, weights)
    return sorted(weights)
