"""The training augmentations of docs/recipe.md as graph-safe TensorFlow ops
(mmsegmentation semantics).

Randomness is stateless: every random function takes an explicit `seed` (int32/int64 tensor
of shape [2]), so the same seed always gives the same sample, which makes resumed runs
reproduce uninterrupted ones. Labels are only ever resized with nearest neighbour, so they
never hold a value that was not in the source.

The training pipeline runs `random_train_window`, recipe steps 1-6 fused into one computation
of the crop's pixels. The step-by-step transforms it must equal (random_rescale, random_crop,
random_flip, photometric_distortion, normalize, pad_to_size) are the tests' oracle and live
next to them, in tests/transforms_oracle.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import tensorflow as tf

from pspnet_tf.data.descriptors import IGNORE_INDEX

IMAGE_MEAN = (123.675, 116.28, 103.53)
IMAGE_STD = (58.395, 57.12, 57.375)

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


def _resize_label(label: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """Nearest-neighbour resize of an HxW label (no new values)."""
    return tf.image.resize(label[..., None], size, method="nearest")[..., 0]


def random_ratio(ratio_range: tuple[float, float], seed: tf.Tensor) -> tf.Tensor:
    """The rescale ratio ~ U(ratio_range) for `seed`."""
    return tf.random.stateless_uniform([], seed, ratio_range[0], ratio_range[1], tf.float64)


def nearest_indices(in_size: tf.Tensor, out_size: tf.Tensor) -> tf.Tensor:
    """Source index of each output pixel of tf.image.resize(..., method="nearest") along one
    axis (resizing in_size pixels to out_size)."""
    return _nearest_source(tf.range(out_size), in_size, out_size)


def _nearest_source(positions: tf.Tensor, in_size: tf.Tensor, out_size: tf.Tensor) -> tf.Tensor:
    """min(floor((position + 0.5) * in / out), in - 1) in float32, as TensorFlow's kernel."""
    scale = tf.cast(in_size, tf.float32) / tf.cast(out_size, tf.float32)
    centres = tf.cast(positions, tf.float32) + 0.5
    return tf.minimum(tf.cast(tf.floor(centres * scale), tf.int32), in_size - 1)


def window_class_counts(label: tf.Tensor, rows: tf.Tensor, cols: tf.Tensor) -> tf.Tensor:
    """Pixels per class 0..254 (255, ignored, is not counted) of
    tf.gather(tf.gather(label, rows), cols, axis=1) for nondecreasing index vectors, without
    building that window: each source pixel counts as often as it repeats.

    An image upscaled 2x has 4x the pixels of the source rectangle its window reads.
    """
    first_row, first_col = rows[0], cols[0]
    row_repeats = tf.math.bincount(rows - first_row, dtype=tf.float32)
    col_repeats = tf.math.bincount(cols - first_col, dtype=tf.float32)
    pixels = label[first_row:rows[-1] + 1, first_col:cols[-1] + 1]
    repeats = row_repeats[:, None] * col_repeats[None]  # exact below 2**24 window pixels
    counts = tf.math.unsorted_segment_sum(tf.reshape(repeats, [-1]),
                                          tf.reshape(tf.cast(pixels, tf.int32), [-1]), 256)
    return counts[:IGNORE_INDEX]


def _acceptable_crop(counts: tf.Tensor, cat_max_ratio: float) -> tf.Tensor:
    """mmseg's test on a window's class counts: no class covers cat_max_ratio or more of the
    labelled (non-255) pixels.

    For cat_max_ratio <= 1 this also rejects single-class and fully ignored windows, which
    mmseg checks separately.
    """
    total = tf.cast(tf.reduce_sum(counts), tf.float64)
    return tf.cast(tf.reduce_max(counts), tf.float64) < cat_max_ratio * total


