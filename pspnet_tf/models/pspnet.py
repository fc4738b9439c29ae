"""`build_pspnet`: a `PSPNetSegmenter` from the flat settings of `ModelConfig` (config.py)."""

from typing import Any

from pspnet_tf.models.backbone import ResNetV1cBackbone, backbone_depth
from pspnet_tf.models.segmenter import PSPNetSegmenter


def build_pspnet(num_classes: int, backbone: str = "resnet50_v1c", output_stride: int = 8,
                 aux_channels: int = 256, dropout: float = 0.1, training_heads: bool = False,
                 psp_channels: int = 512, **options: Any) -> PSPNetSegmenter:
    """PSPNet with a `backbone` named as in RESNET_SPECS ("resnet50_v1c").

    `training_heads` adds the auxiliary head (`PSPNetSegmenter(auxiliary_head=True)`);
    `options` are the segmenter's other arguments (class names, scale, training choices).
    """
    return PSPNetSegmenter(ResNetV1cBackbone(backbone_depth(backbone), output_stride),
                           num_classes, psp_channels=psp_channels, aux_channels=aux_channels,
                           dropout=dropout, auxiliary_head=training_heads, **options)
