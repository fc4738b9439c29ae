"""Presets found by name: the published checkpoints downloaded and converted, and preset
folders (local, or on a hub: pspnet_tf.hubs).

The first use of a published PSPNet downloads its checkpoint (progress bar, sha256 prefix
checked, resumable: pspnet_tf.download), converts it without PyTorch (pspnet_tf.torch_io,
torch_weights) and caches the inference model as a preset folder named after the checkpoint
next to the download; later uses load that folder. An ImageNet backbone is converted from
its downloaded checkpoint each time (a second or so).
"""

import os
from typing import Any

import keras

from pspnet_tf.download import default_cache_dir, fetch
from pspnet_tf.errors import UserError
from pspnet_tf.hubs import download_preset, is_hub_handle
from pspnet_tf.models.preset_files import is_preset_dir, load_task, save_preset
from pspnet_tf.models.presets import Preset
from pspnet_tf.models.torch_weights import assign, checkpoint_weights
from pspnet_tf.torch_io import read_state_dict


def fill_from_checkpoint(model: keras.Model, preset: Preset, cache_dir: str | None,
                         source: str) -> keras.Model:
    """`model` with the weights of `preset`'s checkpoint ("mmseg" for a training-heads
    PSPNet, "resnet_v1c" for a backbone), downloaded once into `cache_dir`."""
    path = fetch(preset.resolved_url(), cache_dir)
    assign(model, checkpoint_weights(model, read_state_dict(path), path, source))
    return model


def published_segmenter(preset: Preset, cache_dir: str | None,
                        architecture: keras.Model) -> keras.Model:
    """The inference PSPNet of `preset` (no auxiliary head): from its cached preset folder,
    or `architecture` (the training-heads PSPNet of the checkpoint) filled and cached."""
    cache_dir = cache_dir or default_cache_dir()
    cached = os.path.join(cache_dir, os.path.splitext(preset.file_name)[0])
    if not is_preset_dir(cached):
        filled = fill_from_checkpoint(architecture, preset, cache_dir, "mmseg")
        save_preset(filled.variant(auxiliary_head=False), cached)
    return load_task(cached, type(architecture), load_weights=True)


def preset_folder(preset: str, names: list[str], role: str) -> str:
    """The local folder of a preset that is no published name: `preset` itself, or the
    download of a hub handle. A UserError lists the published `names` otherwise."""
    if is_hub_handle(preset):
        return download_preset(preset)
    if is_preset_dir(preset):
        return preset
    if os.path.isdir(preset):
        raise UserError(f"{preset} holds no config.json: pass a folder written by "
                        "save_to_preset")
    raise UserError(f"{preset!r} is neither a published checkpoint pspnet_tf knows as a {role} "
                    f"({', '.join(names)}), nor a preset folder, nor an hf:// or kaggle:// "
                    "handle")


class PresetMixin:
    """`list_presets`, `from_preset` and `save_to_preset`, shared by the model classes: each
    names its published `presets` and `preset_role`, and builds a model from a published
    record (`_from_preset_record`) and from a preset folder (`_from_preset_folder`)."""

    presets: dict[str, Preset] = {}
    preset_role = ""

    @classmethod
    def list_presets(cls) -> list[str]:
        """The published names `from_preset` accepts (besides folders and hub handles)."""
        return list(cls.presets)

    @classmethod
    def from_preset(cls, preset: str, load_weights: bool = True, cache_dir: str | None = None,
                    **kwargs: Any) -> keras.Model:
        """The model of `preset`: a published name (`list_presets()`), a folder written by
        `save_to_preset`, or a hub handle (`hf://owner/name`,
        `kaggle://owner/model/keras/variant[/version]`; the `[hub]` extra). Its weights are
        loaded unless `load_weights=False` (the architecture only; a published one is then
        not downloaded). A published checkpoint is downloaded once and converted;
        `cache_dir` defaults to $PSPNET_TF_CACHE, else $KERAS_HOME/pspnet_tf or
        ~/.keras/pspnet_tf. `kwargs` are the class's own options (its `_from_preset_record`)."""
        if preset in cls.presets:
            return cls._from_preset_record(cls.presets[preset], load_weights, cache_dir,
                                           **kwargs)
        folder = preset_folder(preset, cls.list_presets(), cls.preset_role)
        return cls._from_preset_folder(folder, load_weights, **kwargs)

    def save_to_preset(self, preset_dir: str) -> None:
        """Writes this model as a preset folder in keras-hub's layout
        (pspnet_tf.models.preset_files), which `from_preset(preset_dir)` loads back;
        `preset_dir` must be new or empty."""
        save_preset(self, preset_dir)

    @classmethod
    def _from_preset_record(cls, preset: Preset, load_weights: bool, cache_dir: str | None,
                            **kwargs: Any) -> keras.Model:
        raise NotImplementedError

    @classmethod
    def _from_preset_folder(cls, folder: str, load_weights: bool, **kwargs: Any
                            ) -> keras.Model:
        raise NotImplementedError
