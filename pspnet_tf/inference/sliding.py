"""Sliding-window inference (mmseg `slide_inference`): overlapping windows, logits averaged."""

from collections.abc import Callable

import tensorflow as tf

LogitsFn = Callable[[tf.Tensor], tf.Tensor]


def _window(index: tf.Tensor, columns: tf.Tensor, height: tf.Tensor, width: tf.Tensor,
            crop: tuple[int, int], stride: tuple[int, int]) -> tuple[tf.Tensor, ...]:
    """Bounds (top, bottom, left, right) of window `index`; edge windows slide back inside."""
    bottom = tf.minimum(index // columns * stride[0] + crop[0], height)
    right = tf.minimum(index % columns * stride[1] + crop[1], width)
    return tf.maximum(bottom - crop[0], 0), bottom, tf.maximum(right - crop[1], 0), right


def slide_logits(run: LogitsFn, inputs: tf.Tensor, crop: tuple[int, int],
                 stride: tuple[int, int]) -> tf.Tensor:
    """Logits [1, h, w, C] of `run` over crop-sized windows of `inputs` [1, h, w, 3].

    Windows start every `stride` pixels (the last row and column end at the border, as in
    mmseg); each pixel's logits are the mean over the windows that cover it.
    """
    shape = tf.shape(inputs)
    height, width = shape[1], shape[2]
    rows = tf.maximum(height - crop[0] + stride[0] - 1, 0) // stride[0] + 1
    columns = tf.maximum(width - crop[1] + stride[1] - 1, 0) // stride[1] + 1

    def placed(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        top, bottom, left, right = _window(index, columns, height, width, crop, stride)
        logits = run(inputs[:, top:bottom, left:right])
        padding = [[0, 0], [top, height - bottom], [left, width - right], [0, 0]]
        coverage = tf.ones([1, bottom - top, right - left, 1], logits.dtype)
        return tf.pad(logits, padding), tf.pad(coverage, padding)

    def body(index: tf.Tensor, total: tf.Tensor, count: tf.Tensor) -> tuple[tf.Tensor, ...]:
        logits, coverage = placed(index)
        return index + 1, total + logits, count + coverage

    total, count = placed(tf.constant(0))
    _, total, count = tf.while_loop(lambda index, *_: index < rows * columns, body,
                                    (tf.constant(1), total, count))
    return total / count
