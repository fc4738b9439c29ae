"""Dilated ResNetV1c (deep stem, stride on the 3x3 conv) as in mmsegmentation.

Layer names follow the mmsegmentation state-dict keys with "." replaced by "_"
(`stem_0`, `layer1_0_conv1`, `layer1_0_downsample_1`, ...) so that checkpoints map by name.
"""

import contextlib
import dataclasses
from collections.abc import Iterator

import keras
import tensorflow as tf

from pspnet_tf.models.layers import PACKAGE, Conv2D, FusedBatchNormalization
from pspnet_tf.models.preset_files import load_backbone
from pspnet_tf.models.preset_loading import PresetMixin, fill_from_checkpoint
from pspnet_tf.models.presets import BACKBONE_PRESETS, Preset

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9  # PyTorch momentum 0.1


@dataclasses.dataclass(frozen=True)
class ResNetSpec:
    """Block type and number of blocks per stage of one ResNet depth."""

    bottleneck: bool
    blocks: tuple[int, int, int, int]

    @property
    def expansion(self) -> int:
        return 4 if self.bottleneck else 1


RESNET_SPECS = {
    "resnet18_v1c": ResNetSpec(bottleneck=False, blocks=(2, 2, 2, 2)),
    "resnet50_v1c": ResNetSpec(bottleneck=True, blocks=(3, 4, 6, 3)),
    "resnet101_v1c": ResNetSpec(bottleneck=True, blocks=(3, 4, 23, 3)),
}

STAGE_LAYOUT = {  # output stride -> (strides, dilations) of the four stages
    8: ((1, 2, 1, 1), (1, 1, 2, 4)),
    16: ((1, 2, 2, 1), (1, 1, 1, 2)),
}

STAGE_PLANES = (64, 128, 256, 512)


@contextlib.contextmanager
def dtype_policy(dtype: str | keras.DTypePolicy | None) -> Iterator[None]:
    """Layers built inside take the policy `dtype` (None: the global policy, unchanged);
    Keras' Functional models keep no `dtype` argument, so the models build their layers
    under it. The global policy is restored on exit."""
    if dtype is None:
        yield
        return
    policy = keras.dtype_policies.get(dtype)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def batch_norm(name: str) -> FusedBatchNormalization:
    """BatchNorm with PyTorch's defaults, synchronised across replicas when distributed."""
    return FusedBatchNormalization(
        epsilon=BN_EPSILON, momentum=BN_MOMENTUM, synchronized=True, name=name
    )


