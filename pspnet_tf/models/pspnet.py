"""The PSPNet model: dilated ResNetV1c + Pyramid Pooling Module (+ auxiliary FCN head)."""

import keras

from pspnet_tf.models.backbone import resnet_v1c
from pspnet_tf.models.heads import fcn_head, psp_head
from pspnet_tf.models.layers import ResizeLike


def build_pspnet(num_classes: int, backbone: str = "resnet50_v1c", output_stride: int = 8,
                 aux_channels: int = 256, dropout: float = 0.1, training_heads: bool = False,
                 psp_channels: int = 512) -> keras.Model:
    """Builds PSPNet for NHWC float32 images normalised as in docs/recipe.md, of any height and
    width.

    With `training_heads=False` the model returns logits at the input resolution. With
    `training_heads=True` it returns `{"logits": ..., "aux_logits": ...}`, both at the input
    resolution, for the 0.4-weighted auxiliary loss. Layers of both variants share names,
    so weights move between them by name (see `pspnet_tf.models.weights`).
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    images = keras.Input(shape=(None, None, 3), name="images")
    _, _, stage3, stage4 = resnet_v1c(images, backbone, output_stride)
    logits = psp_head(stage4, num_classes, channels=psp_channels, dropout=dropout)
    # Logits leave the model in float32 whatever the dtype policy, for a stable loss.
    logits = ResizeLike(name="logits", dtype="float32")([logits, images])
    name = f"pspnet_{backbone}_d{output_stride}"
    if not training_heads:
        return keras.Model(images, logits, name=name)
    aux_logits = fcn_head(stage3, num_classes, channels=aux_channels, dropout=dropout)
    aux_logits = ResizeLike(name="aux_logits", dtype="float32")([aux_logits, images])
    return keras.Model(images, {"logits": logits, "aux_logits": aux_logits}, name=name)
