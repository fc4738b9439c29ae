"""PyTorch checkpoints -> pspnet_tf weights: mmsegmentation PSPNets and ImageNet ResNetV1c.

PyTorch is not needed: .pth files are read by torch_io, a restricted reader of torch.save's
formats built on zipfile, pickle and numpy.
"""

from pspnet_tf.convert.converter import convert_checkpoint
from pspnet_tf.convert.download import fetch
from pspnet_tf.convert.mapping import convert_state_dict
from pspnet_tf.convert.pretrained import apply_pretrained
from pspnet_tf.convert.torch_io import load_checkpoint, read_state_dict

__all__ = ["apply_pretrained", "convert_checkpoint", "convert_state_dict", "fetch",
           "load_checkpoint", "read_state_dict"]
