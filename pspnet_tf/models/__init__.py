"""PSPNet as Keras models: `ResNetV1cBackbone`, `PSPNetSegmenter` and `PSPNetPreprocessor`,
with published presets (`from_preset`, `list_presets`)."""

from pspnet_tf.models.backbone import RESNET_SPECS, ResNetV1cBackbone
from pspnet_tf.models.preprocessing import PSPNetPreprocessor
from pspnet_tf.models.presets import Preset
from pspnet_tf.models.pspnet import build_pspnet
from pspnet_tf.models.segmenter import PSPNetSegmenter
from pspnet_tf.models.weights import load_weights, save_weights

BACKBONES = tuple(RESNET_SPECS)


def list_presets() -> dict[str, list[str]]:
    """The preset names of each model class: {"ResNetV1cBackbone": [...],
    "PSPNetSegmenter": [...]}."""
    return {cls.__name__: cls.list_presets() for cls in (ResNetV1cBackbone, PSPNetSegmenter)}


__all__ = ["BACKBONES", "PSPNetPreprocessor", "PSPNetSegmenter", "Preset", "ResNetV1cBackbone",
           "build_pspnet", "list_presets", "load_weights", "save_weights"]
