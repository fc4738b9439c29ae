"""pspnet_tf: PSPNet semantic segmentation for TensorFlow 2 / Keras 3.

Importing the package registers every serialisable class with Keras (so
`keras.saving.load_model` reads pspnet_tf's files after `import pspnet_tf` alone) and
changes nothing else in the process (environment variables, file descriptors, Keras' global
policy). It loads TensorFlow; the commands' quiet start-up happens before, in
pspnet_tf_launch.
"""

from importlib import metadata as _metadata

from pspnet_tf.evaluation.metrics import SegmentationMetrics
from pspnet_tf.hubs import upload_preset
from pspnet_tf.models import (
    PSPNetPreprocessor,
    PSPNetSegmenter,
    ResNetV1cBackbone,
    build_pspnet,
    list_presets,
    load_weights,
    save_weights,
)

try:
    __version__ = _metadata.version("pspnet-tf")  # pyproject.toml is the one source
except _metadata.PackageNotFoundError:  # a source checkout that was never pip-installed
    __version__ = "0+unknown"

__all__ = ["PSPNetPreprocessor", "PSPNetSegmenter", "ResNetV1cBackbone", "SegmentationMetrics",
           "__version__",
           "build_pspnet", "list_presets", "load_weights", "save_weights", "upload_preset"]
