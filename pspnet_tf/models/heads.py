"""PSPNet decode head (Pyramid Pooling Module) and the auxiliary FCN head."""

from collections.abc import Sequence

import keras
import tensorflow as tf

from pspnet_tf.models.backbone import batch_norm, conv_bn_relu
from pspnet_tf.models.layers import (
    AUX_PREFIX,
    AdaptiveAveragePooling2D,
    Conv2D,
    PyramidBottleneckConv,
    SpatialDropout2D,
)

PYRAMID_BINS = (1, 2, 3, 6)
def _classifier(x: tf.Tensor, num_classes: int, dropout: float, prefix: str) -> tf.Tensor:
    """Dropout2d (whole channels) then a 1x1 conv with bias, as mmsegmentation's `cls_seg`."""
    if dropout > 0:
        x = SpatialDropout2D(dropout, name=f"{prefix}dropout")(x)
    return Conv2D(num_classes, 1, name=f"{prefix}conv_seg")(x)


def psp_head(features: tf.Tensor, num_classes: int, channels: int = 512,
             bins: Sequence[int] = PYRAMID_BINS, dropout: float = 0.1) -> tf.Tensor:
    """Pyramid Pooling Module on stage-4 features; returns logits at the feature size."""
    pooled_branches = []
    for index, size in enumerate(bins):
        name = f"psp_modules_{index}"
        pooled = AdaptiveAveragePooling2D(size, name=f"{name}_pool")(features)
        pooled_branches.append(conv_bn_relu(pooled, channels, 1, f"{name}_conv", f"{name}_bn"))
    # The upsample + concat + 3x3 conv of the paper, computed without the upsampled maps.
    x = PyramidBottleneckConv(channels, name="bottleneck_conv")([features, *pooled_branches])
    x = batch_norm("bottleneck_bn")(x)
    x = keras.layers.ReLU(name="bottleneck_bn_relu")(x)
    return _classifier(x, num_classes, dropout, prefix="")


def fcn_head(features: tf.Tensor, num_classes: int, channels: int = 256,
             dropout: float = 0.1) -> tf.Tensor:
    """The auxiliary head on stage-3 features: 3x3 conv, BN, ReLU, classifier."""
    x = conv_bn_relu(features, channels, 3, f"{AUX_PREFIX}convs_0_conv",
                     f"{AUX_PREFIX}convs_0_bn")
    return _classifier(x, num_classes, dropout, prefix=AUX_PREFIX)
