"""Presets by name: the published checkpoints downloaded, converted and (PSPNets) cached as
.keras. This is the preset loader behind `PSPNetSegmenter.from_preset` and
`ResNetV1cBackbone.from_preset` (installed on import), and `from_pretrained`.

The first call downloads the checkpoint (progress bar, sha256 prefix checked, resumable),
converts it without PyTorch and caches a PSPNet as `<checkpoint file>.keras` next to the
download; later calls load that file. The segmenter carries its dataset's class names and
palette and its test scale, as train.py's final_model.keras does.
"""

import os

import keras

from pspnet_tf.convert.download import default_cache_dir, fetch
from pspnet_tf.convert.mapping import assign
from pspnet_tf.convert.pretrained import checkpoint_weights
from pspnet_tf.convert.registry import find_checkpoint
from pspnet_tf.convert.torch_io import read_state_dict
from pspnet_tf.errors import UserError
from pspnet_tf.models import PSPNetSegmenter, ResNetV1cBackbone
from pspnet_tf.models.presets import Preset, set_preset_loader
from pspnet_tf.models.saving import load_model_file, save_model


def _fill(model: keras.Model, preset: Preset, cache_dir: str | None, source: str) -> None:
    path = fetch(preset.resolved_url(), cache_dir)
    assign(model, checkpoint_weights(model, read_state_dict(path), path, source))


def from_pretrained(checkpoint: str | Preset, cache_dir: str | None = None) -> PSPNetSegmenter:
    """The inference PSPNet of a published checkpoint (a name from `list_pretrained()`, or a
    Preset of your own): `PSPNetSegmenter.from_preset` for any preset record.

    `cache_dir` defaults to $PSPNET_TF_CACHE, else $KERAS_HOME/pspnet_tf or
    ~/.keras/pspnet_tf. ImageNet backbone names are refused: they fill only the backbone
    of a model that still has to be trained (train.py --pretrained=NAME).
    """
    preset = checkpoint if isinstance(checkpoint, Preset) else find_checkpoint(checkpoint)
    if preset.dataset is None:
        raise UserError(f"{preset.name} is an ImageNet backbone, not a segmentation model; "
                        f"start training from it with train.py --pretrained={preset.name}, "
                        "or pick a pspnet_* name")
    return _load_preset(preset, cache_dir, PSPNetSegmenter.published_architecture(preset))


def _load_preset(preset: Preset, cache_dir: str | None, model: keras.Model) -> keras.Model:
    """Fills a backbone with ImageNet weights; a segmenter (training heads) with its
    checkpoint, cached as its inference variant (.keras), which later calls load."""
    if isinstance(model, ResNetV1cBackbone):
        _fill(model, preset, cache_dir, "resnet_v1c")
        return model
    cache_dir = cache_dir or default_cache_dir()
    cached = os.path.join(cache_dir, os.path.splitext(preset.file_name)[0] + ".keras")
    if os.path.isfile(cached):
        return load_model_file(cached)
    _fill(model, preset, cache_dir, "mmseg")
    inference = model.variant(auxiliary_head=False)
    save_model(inference, cached)
    return inference


set_preset_loader(_load_preset)
