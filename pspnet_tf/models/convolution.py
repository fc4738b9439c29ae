"""Convolutions whose training gradient is computed faster on CPU-only hosts.

Forward values are exactly Keras's; only how the kernel and input gradients are computed
differs, and only where TensorFlow sees no GPU or TPU. Models are built of plain
`keras.layers.Conv2D`; `use_tap_gradients` swaps this gradient into a model for training.
"""

import functools

import keras
import tensorflow as tf

from pspnet_tf.models.layers import PyramidBottleneckConv


def has_accelerator() -> bool:
    """Whether TensorFlow sees a GPU or TPU: there its own gradients and memory planning are
    kept, and the CPU-only training changes (tap gradients, recomputation) stay off."""
    return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))


def _kernel_gradient_by_taps(padded_inputs: tf.Tensor, upstream: tf.Tensor,
                             kernel_size: tuple[int, int],
                             dilation: tuple[int, int]) -> tf.Tensor:
    """The kernel gradient of a stride-1 'valid' convolution: one matrix product per tap.

    Tap (i, j) of the kernel sees the input window shifted by (i, j) x dilation, so its
    gradient is that window's pixels (rows) times the upstream gradient's pixels.

    Each window is a copy of the input. Nothing in the data flow stops a traced step from
    cutting all windows as soon as the padded input exists and holding them until their
    products run: for the PPM bottleneck (2048 channels, 64x64, batch 2) 9 x 67 MB. A
    control dependency on the previous tap's product bounds that to one window, at no cost
    in time (the taps run one after another anyway with one inter-op thread). How much it
    saves depends on TensorFlow's scheduling (docs/performance.md).
    """
    height, width = tf.shape(upstream)[1], tf.shape(upstream)[2]
    channels, filters = padded_inputs.shape[-1], upstream.shape[-1]
    pixels = tf.reshape(upstream, (-1, filters))
    taps: list[tf.Tensor] = []
    for i in range(kernel_size[0]):
        for j in range(kernel_size[1]):
            top, left = i * dilation[0], j * dilation[1]
            with tf.control_dependencies(taps[-1:]):
                window = padded_inputs[:, top:top + height, left:left + width, :]
            taps.append(tf.matmul(tf.reshape(window, (-1, channels)), pixels, transpose_a=True))
    return tf.reshape(tf.stack(taps), (*kernel_size, channels, filters))


def conv2d(inputs: tf.Tensor, kernel: tf.Tensor, padding: str,
           dilation: tuple[int, int] = (1, 1)) -> tf.Tensor:
    """`tf.nn.convolution` with stride 1 ("SAME" or "VALID"), a faster kernel gradient on CPUs.

    On this project's CPUs TensorFlow's Conv2DBackpropFilter (oneDNN or Eigen) ran at a third
    (the 4096-channel PPM bottleneck: 3.2 s against 1.1 s per 512x512 batch of 2) to two
    thirds (the wide 1x1 layers) of the speed of a matrix product, and was the largest cost
    of a training step. Here the kernel gradient is computed by
    `_kernel_gradient_by_taps` instead, and the input gradient as the convolution of the
    upstream gradient with the flipped kernel (which, unlike Conv2DBackpropInput, has a
    dilated CPU kernel without oneDNN). Forward values are Keras's own (the same op).
    Hosts with a GPU or TPU keep TensorFlow's gradient (cuDNN's is fast).
    """
    if has_accelerator():
        return tf.nn.convolution(inputs, kernel, padding=padding, dilations=dilation)
    kernel_size = tuple(kernel.shape[:2])
    reach = [(size - 1) * rate for size, rate in zip(kernel_size, dilation)]
    before = [r // 2 if padding == "SAME" else 0 for r in reach]
    after = [r - b if padding == "SAME" else 0 for r, b in zip(reach, before)]
    input_pads = [[0, 0], [before[0], after[0]], [before[1], after[1]], [0, 0]]
    upstream_pads = [[0, 0], [reach[0] - before[0], reach[0] - after[0]],
                     [reach[1] - before[1], reach[1] - after[1]], [0, 0]]

    @tf.custom_gradient
    def convolve(inputs: tf.Tensor, kernel: tf.Tensor):
        def gradient(upstream: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            flipped = tf.transpose(tf.reverse(kernel, [0, 1]), [0, 1, 3, 2])
            input_gradient = tf.nn.conv2d(upstream, flipped, 1, upstream_pads,
                                          dilations=dilation)
            kernel_gradient = _kernel_gradient_by_taps(
                tf.pad(inputs, input_pads), upstream, kernel_size, dilation)
            return input_gradient, kernel_gradient

        outputs = tf.nn.convolution(inputs, kernel, padding=padding, dilations=dilation)
        return outputs, gradient

    return convolve(tf.convert_to_tensor(inputs), tf.convert_to_tensor(kernel))


def _uses_tap_gradient(layer: keras.layers.Layer) -> bool:
    """Keras's own stride-1 Conv2D: strided convolutions keep Keras's op, as there the window
    slices cost more than they save."""
    return (type(layer) is keras.layers.Conv2D and layer.strides == (1, 1)
            and layer.groups == 1 and layer.data_format == "channels_last")


def use_tap_gradients(model: keras.Model) -> int:
    """Makes `model`'s stride-1 convolutions compute their gradients with `conv2d`; returns
    how many layers now do.

    For training only (`compile_for_training` calls it before the train function is traced).
    The layers stay what they are, `keras.layers.Conv2D` and `PyramidBottleneckConv` with the
    same configuration and weights; only each instance's `convolution_op` is replaced, so
    forward values are bit-identical and a model saved afterwards (`model.save`) is as
    portable as before. Copies (`fold_batchnorm`, `keras.models.clone_model`, a reloaded
    `.keras` file) have Keras's gradient again.
    """
    swapped = 0
    for layer in model.layers:
        if _uses_tap_gradient(layer):
            layer.convolution_op = functools.partial(
                conv2d, padding=layer.padding.upper(), dilation=layer.dilation_rate)
        elif isinstance(layer, PyramidBottleneckConv):
            layer.convolution_op = functools.partial(conv2d, padding="SAME")
        else:
            continue
        swapped += 1
    return swapped
