"""pspnet_tf: PSPNet semantic segmentation for TensorFlow 2 / Keras 3."""

import os

# TensorFlow's C++ INFO/WARNING lines (CUDA probing, tf.data op errors that the entry points
# report in one line) drown the progress output; a value the user set wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pspnet_tf.convert import from_pretrained, list_pretrained  # noqa: E402
from pspnet_tf.models import (  # noqa: E402
    SegmentationModel,
    build_pspnet,
    load_weights,
    save_weights,
)

__all__ = ["SegmentationModel", "build_pspnet", "from_pretrained", "list_pretrained",
           "load_weights", "save_weights"]
