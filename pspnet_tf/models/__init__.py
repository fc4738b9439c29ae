"""PSPNet model building blocks."""

from pspnet_tf.models.backbone import RESNET_SPECS
from pspnet_tf.models.pspnet import build_pspnet
from pspnet_tf.models.segmentation_model import SegmentationModel
from pspnet_tf.models.weights import load_weights, save_weights

BACKBONES = tuple(RESNET_SPECS)

__all__ = ["BACKBONES", "SegmentationModel", "build_pspnet", "load_weights", "save_weights"]
