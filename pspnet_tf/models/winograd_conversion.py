"""The inference copies of a model that TensorFlow runs (Predictor, the SavedModel): BatchNorms
folded, and the large 3x3 convolutions by Winograd's F(2x2, 3x3) (`pspnet_tf.models.winograd`)
where oneDNN runs the CPU kernels, or every convolution by the convolution op elsewhere."""

import keras

from pspnet_tf.compat import onednn_enabled
from pspnet_tf.models.convolution import has_accelerator
from pspnet_tf.models.folding import fold_batchnorm
from pspnet_tf.models.layers import PyramidBottleneckConv, WinogradConv2D
from pspnet_tf.models.winograd import MIN_CHANNELS, winograd_kernel


def _float32(layer: keras.layers.Layer) -> bool:
    return layer.compute_dtype == "float32"


def _convertible(layer: keras.layers.Layer, min_channels: int) -> bool:
    """Whether `layer` is a convolution `WinogradConv2D` computes, worth converting."""
    return (isinstance(layer, keras.layers.Conv2D) and tuple(layer.kernel_size) == (3, 3)
            and tuple(layer.strides) == (1, 1)
            and layer.groups == 1 and layer.padding == "same"
            and layer.data_format == "channels_last"
            and layer.activation is keras.activations.linear
            and layer.kernel.shape[2] >= min_channels and _float32(layer))


def _bottleneck_convertible(layer: keras.layers.Layer, min_channels: int) -> bool:
    return (isinstance(layer, PyramidBottleneckConv) and layer.inference_form == "taps"
            and _float32(layer) and layer.input[0].shape[-1] >= min_channels)


def _copy(model: keras.Model, convolutions: set[str], bottlenecks: dict[str, str]
          ) -> keras.Model:
    """A copy of `model` whose `convolutions` are `WinogradConv2D`s and whose bottlenecks
    ({name: inference form}) take those forms, their weights converted."""
    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        if layer.name in convolutions:
            return WinogradConv2D(
                config["filters"], config["dilation_rate"], config["use_bias"],
                name=layer.name, dtype=config["dtype"], trainable=config["trainable"])
        if layer.name in bottlenecks:
            config["inference_form"] = bottlenecks[layer.name]
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        if not layer.weights:
            continue
        weights = layer.get_weights()
        if layer.name in convolutions:
            weights[0] = winograd_kernel(weights[0])
        elif layer.name in bottlenecks:  # the kernel's features' part, then its branches'
            features = layer.input[0].shape[-1]
            features_kernel = weights[0][:, :, :features]
            if bottlenecks[layer.name] == "winograd":
                features_kernel = winograd_kernel(features_kernel)
            weights = [features_kernel, weights[0][:, :, features:]]
        copy.get_layer(layer.name).set_weights(weights)
    return copy


def with_winograd_convolutions(model: keras.Model, min_channels: int = MIN_CHANNELS
                               ) -> keras.Model:
    """An inference copy of `model` whose float32 3x3 stride-1 convolutions of at least
    `min_channels` input channels are `WinogradConv2D`s and whose `PyramidBottleneckConv`s
    of as many feature channels compute their features' part by Winograd
    (`inference_form="winograd"`); everything else is copied as it is. `model` is left
    unchanged. Returns `model` itself when nothing converts."""
    convolutions = {layer.name for layer in model.layers if _convertible(layer, min_channels)}
    bottlenecks = {layer.name: "winograd" for layer in model.layers
                   if _bottleneck_convertible(layer, min_channels)}
    if not convolutions and not bottlenecks:
        return model
    return _copy(model, convolutions, bottlenecks)


def with_direct_convolutions(model: keras.Model) -> keras.Model:
    """An inference copy of `model` whose `PyramidBottleneckConv`s compute their features'
    part by the convolution op (`inference_form="convolution"`), as every other
    convolution is; `model` itself when it has none."""
    bottlenecks = {layer.name: "convolution" for layer in model.layers
                   if isinstance(layer, PyramidBottleneckConv)
                   and layer.inference_form == "taps"}
    return _copy(model, set(), bottlenecks) if bottlenecks else model


def winograd_by_default() -> bool:
    """Whether inference here computes by Winograd unless told: where TensorFlow sees no GPU
    or TPU (there cuDNN's own kernels are kept) and runs oneDNN's kernels. Without oneDNN
    (TensorFlow's default on CPUs without AVX-512 VNNI, AVX-VNNI or AMX, such as AVX2-only
    ones) its own CPU kernels run the transforms and the batched product more slowly than
    they run the convolution op (docs/performance.md)."""
    return not has_accelerator() and onednn_enabled()


def inference_network(model: keras.Model, winograd: bool | None = None) -> keras.Model:
    """The copy of `model` that TensorFlow inference runs: BatchNorms folded into the
    convolutions (`fold_batchnorm`), then with `winograd` the large 3x3 convolutions by
    Winograd (`with_winograd_convolutions`), without it every convolution by the
    convolution op (`with_direct_convolutions`). `winograd=None` chooses for this host
    (`winograd_by_default`)."""
    network = fold_batchnorm(model)
    if winograd is None:
        winograd = winograd_by_default()
    return (with_winograd_convolutions(network) if winograd
            else with_direct_convolutions(network))


def winograd_layers(model: keras.Model) -> list[str]:
    """The names of `model`'s layers that compute by Winograd."""
    return [layer.name for layer in model.layers if isinstance(layer, WinogradConv2D)
            or getattr(layer, "inference_form", None) == "winograd"]
