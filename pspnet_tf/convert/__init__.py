"""PyTorch checkpoints -> pspnet_tf weights: mmsegmentation PSPNets and ImageNet ResNetV1c.

PyTorch is optional (the [convert] extra): it is imported only when a .pth file is
read, so training, evaluation and serving with Keras weights never need it.
"""

from pspnet_tf.convert.converter import convert_checkpoint
from pspnet_tf.convert.download import fetch
from pspnet_tf.convert.mapping import convert_state_dict
from pspnet_tf.convert.pretrained import apply_pretrained
from pspnet_tf.convert.torch_io import read_state_dict

__all__ = ["apply_pretrained", "convert_checkpoint", "convert_state_dict", "fetch",
           "read_state_dict"]
