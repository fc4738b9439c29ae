"""The SPEC.md training augmentations as graph-safe TensorFlow ops (mmsegmentation semantics).

Randomness is stateless: every random function takes an explicit `seed` (int32/int64 tensor
of shape [2]), so the same seed always gives the same sample, which makes resumed runs
reproduce uninterrupted ones. Labels are only ever resized with nearest neighbour, so they
never hold a value that was not in the source.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

IMAGE_MEAN = (123.675, 116.28, 103.53)
IMAGE_STD = (58.395, 57.12, 57.375)
IGNORE_INDEX = 255

BRIGHTNESS_DELTA = 32.0
CONTRAST_RANGE = (0.5, 1.5)
SATURATION_RANGE = (0.5, 1.5)
# mmseg/sssegmentation shift OpenCV's 8-bit hue (2 degrees per unit) by up to 18 units.
HUE_DELTA_DEGREES = 36.0


def keep_ratio_size(
    height: tf.Tensor | int, width: tf.Tensor | int, scale: tuple[int, int],
    ratio: tf.Tensor | float = 1.0,
) -> tuple[tf.Tensor, tf.Tensor]:
    """mmseg "Resize keep_ratio": the largest size whose edges fit (long, short) = scale * ratio.

    Like mmseg RandomResize, the scaled target edges are truncated to integers first; the new
    size is then int(side * factor + 0.5) (at least 1).
    """
    ratio = tf.cast(ratio, tf.float64)
    long_edge = tf.floor(float(max(scale)) * ratio)
    short_edge = tf.floor(float(min(scale)) * ratio)
    height = tf.cast(height, tf.float64)
    width = tf.cast(width, tf.float64)
    factor = tf.minimum(long_edge / tf.maximum(height, width),
                        short_edge / tf.minimum(height, width))
    new_height = tf.maximum(tf.cast(tf.floor(height * factor + 0.5), tf.int32), 1)
    new_width = tf.maximum(tf.cast(tf.floor(width * factor + 0.5), tf.int32), 1)
    return new_height, new_width


def rescale_keep_ratio(
    image: tf.Tensor, label: tf.Tensor | None, scale: tuple[int, int],
    ratio: tf.Tensor | float = 1.0,
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """Resize to keep_ratio_size: image bilinear (float32), label nearest; label may be None."""
    shape = tf.shape(image)
    size = tf.stack(keep_ratio_size(shape[0], shape[1], scale, ratio))
    image = tf.image.resize(image, size, method="bilinear")
    if label is None:
        return image, None
    label = tf.image.resize(label[..., None], size, method="nearest")[..., 0]
    return image, label


def random_ratio(ratio_range: tuple[float, float], seed: tf.Tensor) -> tf.Tensor:
    """The rescale ratio ~ U(ratio_range) for `seed`."""
    return tf.random.stateless_uniform([], seed, ratio_range[0], ratio_range[1], tf.float64)


def random_rescale(
    image: tf.Tensor, label: tf.Tensor, scale: tuple[int, int],
    ratio_range: tuple[float, float] = (0.5, 2.0), *, seed: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor]:
    """rescale_keep_ratio with a ratio drawn from U(ratio_range)."""
    return rescale_keep_ratio(image, label, scale, random_ratio(ratio_range, seed))


def resize_window(
    image: tf.Tensor, size: tf.Tensor, top: tf.Tensor, left: tf.Tensor, height: int,
    width: int,
) -> tf.Tensor:
    """The window [top:top+height, left:left+width] of tf.image.resize(image, size, "bilinear"),
    computing only the window's pixels (equal within float rounding, < 0.05 on 0..255).

    Training crops 512x512 out of images rescaled up to 2x; interpolating only the crop
    made the training pipeline several times faster (benchmarks/input_pipeline.py).
    """
    image = tf.cast(image, tf.float32)
    factor = tf.cast(size, tf.float32) / tf.cast(tf.shape(image)[:2], tf.float32)
    offset = -tf.cast(tf.stack([top, left]), tf.float32)
    window = tf.raw_ops.ScaleAndTranslate(images=image[None], size=tf.stack([height, width]),
                                          scale=factor, translation=offset,
                                          kernel_type="triangle", antialias=False)
    return window[0]


def _acceptable_crop(label: tf.Tensor, cat_max_ratio: float) -> tf.Tensor:
    """mmseg's test: no class covers cat_max_ratio or more of the labelled (non-255) pixels.

    For cat_max_ratio <= 1 this also rejects single-class and fully ignored windows, which
    mmseg checks separately.
    """
    counts = tf.math.bincount(tf.cast(tf.reshape(label, [-1]), tf.int32),
                              minlength=256, maxlength=256)[:IGNORE_INDEX]
    total = tf.cast(tf.reduce_sum(counts), tf.float64)
    return tf.cast(tf.reduce_max(counts), tf.float64) < cat_max_ratio * total


def crop_window(
    label_window: Callable[[tf.Tensor, tf.Tensor], tf.Tensor], shape: tf.Tensor,
    crop_size: tuple[int, int], cat_max_ratio: float = 0.75, *, seed: tf.Tensor,
    max_tries: int = 10,
) -> tuple[tf.Tensor, tf.Tensor]:
    """(top, left) of a random crop_size window in a label of `shape` (h, w).

    `label_window(top, left)` gives the label inside a window. As in mmseg RandomCrop: up to
    `max_tries` windows are tested while one class covers cat_max_ratio or more of the
    labelled (non-255) pixels; if all fail, one more window is drawn and used as it is.
    """
    crop_height, crop_width = crop_size
    seed_y, seed_x = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    tops = tf.random.stateless_uniform([max_tries + 1], seed_y, 0,
                                       tf.maximum(shape[0] - crop_height, 0) + 1, tf.int32)
    lefts = tf.random.stateless_uniform([max_tries + 1], seed_x, 0,
                                        tf.maximum(shape[1] - crop_width, 0) + 1, tf.int32)
    if cat_max_ratio < 1.0:
        chosen = tf.while_loop(
            lambda index: (index < max_tries) & ~_acceptable_crop(
                label_window(tops[index], lefts[index]), cat_max_ratio),
            lambda index: (index + 1,), (tf.constant(0),))[0]
    else:
        chosen = tf.constant(0)
    return tops[chosen], lefts[chosen]


def random_crop(
    image: tf.Tensor, label: tf.Tensor, crop_size: tuple[int, int],
    cat_max_ratio: float = 0.75, *, seed: tf.Tensor, max_tries: int = 10,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Image and label cut to a crop_window (crop_size, cut to the image where smaller)."""
    image, label = tf.convert_to_tensor(image), tf.convert_to_tensor(label)
    crop_height, crop_width = crop_size

    def window(tensor: tf.Tensor, top: tf.Tensor, left: tf.Tensor) -> tf.Tensor:
        return tensor[top:top + crop_height, left:left + crop_width]

    top, left = crop_window(lambda top, left: window(label, top, left), tf.shape(label),
                            crop_size, cat_max_ratio, seed=seed, max_tries=max_tries)
    return window(image, top, left), window(label, top, left)


