"""Presets by name: the published checkpoints downloaded, converted and (PSPNets) cached as
.keras. This is the preset loader behind `PSPNetSegmenter.from_preset` and
`ResNetV1cBackbone.from_preset` (installed on import).

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
from pspnet_tf.convert.torch_io import read_state_dict
from pspnet_tf.models import PSPNetSegmenter, ResNetV1cBackbone
from pspnet_tf.models.presets import Preset, set_preset_loader
from pspnet_tf.models.saving import load_model_file, save_model

# The model classes with this loader installed: what `pspnet_tf` exports.
__all__ = ["PSPNetSegmenter", "ResNetV1cBackbone"]


def _fill(model: keras.Model, preset: Preset, cache_dir: str | None, source: str) -> None:
    path = fetch(preset.resolved_url(), cache_dir)
    assign(model, checkpoint_weights(model, read_state_dict(path), path, source))


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
