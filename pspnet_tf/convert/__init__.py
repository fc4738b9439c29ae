"""PyTorch checkpoints -> pspnet_tf weights: mmsegmentation PSPNets and ImageNet ResNetV1c.

PyTorch is not needed: .pth files are read by torch_io, a restricted reader of torch.save's
formats built on zipfile, pickle and numpy.
"""

from typing import TYPE_CHECKING

from pspnet_tf.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from pspnet_tf.convert.converter import convert_checkpoint
    from pspnet_tf.convert.download import fetch
    from pspnet_tf.convert.hub import from_pretrained
    from pspnet_tf.convert.mapping import convert_state_dict
    from pspnet_tf.convert.pretrained import apply_pretrained
    from pspnet_tf.convert.registry import list_pretrained
    from pspnet_tf.convert.torch_io import load_checkpoint, read_state_dict

# Loaded on first use, so that importing the package loads no TensorFlow (lazy_exports.py).
__getattr__, __dir__ = lazy_exports(__name__, {
    "apply_pretrained": "pspnet_tf.convert.pretrained",
    "convert_checkpoint": "pspnet_tf.convert.converter",
    "convert_state_dict": "pspnet_tf.convert.mapping",
    "fetch": "pspnet_tf.convert.download",
    "from_pretrained": "pspnet_tf.convert.hub",
    "list_pretrained": "pspnet_tf.convert.registry",
    "load_checkpoint": "pspnet_tf.convert.torch_io",
    "read_state_dict": "pspnet_tf.convert.torch_io",
})

__all__ = ["apply_pretrained", "convert_checkpoint",
           "convert_state_dict", "fetch", "from_pretrained", "list_pretrained",
           "load_checkpoint", "read_state_dict"]
