"""Weight files keyed by layer name, so the training and inference variants share them.

Keras 3's `.weights.h5` format is keyed by layer position, which differs between a model
with and without the auxiliary head. These files use Keras' legacy by-name HDF5 layout,
so plain Keras can read them too: `model.load_weights(path, by_name=True)`.
"""

import os

import h5py
import keras

from pspnet_tf.atomic import write_atomically
from pspnet_tf.compat import legacy_h5_format
from pspnet_tf.errors import ParameterError, UserError
from pspnet_tf.models.layers import is_auxiliary_layer


def save_weights(model: keras.Model, path: str) -> None:
    """Writes the model's weights by layer name; the file appears complete or not at all."""
    if not path.endswith(".h5") or path.endswith(".weights.h5"):
        raise UserError(f"weights path {path} must end in .h5 (not .weights.h5): "
                        "the by-name layout is stored in legacy HDF5 files")
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot write the weights file {path} ({error.strerror or error}); "
                        "pass a path in a folder that can be written") from None

    def write(temporary: str) -> None:
        with h5py.File(temporary, "w") as handle:
            legacy_h5_format.save_weights_to_hdf5_group(handle, model)

    write_atomically(path, write, suffix=".h5")


def _layer_names_in(path: str) -> set[str]:
    with h5py.File(path, "r") as handle:
        return {name.decode() if isinstance(name, bytes) else name
                for name in handle.attrs["layer_names"]}


def load_weights(model: keras.Model, path: str) -> None:
    """Loads a by-name weights file, failing on any layer of the model it does not cover.

    Only the auxiliary head may be absent from the file (inference weights loaded into a
    training model); layers in the file but not in the model (an auxiliary head loaded
    into an inference model) are ignored.
    """
    if not os.path.isfile(path):
        raise UserError(f"weights file {path} does not exist")
    try:
        stored = _layer_names_in(path)
    except (OSError, KeyError) as error:
        raise UserError(f"{path} is not a pspnet_tf weights file ({error}); "
                        "pass a .h5 file written by train.py or pspnet_tf.convert") from error
    missing = [layer.name for layer in model.layers
               if layer.weights and layer.name not in stored
               and not is_auxiliary_layer(layer.name)]
    if missing:
        raise ParameterError("{path} has no weights for {count} layers of the model (e.g. "
                             "{examples}); was it trained with another {backbone} or "
                             "{output_stride}?", path=path, count=len(missing),
                             examples=", ".join(missing[:5]))
    try:
        model.load_weights(path, by_name=True)
    except ValueError as error:
        raise ParameterError("{path} does not fit the model: {error}. Check {num_classes}, "
                             "{backbone} and {output_stride} against the training config",
                             path=path, error=error) from error
