"""Small Keras layers PSPNet needs that Keras does not ship with PyTorch semantics."""

from typing import Any

import keras
import tensorflow as tf


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


class AdaptiveAveragePooling2D(keras.layers.Layer):
    """`torch.nn.AdaptiveAvgPool2d(bins)` for NHWC tensors of any runtime size.

    Written as two matrix products so that it has a gradient (ResizeArea has none) and
    follows the feature size seen at run time, not the one seen when the model was built.
    """

    def __init__(self, bins: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bins = bins

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        shape = tf.shape(inputs)
        rows = _pooling_matrix(shape[1], self.bins, inputs.dtype)
        cols = _pooling_matrix(shape[2], self.bins, inputs.dtype)
        pooled = tf.einsum("ih,bhwc->biwc", rows, inputs)
        return tf.einsum("jw,biwc->bijc", cols, pooled)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], self.bins, self.bins, input_shape[3])

    def get_config(self) -> dict:
        return {**super().get_config(), "bins": self.bins}


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
