"""The training recipe's augmentations (docs/recipe.md steps 1-6) one transform at a time,
as mmsegmentation applies them: the readable oracle that tests hold the package's fused
`pspnet_tf.data.transforms.random_train_window` to.

Each step draws its randomness from the package's own draw functions (random_ratio,
crop_window, photometric_draws, the flip coin), so the same seeds give the same sample;
what is written again here is the pixel work, on the full-size intermediate images.
"""

from __future__ import annotations

import tensorflow as tf

from pspnet_tf.data.transforms import (
    IGNORE_INDEX,
    _coin,
    apply_photometric,
    crop_window,
    keep_ratio_size,
    photometric_draws,
    random_ratio,
)

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
    return image, tf.image.resize(label[..., None], size, method="nearest")[..., 0]


def random_rescale(
    image: tf.Tensor, label: tf.Tensor, scale: tuple[int, int],
    ratio_range: tuple[float, float] = (0.5, 2.0), *, seed: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor]:
    """rescale_keep_ratio with a ratio drawn from U(ratio_range)."""
    return rescale_keep_ratio(image, label, scale, random_ratio(ratio_range, seed))


def class_counts(label: tf.Tensor) -> tf.Tensor:
    """Pixels per class 0..254 (255, ignored, is not counted)."""
    return tf.math.bincount(tf.cast(tf.reshape(label, [-1]), tf.int32), minlength=256,
                            maxlength=256)[:IGNORE_INDEX]


def random_crop(
    image: tf.Tensor, label: tf.Tensor, crop_size: tuple[int, int],
    cat_max_ratio: float = 0.75, *, seed: tf.Tensor, max_tries: int = 10,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Image and label cut to a crop_window (crop_size, cut to the image where smaller)."""
    image, label = tf.convert_to_tensor(image), tf.convert_to_tensor(label)
    crop_height, crop_width = crop_size

    def window(tensor: tf.Tensor, top: tf.Tensor, left: tf.Tensor) -> tf.Tensor:
        return tensor[top:top + crop_height, left:left + crop_width]

    top, left = crop_window(lambda top, left: class_counts(window(label, top, left)),
                            tf.shape(label), crop_size, cat_max_ratio, seed=seed,
                            max_tries=max_tries)
    return window(image, top, left), window(label, top, left)


def random_flip(
    image: tf.Tensor, label: tf.Tensor, *, seed: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Mirror image and label left-right together with probability 0.5."""
    image, label = tf.convert_to_tensor(image), tf.convert_to_tensor(label)
    return tf.cond(_coin(seed), lambda: (tf.reverse(image, [1]), tf.reverse(label, [1])),
                   lambda: (image, label))


def photometric_distortion(image: tf.Tensor, *, seed: tf.Tensor) -> tf.Tensor:
    """mmseg PhotoMetricDistortion (see apply_photometric) with the draws of `seed`."""
    return apply_photometric(tf.cast(image, tf.float32), photometric_draws(seed))


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
