"""pspnet_tf: PSPNet semantic segmentation for TensorFlow 2 / Keras 3."""

from pspnet_tf.models import build_pspnet, load_weights, save_weights

__all__ = ["build_pspnet", "load_weights", "save_weights"]
