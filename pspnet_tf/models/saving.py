"""Writing and reading `.keras` model files, atomically and with one-line errors.

A `PSPNetSegmenter` carries what inference needs (class names, palette, test scale,
dataset, preprocessor) in its own config, so `model.save("m.keras")` writes it into the
file's config.json and `keras.saving.load_model` gives it back.
"""

import os
import zipfile

import keras

from pspnet_tf.atomic import write_atomically
from pspnet_tf.errors import UserError


def save_model(model: keras.Model, path: str) -> None:
    """`model.save(path)` for a .keras path; the file appears complete or not at all."""
    if not path.endswith(".keras"):
        raise UserError(f"model path {path} must end in .keras")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_atomically(path, model.save, suffix=".keras")


def load_model_file(path: str) -> keras.Model:
    """`keras.saving.load_model(path)` with one UserError for a missing or foreign file."""
    if not os.path.isfile(path):
        raise UserError(f"model file {path} does not exist; pass a .keras file, or a name "
                        "from pspnet_tf.list_presets()")
    try:
        model = keras.saving.load_model(path)
    except (ValueError, TypeError, OSError, KeyError, zipfile.BadZipFile) as error:
        raise UserError(f"{path} is not a Keras model file that pspnet_tf can load ({error}); "
                        "pass a .keras file written by train.py or model.save") from error
    return model
