"""The tap gradient of a convolution: kernel and input gradients computed by matrix products
per kernel tap, which is faster on CPUs than TensorFlow's own.

Forward values are exactly Keras's; only how the gradients are computed differs. Layers
choose it by a config field (`tap_gradient` of `pspnet_tf.models.layers.Conv2D` and
`PyramidBottleneckConv`), set for a whole model by `PSPNetSegmenter(tap_gradients=...)`;
training picks it per host (`--tap_gradients`).
"""

import tensorflow as tf


def has_accelerator() -> bool:
    """Whether TensorFlow sees a GPU or TPU: there its own gradients and memory planning are
    kept by default, and the CPU training choices (tap gradients, recomputation) stay off."""
    return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))


def _kernel_gradient_by_taps(padded_inputs: tf.Tensor, upstream: tf.Tensor,
                             kernel_size: tuple[int, int],
                             dilation: tuple[int, int]) -> tf.Tensor:
    """The kernel gradient of a stride-1 'valid' convolution: one matrix product per tap.

    Tap (i, j) of the kernel sees the input window shifted by (i, j) x dilation, so its
    gradient is that window's pixels (rows) times the upstream gradient's pixels.

    Each window is a copy of the input. Nothing in the data flow stops a traced step from
    cutting all windows as soon as the padded input exists and holding them until their
    products run: nine copies of the input for a 3x3 kernel. A control dependency on the
    previous tap's product bounds that to one window, at no cost in time (the taps run one
    after another anyway with one inter-op thread).
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
    """`tf.nn.convolution` with stride 1 ("SAME" or "VALID") and a faster kernel gradient on
    CPUs.

    On CPUs TensorFlow's Conv2DBackpropFilter (oneDNN or Eigen) runs well below the speed of
    a matrix product of the same size and was the largest cost of a training step
    (docs/performance.md). Here the kernel gradient is computed by `_kernel_gradient_by_taps`
    instead, and the input gradient as the convolution of the upstream gradient with the
    flipped kernel (which, unlike Conv2DBackpropInput, has a dilated CPU kernel without
    oneDNN). Forward values are Keras's own (the same op). On GPUs cuDNN's gradient is fast,
    so accelerators keep TensorFlow's by default.
    """
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
