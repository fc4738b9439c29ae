"""3x3 convolutions by Winograd's minimal filtering F(2x2, 3x3), for inference on CPUs.

Each 2x2 block of output pixels is computed from the 4x4 input window around it in a
transformed basis: 16 products per channel pair instead of 36 (2.25 times fewer
multiplications), as Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks"
(2016). Here the input and output transforms are small matrix products along each spatial
axis and the 16 channel products one batched matrix product, so everything runs in
TensorFlow's own matmul kernels (oneDNN on x86), in any graph, without XLA. A dilated
convolution (dilation d) is the same on the d x d interleaved grids of its pixels.

F(2x2, 3x3) is the variant whose rounding matches a direct convolution's: its transforms hold
only 0, +-1 and +-1/2, and the products agree with a float64 convolution as closely as the
convolution op's do (tests/test_winograd.py). The larger F(4x4, 3x3) was faster still, but
ten times less exact (docs/performance.md), which would move logits off the PyTorch
reference's.

The layers that use it (`pspnet_tf.models.layers.WinogradConv2D`, `PyramidBottleneckConv`
with `inference_form="winograd"`) hold their kernels already transformed
(`winograd_kernel`), so nothing is transformed per request;
`pspnet_tf.models.winograd_conversion` converts a model's eligible convolutions in an
inference copy. Worthwhile from about 512 input channels
(`MIN_CHANNELS`): below that the transforms' memory traffic costs about what the products
save (docs/performance.md). It pays where oneDNN runs TensorFlow's CPU kernels; TensorFlow's
own (Eigen) kernels run its transforms and batched product too slowly for it to.
"""

import numpy as np
import tensorflow as tf

MIN_CHANNELS = 512
TILE = 2  # output pixels per tile side
WINDOW = TILE + 2  # input pixels per tile side (for a 3x3 kernel)

# B^T (input), G (kernel) and A^T (output) of F(2, 3), points 0, 1, -1 and infinity.
INPUT_TRANSFORM = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]])
KERNEL_TRANSFORM = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
OUTPUT_TRANSFORM = np.array([[1, 1, 1, 0], [0, 1, -1, -1]])


def winograd_kernel(kernel: np.ndarray) -> np.ndarray:
    """A (3, 3, C, F) convolution kernel in the transformed basis, (16, C, F) float32 (the
    16 products in row-major order of the 4x4 window), computed in float64."""
    transformed = np.einsum("ai,ijcf,bj->abcf", KERNEL_TRANSFORM,
                            np.asarray(kernel, np.float64), KERNEL_TRANSFORM)
    return transformed.reshape(WINDOW * WINDOW, *kernel.shape[2:]).astype(np.float32)


def _tile_transform(size: tf.Tensor, dilation: int, dtype: tf.DType) -> tf.Tensor:
    """(WINDOW * size / TILE, size + 2 * dilation): the input transform along one axis of
    `size` pixels (a multiple of TILE * dilation) padded by `dilation` on each side.

    Row (a, t, r) combines, with the coefficients of B^T's row a, the padded pixels
    TILE * dilation * t + dilation * e + r (e = 0..3): tile t of the interleaved grid r.
    """
    tiles = size // (TILE * dilation)
    starts = tf.reshape(TILE * dilation * tf.range(tiles)[:, tf.newaxis]
                        + tf.range(dilation)[tf.newaxis, :], [-1])
    width = size + 2 * dilation
    taps = [tf.one_hot(starts + dilation * e, width, dtype=dtype) for e in range(WINDOW)]
    rows = [sum(float(c) * taps[e] for e, c in enumerate(coefficients) if c)
            for coefficients in INPUT_TRANSFORM]
    return tf.concat(rows, axis=0)


def winograd_conv2d(inputs: tf.Tensor, kernel: tf.Tensor,
                    dilation: tuple[int, int] = (1, 1)) -> tf.Tensor:
    """The 3x3 'same', stride-1 convolution of `inputs` [B, H, W, C] (any H, W) with a
    `winograd_kernel` (16, C, F): [B, H, W, F].

    The input is padded to a multiple of TILE x dilation (the extra pixels are zeros, as the
    'same' padding is) and the output cropped back. Holds the transformed input, 4 times
    the input's size, twice (before and after one transpose).
    """
    shape = tf.shape(inputs)
    batch, height, width = shape[0], shape[1], shape[2]
    channels, filters = kernel.shape[1], kernel.shape[2]
    rate_h, rate_w = dilation
    padded_h = -(-height // (TILE * rate_h)) * (TILE * rate_h)
    padded_w = -(-width // (TILE * rate_w)) * (TILE * rate_w)
    padded = tf.pad(inputs, [[0, 0], [rate_h, rate_h + padded_h - height],
                             [rate_w, rate_w + padded_w - width], [0, 0]])
    # Along the rows: [4 * H / 2, H + 2d] x [B, H + 2d, (W + 2d) * C].
    rows = tf.matmul(_tile_transform(padded_h, rate_h, inputs.dtype),
                     tf.reshape(padded, tf.stack([batch, padded_h + 2 * rate_h, -1])))
    # Along the columns: [4 * W / 2, W + 2d] x [B * 4 * H / 2, W + 2d, C].
    rows = tf.reshape(rows, tf.stack([-1, padded_w + 2 * rate_w, channels]))
    windows = tf.matmul(_tile_transform(padded_w, rate_w, inputs.dtype), rows)
    # [B, 4, H / 2, 4, W / 2, C] -> [16, B * H / 2 * W / 2, C]: one matrix per window pixel.
    half_h, half_w = padded_h // TILE, padded_w // TILE
    windows = tf.reshape(windows, tf.stack([batch, WINDOW, half_h, WINDOW, half_w, channels]))
    windows = tf.reshape(tf.transpose(windows, [1, 3, 0, 2, 4, 5]),
                         [WINDOW * WINDOW, -1, channels])
    products = tf.matmul(windows, kernel)  # [16, tiles, F]
    # A^T along each of the window's two axes: [2, 4] x [4, 4 * rest], [2, 4] x [2, 4, rest].
    output = tf.constant(OUTPUT_TRANSFORM, inputs.dtype)
    products = tf.matmul(output, tf.reshape(products, [WINDOW, -1]))
    products = tf.matmul(output, tf.reshape(products, [TILE, WINDOW, -1]))
    # [2 (y), 2 (x), B, H / 2d, d, W / 2d, d, F] -> [B, H, W, F].
    products = tf.reshape(products, tf.stack([
        TILE, TILE, batch, padded_h // (TILE * rate_h), rate_h,
        padded_w // (TILE * rate_w), rate_w, filters]))
    outputs = tf.reshape(tf.transpose(products, [2, 3, 0, 4, 5, 1, 6, 7]),
                         tf.stack([batch, padded_h, padded_w, filters]))
    return outputs[:, :height, :width]