def crop_window(
    window_counts: Callable[[tf.Tensor, tf.Tensor], tf.Tensor], shape: tf.Tensor,
    crop_size: tuple[int, int], cat_max_ratio: float = 0.75, *, seed: tf.Tensor,
    max_tries: int = 10,
) -> tuple[tf.Tensor, tf.Tensor]:
    """(top, left) of a random crop_size window in a label of `shape` (h, w).

    `window_counts(top, left)` gives the class counts (0..254) of the label inside a window.
    As in mmseg RandomCrop: up to `max_tries` windows are tested while one class covers
    cat_max_ratio or more of the labelled (non-255) pixels; if all fail, one more window is
    drawn and used as it is.
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
                window_counts(tops[index], lefts[index]), cat_max_ratio),
            lambda index: (index + 1,), (tf.constant(0),))[0]
    else:
        chosen = tf.constant(0)
    return tops[chosen], lefts[chosen]


def _coin(seed: tf.Tensor) -> tf.Tensor:
    """True with probability 0.5."""
    return tf.random.stateless_uniform([], seed) < 0.5


class PhotometricDraws(NamedTuple):
    """The random values of one photometric distortion and whether each step applies."""

    brightness: tf.Tensor
    apply_brightness: tf.Tensor
    contrast: tf.Tensor
    apply_contrast: tf.Tensor
    saturation: tf.Tensor
    apply_saturation: tf.Tensor
    hue: tf.Tensor
    apply_hue: tf.Tensor
    contrast_first: tf.Tensor


def _value_and_coin(value_range: tuple[float, float],
                    seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    value_seed, coin_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    return tf.random.stateless_uniform([], value_seed, *value_range), _coin(coin_seed)


def photometric_draws(seed: tf.Tensor) -> PhotometricDraws:
    """The draws of one photometric distortion for `seed`."""
    brightness_seed, contrast_seed, saturation_seed, hue_seed, order_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 5))
    hue_turns = HUE_DELTA_DEGREES / 360.0
    return PhotometricDraws(
        *_value_and_coin((-BRIGHTNESS_DELTA, BRIGHTNESS_DELTA), brightness_seed),
        *_value_and_coin(CONTRAST_RANGE, contrast_seed),
        *_value_and_coin(SATURATION_RANGE, saturation_seed),
        *_value_and_coin((-hue_turns, hue_turns), hue_seed), _coin(order_seed))


def apply_photometric(image: tf.Tensor, draws: PhotometricDraws) -> tf.Tensor:
    """mmseg PhotoMetricDistortion with the given draws on a float32 0..255 RGB image.

    Brightness, then contrast (first or last), saturation and hue; each step that applies is
    clipped back to 0..255. Contrast multiplies the pixels (no mean centring) as mmseg does.
    TensorFlow's saturation and hue kernels are scale-invariant, so they run on 0..255 directly.
    """

    def step(pixels: tf.Tensor, apply: tf.Tensor,
             adjust: Callable[[tf.Tensor], tf.Tensor]) -> tf.Tensor:
        return tf.cond(apply, lambda: tf.clip_by_value(adjust(pixels), 0.0, 255.0),
                       lambda: pixels)

    image = step(image, draws.apply_brightness, lambda pixels: pixels + draws.brightness)
    image = step(image, draws.apply_contrast & draws.contrast_first,
                 lambda pixels: pixels * draws.contrast)
    image = step(image, draws.apply_saturation,
                 lambda pixels: tf.image.adjust_saturation(pixels, draws.saturation))
    image = step(image, draws.apply_hue, lambda pixels: tf.image.adjust_hue(pixels, draws.hue))
    return step(image, draws.apply_contrast & ~draws.contrast_first,
                lambda pixels: pixels * draws.contrast)


def normalize(image: tf.Tensor) -> tf.Tensor:
    """Subtract the ImageNet RGB mean and divide by the std the reference weights expect."""
    return (tf.cast(image, tf.float32) - tf.constant(IMAGE_MEAN)) / tf.constant(IMAGE_STD)


class _WindowAxis(NamedTuple):
    """How one axis of a training window samples its source rectangle (indices into it)."""

    lower: tf.Tensor  # bilinear: the two source pixels and the weight of the second
    upper: tf.Tensor
    lerp: tf.Tensor
    nearest: tf.Tensor  # nearest neighbour, for the label
    valid: tf.Tensor  # False where the window is padding


def _window_axis(
    source_size: tf.Tensor, size: tf.Tensor, start: tf.Tensor, length: int,
    valid_length: tf.Tensor, flip: tf.Tensor | None = None,
) -> tuple[_WindowAxis, tf.Tensor]:
    """Window [start, start + length) of one axis resized from source_size to size (mirrored
    within its valid_length when `flip`), and the first source index it reads.

    Bilinear weights follow tf.image.resize (half-pixel centres, edge pixels repeated); nearest
    indices are those of nearest_indices, so labels match a full resize exactly.
    """
    offsets = tf.range(length)
    valid = offsets < valid_length
    if flip is not None:
        offsets = tf.where(flip & valid, valid_length - 1 - offsets, offsets)
    centres = tf.cast(start + offsets, tf.float32) + 0.5
    scale = tf.cast(source_size, tf.float32) / tf.cast(size, tf.float32)
    coords = centres * scale - 0.5
    floor = tf.floor(coords)
    lower = tf.clip_by_value(tf.cast(floor, tf.int32), 0, source_size - 1)
    upper = tf.clip_by_value(tf.cast(tf.math.ceil(coords), tf.int32), 0, source_size - 1)
    nearest = _nearest_source(start + offsets, source_size, size)
    origin = tf.reduce_min(lower)
    return _WindowAxis(lower - origin, upper - origin, coords - floor, nearest - origin,
                       valid), origin


@tf.function(jit_compile=True)
def _render_window(
    image: tf.Tensor, label: tf.Tensor, rows: _WindowAxis, cols: _WindowAxis,
    draws: PhotometricDraws,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Recipe steps 1 and 3-6 (docs/recipe.md) on the source rectangle around a window, as one
    XLA computation: TensorFlow's per-op kernels spent most of a training sample's time in
    memory passes over the 512x512 crop that XLA fuses into a few."""
    left, right = tf.gather(image, cols.lower, axis=1), tf.gather(image, cols.upper, axis=1)
    image = left + (right - left) * cols.lerp[None, :, None]
    top, bottom = tf.gather(image, rows.lower), tf.gather(image, rows.upper)
    image = top + (bottom - top) * rows.lerp[:, None, None]
    image = normalize(apply_photometric(image, draws))
    valid = rows.valid[:, None] & cols.valid[None, :]
    label = tf.gather(tf.gather(label, rows.nearest), cols.nearest, axis=1)
    return (tf.where(valid[..., None], image, 0.0),
            tf.where(valid, label, tf.constant(IGNORE_INDEX, label.dtype)))


