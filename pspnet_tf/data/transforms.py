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


def random_rescale(
    image: tf.Tensor, label: tf.Tensor, scale: tuple[int, int],
    ratio_range: tuple[float, float] = (0.5, 2.0), *, seed: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor]:
    """rescale_keep_ratio with a ratio drawn from U(ratio_range)."""
    ratio = tf.random.stateless_uniform([], seed, ratio_range[0], ratio_range[1], tf.float64)
    return rescale_keep_ratio(image, label, scale, ratio)


def _acceptable_crop(label: tf.Tensor, cat_max_ratio: float) -> tf.Tensor:
    """mmseg's test: no class covers cat_max_ratio or more of the labelled (non-255) pixels.

    For cat_max_ratio <= 1 this also rejects single-class and fully ignored windows, which
    mmseg checks separately.
    """
    counts = tf.math.bincount(tf.cast(tf.reshape(label, [-1]), tf.int32),
                              minlength=256, maxlength=256)[:IGNORE_INDEX]
    total = tf.cast(tf.reduce_sum(counts), tf.float64)
    return tf.cast(tf.reduce_max(counts), tf.float64) < cat_max_ratio * total


def random_crop(
    image: tf.Tensor, label: tf.Tensor, crop_size: tuple[int, int],
    cat_max_ratio: float = 0.75, *, seed: tf.Tensor, max_tries: int = 10,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Random crop_size (h, w) window, cut to the image where the image is smaller.

    As in mmseg RandomCrop: up to `max_tries` windows are tested while one class covers
    cat_max_ratio or more of the labelled (non-255) pixels; if all fail, one more window is
    drawn and used as it is.
    """
    crop_height, crop_width = crop_size
    image, label = tf.convert_to_tensor(image), tf.convert_to_tensor(label)
    shape = tf.shape(label)
    seed_y, seed_x = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    tops = tf.random.stateless_uniform([max_tries + 1], seed_y, 0,
                                       tf.maximum(shape[0] - crop_height, 0) + 1, tf.int32)
    lefts = tf.random.stateless_uniform([max_tries + 1], seed_x, 0,
                                        tf.maximum(shape[1] - crop_width, 0) + 1, tf.int32)

    def window(tensor: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
        return tensor[tops[index]:tops[index] + crop_height,
                      lefts[index]:lefts[index] + crop_width]

    if cat_max_ratio < 1.0:
        chosen = tf.while_loop(
            lambda index: (index < max_tries) & ~_acceptable_crop(window(label, index),
                                                                  cat_max_ratio),
            lambda index: (index + 1,), (tf.constant(0),))[0]
    else:
        chosen = tf.constant(0)
    return window(image, chosen), window(label, chosen)


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


def _scale_saturation(pixels: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    return tf.image.adjust_saturation(pixels / 255.0, factor) * 255.0


def _shift_hue(pixels: tf.Tensor, turns: tf.Tensor) -> tf.Tensor:
    return tf.image.adjust_hue(pixels / 255.0, turns) * 255.0


def photometric_distortion(image: tf.Tensor, *, seed: tf.Tensor) -> tf.Tensor:
    """mmseg PhotoMetricDistortion on a float32 0..255 RGB image.

    Brightness, then contrast (first or last at random), saturation and hue, each applied with
    p = 0.5; contrast multiplies the pixels (no mean centring) as mmseg does.
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
    image = _maybe_apply(image, _scale_saturation, SATURATION_RANGE, saturation_seed)
    image = _maybe_apply(image, _shift_hue, (-hue_turns, hue_turns), hue_seed)
    return tf.cond(contrast_first, lambda: image, lambda: contrast(image))


def normalize(image: tf.Tensor) -> tf.Tensor:
    """Subtract the ImageNet RGB mean and divide by the std the reference weights expect."""
    return (tf.cast(image, tf.float32) - IMAGE_MEAN) / IMAGE_STD


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
