"""The published checkpoints by name, for the command line and `from_pretrained`: the presets
of the model classes (pspnet_tf.models.presets), all in one list."""

from pspnet_tf.models.presets import ALL_PRESETS, Preset, find_preset


def list_pretrained() -> list[str]:
    """The names `from_pretrained` (PSPNets) and train.py --pretrained (all) accept."""
    return list(ALL_PRESETS)


def is_pretrained_name(source: str) -> bool:
    return source in ALL_PRESETS


def find_checkpoint(name: str) -> Preset:
    """The preset called `name` (UserError listing the names otherwise)."""
    return find_preset(name)
