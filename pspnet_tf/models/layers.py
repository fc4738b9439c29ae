"""Small Keras layers PSPNet needs that Keras does not ship with PyTorch semantics."""

from typing import Any

import keras
import tensorflow as tf

from pspnet_tf.models.convolution import conv2d
from pspnet_tf.models.winograd import WINDOW, winograd_conv2d

PACKAGE = "pspnet_tf"  # the registered names are "pspnet_tf>ClassName"
AUX_PREFIX = "aux_"  # the auxiliary head's layer names start with it


def is_auxiliary_layer(name: str) -> bool:
    """Whether a layer of a PSPNet belongs to the auxiliary head (training only)."""
    return name.startswith(AUX_PREFIX)


def _pooling_matrix(size: tf.Tensor, bins: int, dtype: tf.DType) -> tf.Tensor:
    """A (bins, size) matrix whose rows average PyTorch adaptive-pool cells.

    Cell i spans [floor(i * size / bins), ceil((i + 1) * size / bins)), so cells may
    overlap and differ in length when size is not divisible by bins.
    """
    cells = tf.range(bins)
    starts = (cells * size) // bins
    ends = ((cells + 1) * size + bins - 1) // bins
    positions = tf.range(size)[tf.newaxis, :]
    inside = (positions >= starts[:, tf.newaxis]) & (positions < ends[:, tf.newaxis])
    counts = tf.cast(ends - starts, dtype)[:, tf.newaxis]
    return tf.cast(inside, dtype) / counts


@keras.saving.register_keras_serializable(package=PACKAGE)
class AdaptiveAveragePooling2D(keras.layers.Layer):
    """`torch.nn.AdaptiveAvgPool2d(bins)` for NHWC tensors of any runtime size.

    Written as two matrix products so that it has a gradient (ResizeArea has none) and
    follows the feature size seen at run time, not the one seen when the model was built.
    Each is a plain (broadcast) matmul over the inputs' memory layout as it is: the same
    products as einsums, which transposed the features first and took about four times as
    long on CPUs (docs/performance.md).
    """

    def __init__(self, bins: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bins = bins

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        shape = tf.shape(inputs)
        rows = _pooling_matrix(shape[1], self.bins, inputs.dtype)
        cols = _pooling_matrix(shape[2], self.bins, inputs.dtype)
        # [bins, H] x [B, H, W * C] -> [B, bins, W * C], then [bins, W] x [B * bins, W, C].
        pooled = tf.matmul(rows, tf.reshape(inputs, tf.stack([shape[0], shape[1], -1])))
        pooled = tf.reshape(pooled, tf.stack([shape[0] * self.bins, shape[2], shape[3]]))
        return tf.reshape(tf.matmul(cols, pooled),
                          tf.stack([shape[0], self.bins, self.bins, shape[3]]))

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], self.bins, self.bins, input_shape[3])

    def get_config(self) -> dict:
        return {**super().get_config(), "bins": self.bins}