def random_train_window(
    image: tf.Tensor, label: tf.Tensor, scale: tuple[int, int], crop_size: tuple[int, int],
    ratio_range: tuple[float, float] = (0.5, 2.0), cat_max_ratio: float = 0.75, *,
    rescale_seed: tf.Tensor, crop_seed: tf.Tensor, flip_seed: tf.Tensor,
    photometric_seed: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Recipe steps 1-6 in one: the sample the step-by-step transforms (random_rescale,
    random_crop, random_flip, photometric_distortion, normalize and pad_to_size, in
    tests/transforms_oracle.py) give with these seeds (the label exactly, the image within
    float rounding), computing only the crop's pixels.

    Crop windows are tested on class counts weighted by how often nearest-neighbour upscaling
    repeats each source pixel, so the rescaled label is never built. When the image shrinks
    it is resized whole first (it is no bigger than the source), so the window reads at most
    crop_size + 2 source pixels per axis, which gives _render_window static shapes.
    """
    shape = tf.shape(label)
    size = tf.stack(keep_ratio_size(shape[0], shape[1], scale,
                                    random_ratio(ratio_range, rescale_seed)))
    shrink = tf.reduce_any(size < shape)
    label = tf.cond(shrink, lambda: _resize_label(label, size), lambda: label)
    source = tf.shape(label)
    rows, cols = nearest_indices(source[0], size[0]), nearest_indices(source[1], size[1])

    def window_counts(top: tf.Tensor, left: tf.Tensor) -> tf.Tensor:
        return window_class_counts(label, rows[top:top + crop_size[0]],
                                   cols[left:left + crop_size[1]])

    top, left = crop_window(window_counts, size, crop_size, cat_max_ratio, seed=crop_seed)
    height, width = tf.minimum(crop_size[0], size[0]), tf.minimum(crop_size[1], size[1])
    row_axis, first_row = _window_axis(source[0], size[0], top, crop_size[0], height)
    col_axis, first_col = _window_axis(source[1], size[1], left, crop_size[1], width,
                                       _coin(flip_seed))
    extent = (crop_size[0] + 2, crop_size[1] + 2)

    def rectangle(pixels: tf.Tensor) -> tf.Tensor:
        pixels = pixels[first_row:first_row + extent[0], first_col:first_col + extent[1]]
        missing = tf.constant(extent) - tf.shape(pixels)[:2]
        padding = [[0, missing[0]], [0, missing[1]]] + [[0, 0]] * (len(pixels.shape) - 2)
        return tf.ensure_shape(tf.pad(pixels, padding), [*extent, *pixels.shape[2:]])

    image = tf.cond(shrink, lambda: rectangle(tf.image.resize(image, size)),
                    lambda: tf.cast(rectangle(image), tf.float32))
    return _render_window(image, rectangle(label), row_axis, col_axis,
                          photometric_draws(photometric_seed))
