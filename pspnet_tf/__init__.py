"""pspnet_tf: PSPNet semantic segmentation for TensorFlow 2 / Keras 3.

Importing the package changes nothing in the process (environment variables, file
descriptors, Keras' global policy) and loads TensorFlow only when one of the names below is
first used; the commands' quiet start-up is pspnet_tf/cli's.
"""

from importlib import metadata as _metadata
from typing import TYPE_CHECKING

from pspnet_tf.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from pspnet_tf.models import (PSPNetPreprocessor, PSPNetSegmenter, ResNetV1cBackbone,
                                  build_pspnet, list_presets, load_weights, save_weights)

# The two model classes come through pspnet_tf.convert.hub, which installs the preset loader
# (download and conversion, a layer above the models) that their `from_preset` calls.
__getattr__, __dir__ = lazy_exports(__name__, {
    "PSPNetPreprocessor": "pspnet_tf.models",
    "PSPNetSegmenter": "pspnet_tf.convert.hub",
    "ResNetV1cBackbone": "pspnet_tf.convert.hub",
    "list_presets": "pspnet_tf.models",
    "build_pspnet": "pspnet_tf.models",
    "load_weights": "pspnet_tf.models",
    "save_weights": "pspnet_tf.models",
})

try:
    __version__ = _metadata.version("pspnet-tf")  # pyproject.toml is the one source
except _metadata.PackageNotFoundError:  # a source checkout that was never pip-installed
    __version__ = "0+unknown"

__all__ = ["PSPNetPreprocessor", "PSPNetSegmenter", "ResNetV1cBackbone", "__version__",
           "build_pspnet", "list_presets", "load_weights",
           "save_weights"]