def _interpolation_matrix(out_size: tf.Tensor, in_size: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    """The (out_size, in_size) matrix of bilinear resizing along one axis, half-pixel centres.

    Equals `tf.image.resize(method="bilinear")` and PyTorch's
    `interpolate(mode="bilinear", align_corners=False)`: source positions below 0 clamp to 0.
    """
    scale = tf.cast(in_size, tf.float32) / tf.cast(out_size, tf.float32)
    source = tf.maximum((tf.range(out_size, dtype=tf.float32) + 0.5) * scale - 0.5, 0.0)
    lower = tf.minimum(tf.cast(tf.floor(source), tf.int32), in_size - 1)
    upper = tf.minimum(lower + 1, in_size - 1)
    fraction = (source - tf.cast(lower, tf.float32))[:, tf.newaxis]
    matrix = (tf.one_hot(lower, in_size) * (1.0 - fraction)
              + tf.one_hot(upper, in_size) * fraction)
    return tf.cast(matrix, dtype)


def _shifted_interpolation_matrices(out_size: tf.Tensor, in_size: tf.Tensor,
                                    dtype: tf.DType) -> tf.Tensor:
    """(3, out_size, in_size): the interpolation matrix with its rows moved by -1, 0, +1.

    Row y of matrix i interpolates output position y + i - 1, or is zero where that position
    falls outside (the zero padding of a 3x3 'same' convolution).
    """
    padded = tf.pad(_interpolation_matrix(out_size, in_size, dtype), [[1, 1], [0, 0]])
    return tf.stack([padded[shift:shift + out_size] for shift in range(3)])


def _upsampled_branches_convolution(shape: tf.Tensor, branches: list[tf.Tensor],
                                    kernels: list[tf.Tensor]) -> tf.Tensor:
    """The 3x3 'same' convolution, summed over `branches` (pooled maps [B, s, t, C_b]), of
    each branch bilinearly upsampled to `shape` [B, H, W, F] with its `kernels` entry
    (3, 3, C_b, F), without building the upsampled maps.

    Per branch: the nine taps' products of the pooled pixels (one matrix product against
    the kernel as laid out, no transpose of it), then the column interpolations shifted per
    tap. The row interpolations of all branches and taps are then one matrix product,
    [H, 3 x (s_1 + ... + s_n)] x [B, 3 x (s_1 + ... + s_n), W x F], so the full-size map is
    written once.
    """
    batch, height, width = shape[0], shape[1], shape[2]
    filters = kernels[0].shape[-1]
    rows, columns_applied = [], []
    for pooled, kernel in zip(branches, kernels):
        pooled_shape = tf.shape(pooled)
        channels = pooled.shape[-1]
        taps = tf.matmul(tf.reshape(pooled, [1, -1, channels]),
                         tf.reshape(kernel, [9, channels, filters]))
        taps = tf.reshape(taps, tf.stack([3, 3, *tf.unstack(pooled_shape[:3]), filters]))
        cols = _shifted_interpolation_matrices(width, pooled_shape[2], pooled.dtype)
        part = tf.einsum("jxt,ijbstf->bisxf", cols, taps)
        columns_applied.append(tf.reshape(part, tf.stack([batch, -1, width * filters])))
        shifted_rows = _shifted_interpolation_matrices(height, pooled_shape[1], pooled.dtype)
        rows.append(tf.reshape(tf.transpose(shifted_rows, [1, 0, 2]), tf.stack([height, -1])))
    upsampled = tf.matmul(tf.concat(rows, axis=1), tf.concat(columns_applied, axis=1))
    return tf.reshape(upsampled, shape)


def _convolution_by_taps(inputs: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """The 3x3 'same' stride-1 convolution of `inputs` [B, H, W, C] with `kernel`
    (3, 3, C, F) as one matrix product and a shifted sum.

    The product of each pixel's channels with all nine taps' kernels gives nine maps
    [B, H, W, F]; output pixel (y, x) adds map (i, j) at (y + i - 1, x + j - 1), zero outside
    (the 'same' padding). This holds B x H x W x 9F values at once (75 MB for R-50-D8's PPM
    bottleneck at 512x512).
    """
    shape = tf.shape(inputs)
    channels, filters = kernel.shape[2], kernel.shape[3]
    matrix = tf.reshape(tf.transpose(kernel, [2, 0, 1, 3]), [channels, 9 * filters])
    # Four dimensions (maps side by side in the channels), as LiteRT slices at most five.
    taps = tf.reshape(tf.matmul(tf.reshape(inputs, [-1, channels]), matrix),
                      tf.concat([shape[:3], [9 * filters]], 0))
    windows = {-1: slice(None, -1), 0: slice(None), 1: slice(1, None)}
    shifted = []
    for i in range(3):
        for j in range(3):
            rows, cols, tap = i - 1, j - 1, 3 * i + j
            # Rows [max(rows, 0), H + min(rows, 0)) of map (i, j), moved up by `rows` (and
            # likewise for columns) into a map of the output's size.
            window = taps[:, windows[rows], windows[cols], tap * filters:(tap + 1) * filters]
            shifted.append(tf.pad(window, [[0, 0], [max(-rows, 0), max(rows, 0)],
                                           [max(-cols, 0), max(cols, 0)], [0, 0]]))
    # Added one by one, not by add_n: LiteRT's full-integer conversion has int8 ADD, no ADD_N.
    total = shifted[0]
    for window in shifted[1:]:
        total = total + window
    return total


@keras.saving.register_keras_serializable(package=PACKAGE)
class PyramidBottleneckConv(keras.layers.Layer):
    """PSPNet's bottleneck: a 3x3 'same' convolution, no bias, over
    concat([features] + [bilinear upsampling of each pooled branch to the features' size]).

    The upsampled branches are never built. Convolution and bilinear upsampling are both
    linear, so the branch channels' share of the output is the 3x3 kernel applied to the
    small pooled maps, then upsampled with interpolation matrices shifted per kernel tap.
    That removes the branches' half of the largest convolution in PSPNet and gives the
    same result up to float rounding. The kernel (weight "kernel", shape (3, 3, all input
    channels, filters)) has the shape and layout of the plain convolution's, so checkpoints
    load unchanged.

    Called on [features, pooled_1, ..., pooled_n]; pooled maps may have any size. In
    training the features' convolution is a convolution op, which takes the tap gradient
    (`pspnet_tf.models.convolution`) when the config field `tap_gradient` is set, as
    `Conv2D` does. Otherwise (inference) it is one matrix product of the features with all
    nine taps' kernels, whose nine output maps are summed shifted (`_convolution_by_taps`):
    the same values up to float rounding, and on CPUs much faster for this layer's 2048
    input channels than the convolution op (docs/performance.md).

    The config field `inference_form` chooses other forms for inference copies (made by
    `pspnet_tf.models.winograd_conversion`), which are for inference only and hold the
    kernel in two weights, the features' part and the branches' ("branch_kernel", (3, 3,
    branch channels, filters)), so that no request splits it: "convolution", the
    convolution op ("features_kernel", (3, 3, feature channels, filters); faster than the
    taps where TensorFlow runs its own CPU kernels, without oneDNN, and on GPUs) or
    "winograd", `winograd_conv2d` ("winograd_kernel", (16, feature channels, filters); the
    fastest with oneDNN). The default "taps" is the trainable layer described above.
    """

    KERNEL_SIZE = (3, 3)
    INFERENCE_FORMS = ("taps", "convolution", "winograd")

    def __init__(self, filters: int, kernel_initializer: Any = "glorot_uniform",
                 tap_gradient: bool = False, inference_form: str = "taps",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if inference_form not in self.INFERENCE_FORMS:
            raise ValueError(f"inference_form={inference_form!r}; choose one of "
                             f"{', '.join(self.INFERENCE_FORMS)}")
        self.filters = filters
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.tap_gradient = tap_gradient
        self.inference_form = inference_form

    def build(self, input_shapes: list[tuple]) -> None:
        features, *branches = input_shapes
        channels = features[-1] + sum(branch[-1] for branch in branches)
        if self.inference_form != "taps":
            winograd = self.inference_form == "winograd"
            taps = (WINDOW * WINDOW,) if winograd else self.KERNEL_SIZE
            self.features_kernel = self.add_weight(
                name="winograd_kernel" if winograd else "features_kernel",
                shape=(*taps, features[-1], self.filters), initializer=self.kernel_initializer)
            self.branch_kernel = self.add_weight(
                name="branch_kernel",
                shape=(*self.KERNEL_SIZE, channels - features[-1], self.filters),
                initializer=self.kernel_initializer)
            return
        # Held as `_kernel`, as keras.layers.Conv2D holds it, so that training checkpoints
        # (tf.train.Checkpoint tracks attribute names) of the Conv2D-based layer restore.
        self._kernel = self.add_weight(name="kernel",
                                       shape=(*self.KERNEL_SIZE, channels, self.filters),
                                       initializer=self.kernel_initializer)

    @property
    def kernel(self) -> keras.Variable:
        return self._kernel

    def convolution_op(self, inputs: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
        if self.tap_gradient:
            return conv2d(inputs, kernel, "SAME")
        return tf.nn.convolution(inputs, kernel, padding="SAME")

    def call(self, inputs: list[tf.Tensor], training: bool | None = None) -> tf.Tensor:
        features, *branches = inputs
        if self.inference_form != "taps":
            if training:
                raise ValueError(f"{self.name} has inference_form={self.inference_form!r}, "
                                 "for inference only; train the layer with the default "
                                 "'taps'")
            outputs = (winograd_conv2d(features, self.features_kernel)
                       if self.inference_form == "winograd"
                       else tf.nn.convolution(features, self.features_kernel, padding="SAME"))
            branch_kernels = tf.split(self.branch_kernel, [x.shape[-1] for x in branches],
                                      axis=2)
        else:
            # One split, not a slice per input: the kernel gradient is then one concatenation
            # instead of a kernel-sized gradient per slice summed (5 x 75 MB for R-50-D8).
            features_kernel, *branch_kernels = tf.split(
                self.kernel, [x.shape[-1] for x in inputs], axis=2)
            outputs = (self.convolution_op(features, features_kernel) if training
                       else _convolution_by_taps(features, features_kernel))
        if not branches:
            return outputs
        return outputs + _upsampled_branches_convolution(tf.shape(outputs), branches,
                                                         branch_kernels)

    def compute_output_shape(self, input_shapes: list[tuple]) -> tuple:
        return (*input_shapes[0][:-1], self.filters)

    def get_config(self) -> dict:
        return {**super().get_config(), "filters": self.filters,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "tap_gradient": self.tap_gradient, "inference_form": self.inference_form}


@keras.saving.register_keras_serializable(package=PACKAGE)
class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` whose training gradient is chosen by the config field
    `tap_gradient`: Keras's (False), or `conv2d`'s (True; stride-1, ungrouped convolutions
    only: strided ones keep Keras's, as there the window slices cost more than they save).

    Weights, their names and the rest of the config are Keras's, so weight files of either
    layer load into the other.
    """

    def __init__(self, *args: Any, tap_gradient: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tap_gradient = tap_gradient

    def convolution_op(self, inputs: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
        if (self.tap_gradient and self.strides == (1, 1) and self.groups == 1
                and self.data_format == "channels_last"):
            return conv2d(inputs, kernel, self.padding.upper(), self.dilation_rate)
        return super().convolution_op(inputs, kernel)

    def get_config(self) -> dict:
        return {**super().get_config(), "tap_gradient": self.tap_gradient}


@keras.saving.register_keras_serializable(package=PACKAGE)
class WinogradConv2D(keras.layers.Layer):
    """A 3x3 'same', stride-1 convolution (with bias, no activation) whose kernel is held in
    Winograd's basis (weight "kernel", (16, input channels, filters); `winograd_kernel`).

    For inference copies made by `with_winograd_convolutions`; the outputs are those of the
    `keras.layers.Conv2D` it was made from, up to float rounding. Training it would train 16
    free values per tap pair instead of 9, a different model.
    """

    def __init__(self, filters: int, dilation_rate: tuple[int, int] | int = (1, 1),
                 use_bias: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.filters = filters
        rate = (dilation_rate, dilation_rate) if isinstance(dilation_rate, int) else dilation_rate
        self.dilation_rate = tuple(rate)
        self.use_bias = use_bias

    def build(self, input_shape: tuple) -> None:
        self.kernel = self.add_weight(name="kernel",
                                      shape=(WINDOW * WINDOW, input_shape[-1], self.filters))
        self.bias = (self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")
                     if self.use_bias else None)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        outputs = winograd_conv2d(inputs, self.kernel, self.dilation_rate)
        return outputs + self.bias if self.use_bias else outputs

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape[:-1], self.filters)

    def get_config(self) -> dict:
        return {**super().get_config(), "filters": self.filters,
                "dilation_rate": self.dilation_rate, "use_bias": self.use_bias}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResizeLike(keras.layers.Layer):
    """Bilinearly resizes its first input to the spatial size of its second input.

    `tf.image.resize` with half-pixel centres and no antialiasing equals PyTorch's
    `interpolate(mode="bilinear", align_corners=False)`, up or down.
    """

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        source, reference = inputs
        size = tf.shape(reference)[1:3]
        resized = tf.image.resize(source, size, method="bilinear")
        return tf.cast(resized, source.dtype)

    def compute_output_shape(self, input_shapes: list[tuple]) -> tuple:
        source, reference = input_shapes
        return (source[0], reference[1], reference[2], source[3])


@keras.saving.register_keras_serializable(package=PACKAGE)
class SpatialDropout2D(keras.layers.SpatialDropout2D):
    """`keras.layers.SpatialDropout2D` (mmsegmentation's Dropout2d) whose `training`, when not
    given, follows the enclosing call, as BatchNorm's does; Keras's defaults to False and
    records that in the model's graph. So a part of a model run as a `keras.Function` inside
    a training call drops out as the whole model does (`PSPNetSegmenter(recompute=...)`)."""

    def call(self, inputs: tf.Tensor, training: Any = None) -> tf.Tensor:
        return super().call(inputs, training=training)


def _statistics_are_local(layer: keras.layers.BatchNormalization) -> bool:
    """Whether `layer` normalises with the statistics of this replica's batch alone: not
    synchronised, or synchronised across a single replica (one device, or no strategy)."""
    context = tf.distribute.get_replica_context()
    return not layer.synchronized or context is None or context.num_replicas_in_sync == 1


@keras.saving.register_keras_serializable(package=PACKAGE)
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` whose training call is one fused op where it can be.

    Keras computes batch statistics and the normalisation from a dozen elementwise ops, each
    making a new tensor of the input's size, and as many again in the backward pass.
    TensorFlow's FusedBatchNormV3 (oneDNN on the CPU, cuDNN on GPUs) makes one each way,
    which saves step time and peak memory (docs/performance.md). Used in training on 4-D
    channels-last inputs without a mask or renorm, when the statistics are the replica's own
    (not synchronised, or one replica); synchronised statistics across replicas, inference
    and everything else run Keras' own code. Same outputs, gradients and moving-statistics
    update as Keras to float32 rounding: the moving variance takes the batch variance
    without Bessel's correction, as Keras does. Weights, their names and the config are
    Keras', so checkpoints of either layer load into the other.
    """

    def _fusable(self, inputs: tf.Tensor, training: Any, mask: Any) -> bool:
        return (bool(training) and self.trainable and mask is None and not self.renorm
                and len(inputs.shape) == 4 and self.axis in (-1, 3)
                and _statistics_are_local(self))

    def call(self, inputs: tf.Tensor, training: Any = None, mask: Any = None) -> tf.Tensor:
        if not self._fusable(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        inputs = tf.cast(inputs, "float32")  # statistics in float32, as Keras computes them
        channels = tf.shape(inputs)[-1:]
        scale = tf.cast(self.gamma, "float32") if self.scale else tf.ones(channels)
        offset = tf.cast(self.beta, "float32") if self.center else tf.zeros(channels)
        outputs, mean, corrected_variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=inputs, scale=scale, offset=offset, mean=tf.zeros([0]), variance=tf.zeros([0]),
            epsilon=self.epsilon, data_format="NHWC", is_training=True)
        # The op returns the variance with Bessel's correction n / (n - 1) (1 for n = 1).
        count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:3]), "float32")
        variance = corrected_variance * (tf.maximum(count - 1.0, 1.0) / count)
        momentum = self.momentum
        self.moving_mean.assign(
            tf.cast(self.moving_mean, "float32") * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(
            tf.cast(self.moving_variance, "float32") * momentum + variance * (1.0 - momentum))
        return tf.cast(outputs, self.compute_dtype)
