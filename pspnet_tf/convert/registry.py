"""The published checkpoints by name, for the command line: the presets of both model
classes (pspnet_tf.models.presets), all in one list."""

from pspnet_tf.models.presets import ALL_PRESETS, Preset, find_preset


def is_pretrained_name(source: str) -> bool:
    return source in ALL_PRESETS


def find_checkpoint(name: str) -> Preset:
    """The preset called `name` (UserError listing the names otherwise)."""
    return find_preset(name)