def conv(x: tf.Tensor, filters: int, kernel: int, name: str, stride: int = 1, dilation: int = 1,
         use_bias: bool = False) -> tf.Tensor:
    """A convolution padded symmetrically like PyTorch's `padding=dilation * (kernel // 2)`.

    Keras "same" pads only bottom/right for strided convs on even sizes, so strided convs
    get explicit zero padding and "valid".
    """
    padding = "same"
    if stride > 1 and kernel > 1:
        x = keras.layers.ZeroPadding2D(dilation * (kernel // 2), name=f"{name}_pad")(x)
        padding = "valid"
    return Conv2D(
        filters, kernel, strides=stride, dilation_rate=dilation, padding=padding,
        use_bias=use_bias, name=name,
    )(x)


def conv_bn_relu(x: tf.Tensor, filters: int, kernel: int, conv_name: str, bn_name: str,
                 stride: int = 1, dilation: int = 1) -> tf.Tensor:
    x = conv(x, filters, kernel, conv_name, stride=stride, dilation=dilation)
    x = batch_norm(bn_name)(x)
    return keras.layers.ReLU(name=f"{bn_name}_relu")(x)


def _residual_block(x: tf.Tensor, spec: ResNetSpec, planes: int, stride: int, dilation: int,
                    name: str) -> tf.Tensor:
    out_channels = planes * spec.expansion
    shortcut = x
    if stride != 1 or x.shape[-1] != out_channels:
        shortcut = conv(x, out_channels, 1, f"{name}_downsample_0", stride=stride)
        shortcut = batch_norm(f"{name}_downsample_1")(shortcut)
    if spec.bottleneck:
        y = conv_bn_relu(x, planes, 1, f"{name}_conv1", f"{name}_bn1")
        y = conv_bn_relu(y, planes, 3, f"{name}_conv2", f"{name}_bn2", stride, dilation)
        y = conv(y, out_channels, 1, f"{name}_conv3")
        y = batch_norm(f"{name}_bn3")(y)
    else:
        # mmsegmentation's BasicBlock dilates only its first 3x3 conv.
        y = conv_bn_relu(x, planes, 3, f"{name}_conv1", f"{name}_bn1", stride, dilation)
        y = conv(y, out_channels, 3, f"{name}_conv2")
        y = batch_norm(f"{name}_bn2")(y)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_relu")(y)


STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")


def resnet_v1c(inputs: tf.Tensor, backbone: str, output_stride: int) -> dict[str, tf.Tensor]:
    """Builds the backbone on `inputs`; returns the outputs of the stem and the four stages
    by name (STAGES).

    Dilated stages use contract_dilation: their first block has half the dilation.
    """
    if backbone not in RESNET_SPECS:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {sorted(RESNET_SPECS)}")
    if output_stride not in STAGE_LAYOUT:
        raise ValueError(
            f"output_stride must be one of {sorted(STAGE_LAYOUT)}, got {output_stride}")
    spec = RESNET_SPECS[backbone]
    strides, dilations = STAGE_LAYOUT[output_stride]

    x = conv_bn_relu(inputs, 32, 3, "stem_0", "stem_1", stride=2)
    x = conv_bn_relu(x, 32, 3, "stem_3", "stem_4")
    x = conv_bn_relu(x, 64, 3, "stem_6", "stem_7")
    # Zero padding equals PyTorch's -inf padding here because the input is post-ReLU.
    x = keras.layers.ZeroPadding2D(1, name="maxpool_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="maxpool")(x)
    outputs = {"stem": x}
    for stage, (planes, blocks, stride, dilation) in enumerate(
        zip(STAGE_PLANES, spec.blocks, strides, dilations), start=1
    ):
        for block in range(blocks):
            block_dilation = max(dilation // 2, 1) if block == 0 else dilation
            x = _residual_block(
                x, spec, planes, stride if block == 0 else 1, block_dilation,
                name=f"layer{stage}_{block}",
            )
        outputs[f"layer{stage}"] = x
    return outputs


def set_tap_gradients(model: keras.Model, enabled: bool) -> None:
    """Sets the `tap_gradient` config field of every convolution of `model` that has one."""
    for layer in model.layers:
        if hasattr(layer, "tap_gradient"):
            layer.tap_gradient = enabled


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResNetV1cBackbone(PresetMixin, keras.Model):
    """The dilated ResNetV1c backbone of PSPNet, a functional model from "images" (NHWC
    float32, normalised as in docs/recipe.md, any height and width) to layer4's features.

    `depth` is 18, 50 or 101; `output_stride` 8 (D8) or 16 (D16). `stage_outputs` holds the
    symbolic outputs of the stem and the four stages by name (STAGES), for heads and feature
    extractors built on them. `tap_gradients` gives the convolutions the tap gradient
    (`pspnet_tf.models.convolution`) for training on CPUs; forward values are unchanged.
    `dtype` (a dtype policy or its name, e.g. "mixed_bfloat16"; default the global policy)
    is every layer's policy. Serialised like keras-hub's backbones: the constructor arguments
    are the config.
    """

    presets: dict[str, Preset] = BACKBONE_PRESETS
    preset_role = "backbone"

    def __init__(self, depth: int = 50, output_stride: int = 8, tap_gradients: bool = False,
                 dtype: str | keras.DTypePolicy | None = None, name: str | None = None,
                 trainable: bool = True) -> None:
        images = keras.Input(shape=(None, None, 3), name="images")
        with dtype_policy(dtype):
            stages = resnet_v1c(images, backbone_name(depth), output_stride)
            super().__init__(inputs=images, outputs=stages["layer4"],
                             name=name or f"resnet{depth}_v1c_d{output_stride}",
                             trainable=trainable)
        self.depth = depth
        self.output_stride = output_stride
        self.tap_gradients = tap_gradients
        self.stage_outputs = stages
        set_tap_gradients(self, tap_gradients)

    @property
    def pyramid_outputs(self) -> dict[str, keras.KerasTensor]:
        """`stage_outputs`, under keras-hub's name for it."""
        return self.stage_outputs

    def get_config(self) -> dict:
        return {"name": self.name, "trainable": self.trainable, "depth": self.depth,
                "output_stride": self.output_stride, "tap_gradients": self.tap_gradients,
                "dtype": keras.dtype_policies.serialize(self.dtype_policy)}

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None
                    ) -> "ResNetV1cBackbone":
        return cls(**config)

    @classmethod
    def _from_preset_record(cls, preset: Preset, load_weights: bool, cache_dir: str | None,
                            output_stride: int | None = None) -> "ResNetV1cBackbone":
        """`from_preset(name, output_stride=None, load_weights=True, cache_dir=None)`: the
        backbone with the ImageNet weights of `name`, D8 unless `output_stride=16` (the
        same weights: dilation changes no weight's shape)."""
        backbone = cls(preset.depth, output_stride or preset.output_stride)
        if not load_weights:
            return backbone
        return fill_from_checkpoint(backbone, preset, cache_dir, "resnet_v1c")

    @classmethod
    def _from_preset_folder(cls, folder: str, load_weights: bool,
                            output_stride: int | None = None) -> "ResNetV1cBackbone":
        """`from_preset(folder, output_stride=None, load_weights=True)`: the backbone of a
        preset folder (a backbone's, or a segmenter's), its output stride changed to
        `output_stride` when given (the same weights)."""
        overrides = {} if output_stride is None else {"output_stride": output_stride}
        return load_backbone(folder, cls, load_weights, **overrides)


def backbone_name(depth: int) -> str:
    """The RESNET_SPECS key of a depth: 50 -> "resnet50_v1c"."""
    name = f"resnet{depth}_v1c"
    if name not in RESNET_SPECS:
        depths = sorted(int(key[6:].split("_")[0]) for key in RESNET_SPECS)
        raise ValueError(f"unknown ResNetV1c depth {depth}; choose one of {depths}")
    return name


def backbone_depth(name: str) -> int:
    """The depth of a RESNET_SPECS key: "resnet50_v1c" -> 50."""
    if name not in RESNET_SPECS:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(RESNET_SPECS)}")
    return int(name[len("resnet"):].split("_")[0])
