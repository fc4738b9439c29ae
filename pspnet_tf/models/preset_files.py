"""Preset folders in keras-hub's layout: what `save_to_preset` writes and `from_preset(dir)`
reads.

    config.json         the backbone (keras.saving.serialize_keras_object)
    model.weights.h5    the backbone's weights
    metadata.json       keras and pspnet_tf versions, parameter count, date
    task.json           the segmenter, with its backbone, preprocessor, class names, palette
    task.weights.h5     the segmenter's weights outside the backbone (the heads)
    preprocessor.json   the segmenter's PSPNetPreprocessor

A backbone's folder holds the first three. The files are keras-hub's names and formats, so
keras-hub's uploader takes the folder; keras-hub's `from_preset` methods refuse it, as they
load only subclasses of keras-hub's own `Backbone` and `Task` (docs/python.md). A folder is
written beside its final name and renamed, so it appears complete or not at all.
"""

import datetime
import json
import os
import shutil
import tempfile
from importlib import metadata as package_metadata
from typing import Any

import keras

from pspnet_tf.atomic import temporary_prefix
from pspnet_tf.errors import ParameterError, UserError, environment_faults

CONFIG_FILE = "config.json"
MODEL_WEIGHTS_FILE = "model.weights.h5"
METADATA_FILE = "metadata.json"
TASK_CONFIG_FILE = "task.json"
TASK_WEIGHTS_FILE = "task.weights.h5"
PREPROCESSOR_CONFIG_FILE = "preprocessor.json"


def is_preset_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, CONFIG_FILE))


def _config(model: keras.layers.Layer) -> dict:
    """keras-hub's serialisation: the object's config without compile and build state."""
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: strip(item) for key, item in value.items()
                    if key not in ("compile_config", "build_config")}
        return value
    return strip(keras.saving.serialize_keras_object(model))


def _write_json(path: str, value: dict) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=4)


def _write_files(model: keras.Model, folder: str) -> None:
    backbone = getattr(model, "backbone", None)
    if backbone is not None:
        _write_json(os.path.join(folder, TASK_CONFIG_FILE), _config(model))
        model.save_task_weights(os.path.join(folder, TASK_WEIGHTS_FILE))
        if getattr(model, "preprocessor", None) is not None:
            _write_json(os.path.join(folder, PREPROCESSOR_CONFIG_FILE),
                        _config(model.preprocessor))
    else:
        backbone = model
    _write_json(os.path.join(folder, CONFIG_FILE), _config(backbone))
    backbone.save_weights(os.path.join(folder, MODEL_WEIGHTS_FILE))
    try:
        version = package_metadata.version("pspnet-tf")
    except package_metadata.PackageNotFoundError:
        version = "0+unknown"
    _write_json(os.path.join(folder, METADATA_FILE), {
        "keras_version": keras.version(), "pspnet_tf_version": version,
        "parameter_count": backbone.count_params(),
        "date": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S")})


def save_preset(model: keras.Model, preset_dir: str) -> None:
    """Writes `model` (a backbone, or a segmenter with its backbone) as a preset folder;
    `preset_dir` must not exist or be empty (nothing is overwritten)."""
    if os.path.exists(preset_dir) and (not os.path.isdir(preset_dir) or os.listdir(preset_dir)):
        raise ParameterError("{preset_dir}={path} exists and is not an empty folder; pass a "
                             "new folder (nothing was changed)", path=preset_dir)
    parent = os.path.dirname(os.path.abspath(preset_dir))
    with environment_faults(parent):
        os.makedirs(parent, exist_ok=True)
        temporary = tempfile.mkdtemp(dir=parent, prefix=temporary_prefix(preset_dir))
    try:
        with environment_faults(preset_dir):
            _write_files(model, temporary)
            if os.path.isdir(preset_dir):
                os.rmdir(preset_dir)  # empty, checked above
            os.rename(temporary, preset_dir)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _read_json(preset_dir: str, name: str) -> dict:
    path = os.path.join(preset_dir, name)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError as error:
        raise UserError(f"{preset_dir} holds no {name}: pass a folder written by "
                        "save_to_preset") from error
    except json.JSONDecodeError as error:
        raise UserError(f"{path} is not valid JSON ({error}); download or save the preset "
                        "again") from error


def _checked_class(config: dict, cls: type, path: str) -> type:
    registered = config.get("registered_name") or config.get("class_name")
    found = keras.saving.get_registered_object(registered)
    if found is None or not (isinstance(found, type) and issubclass(found, cls)):
        raise UserError(f"{path} holds a {registered}, not a {cls.__name__}; load it with its "
                        "own class")
    return found


def _load_weights(load: Any, path: str) -> None:
    try:
        load(path)
    except FileNotFoundError as error:
        raise UserError(f"{path} is missing: download or save the preset again") from error
    except (ValueError, OSError) as error:
        raise UserError(f"{path} does not fit the preset's config ({error}); download or "
                        "save the preset again") from error


def load_backbone(preset_dir: str, cls: type, load_weights: bool, **overrides: Any
                  ) -> keras.Model:
    """The backbone of a preset folder (a backbone's or a segmenter's), with its weights
    unless `load_weights=False`; `overrides` replace config entries (e.g. output_stride)."""
    config = _read_json(preset_dir, CONFIG_FILE)
    found = _checked_class(config, cls, os.path.join(preset_dir, CONFIG_FILE))
    backbone = found.from_config({**config["config"], **overrides})
    if load_weights:
        _load_weights(backbone.load_weights, os.path.join(preset_dir, MODEL_WEIGHTS_FILE))
    return backbone


def load_task(preset_dir: str, cls: type, load_weights: bool) -> keras.Model:
    """The segmenter of a preset folder, with its backbone's and heads' weights unless
    `load_weights=False`."""
    if not os.path.isfile(os.path.join(preset_dir, TASK_CONFIG_FILE)):  # a backbone's folder
        _checked_class(_read_json(preset_dir, CONFIG_FILE), cls, preset_dir)
    config = _read_json(preset_dir, TASK_CONFIG_FILE)
    _checked_class(config, cls, os.path.join(preset_dir, TASK_CONFIG_FILE))
    task = keras.saving.deserialize_keras_object(config)
    if load_weights:
        _load_weights(task.backbone.load_weights, os.path.join(preset_dir, MODEL_WEIGHTS_FILE))
        _load_weights(task.load_task_weights, os.path.join(preset_dir, TASK_WEIGHTS_FILE))
    return task