def random_rescale_crop(
    image: tf.Tensor, label: tf.Tensor, scale: tuple[int, int], crop_size: tuple[int, int],
    ratio_range: tuple[float, float] = (0.5, 2.0), cat_max_ratio: float = 0.75, *,
    rescale_seed: tf.Tensor, crop_seed: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor]:
    """random_rescale then random_crop (SPEC steps 1-2) with the same windows and labels, but
    only the image pixels inside the chosen window are interpolated."""
    shape = tf.shape(label)
    size = tf.stack(keep_ratio_size(shape[0], shape[1], scale,
                                    random_ratio(ratio_range, rescale_seed)))
    label = tf.image.resize(label[..., None], size, method="nearest")[..., 0]

    def label_window(top: tf.Tensor, left: tf.Tensor) -> tf.Tensor:
        return label[top:top + crop_size[0], left:left + crop_size[1]]

    top, left = crop_window(label_window, size, crop_size, cat_max_ratio, seed=crop_seed)
    height, width = tf.minimum(crop_size[0], size[0]), tf.minimum(crop_size[1], size[1])
    return resize_window(image, size, top, left, height, width), label_window(top, left)


def random_flip(
    image: tf.Tensor, label: tf.Tensor, *, seed: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Mirror image and label left-right together with probability 0.5."""
    image, label = tf.convert_to_tensor(image), tf.convert_to_tensor(label)
    flip = tf.random.stateless_uniform([], seed) < 0.5
    return tf.cond(flip, lambda: (tf.reverse(image, [1]), tf.reverse(label, [1])),
                   lambda: (image, label))


def _maybe_apply(
    pixels: tf.Tensor, apply: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
    value_range: tuple[float, float], seed: tf.Tensor,
) -> tf.Tensor:
    """With p = 0.5: apply(pixels, value ~ U(value_range)), clipped back to 0..255."""
    value_seed, coin_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    value = tf.random.stateless_uniform([], value_seed, *value_range)
    coin = tf.random.stateless_uniform([], coin_seed) < 0.5
    return tf.cond(coin, lambda: tf.clip_by_value(apply(pixels, value), 0.0, 255.0),
                   lambda: pixels)




def photometric_distortion(image: tf.Tensor, *, seed: tf.Tensor) -> tf.Tensor:
    """mmseg PhotoMetricDistortion on a float32 0..255 RGB image.

    Brightness, then contrast (first or last at random), saturation and hue, each applied with
    p = 0.5; contrast multiplies the pixels (no mean centring) as mmseg does. TensorFlow's
    saturation and hue kernels are scale-invariant, so they run on 0..255 directly.
    """
    brightness_seed, contrast_seed, saturation_seed, hue_seed, order_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 5))
    hue_turns = HUE_DELTA_DEGREES / 360.0

    def contrast(pixels: tf.Tensor) -> tf.Tensor:
        return _maybe_apply(pixels, tf.multiply, CONTRAST_RANGE, contrast_seed)

    contrast_first = tf.random.stateless_uniform([], order_seed) < 0.5
    image = _maybe_apply(tf.cast(image, tf.float32), tf.add,
                         (-BRIGHTNESS_DELTA, BRIGHTNESS_DELTA), brightness_seed)
    image = tf.cond(contrast_first, lambda: contrast(image), lambda: image)
    image = _maybe_apply(image, tf.image.adjust_saturation, SATURATION_RANGE, saturation_seed)
    image = _maybe_apply(image, tf.image.adjust_hue, (-hue_turns, hue_turns), hue_seed)
    return tf.cond(contrast_first, lambda: image, lambda: contrast(image))


def normalize(image: tf.Tensor) -> tf.Tensor:
    """Subtract the ImageNet RGB mean and divide by the std the reference weights expect.

    Written as a diagonal 3x3 matmul plus bias_add: TensorFlow's generic broadcast of a
    3-vector over the pixels was 3x slower, the largest single cost of a training sample.
    """
    image = tf.cast(image, tf.float32)
    inverse_std = 1.0 / tf.constant(IMAGE_STD)
    scaled = tf.matmul(tf.reshape(image, [-1, 3]), tf.linalg.diag(inverse_std))
    shifted = tf.nn.bias_add(scaled, -tf.constant(IMAGE_MEAN) * inverse_std)
    return tf.reshape(shifted, tf.shape(image))


def pad_to_size(
    image: tf.Tensor, label: tf.Tensor, crop_size: tuple[int, int]
) -> tuple[tf.Tensor, tf.Tensor]:
    """Pad bottom/right up to crop_size: image with 0, label with 255 (ignored by the loss)."""
    shape = tf.shape(label)
    pad_height = tf.maximum(crop_size[0] - shape[0], 0)
    pad_width = tf.maximum(crop_size[1] - shape[1], 0)
    image = tf.pad(image, [[0, pad_height], [0, pad_width], [0, 0]])
    label = tf.pad(label, [[0, pad_height], [0, pad_width]], constant_values=IGNORE_INDEX)
    return image, label
