"""PyTorch checkpoints -> pspnet_tf weights: mmsegmentation PSPNets and ImageNet ResNetV1c.

PyTorch is not needed: .pth files are read by torch_io, a restricted reader of torch.save's
formats built on zipfile, pickle and numpy.
"""

from pspnet_tf.convert.converter import convert_checkpoint
from pspnet_tf.convert.pretrained import apply_pretrained

__all__ = ["apply_pretrained", "convert_checkpoint"]
