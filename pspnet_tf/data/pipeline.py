"""tf.data input pipelines: the deterministic, resumable training stream and the eval stream.

The training schedule is fixed up front: which sample fills each slot of each global step
comes from `train_sample_order`, and each sample's augmentation seed from (seed, slot). So
starting at step k yields exactly the batches k, k+1, ... of an uninterrupted run.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from pspnet_tf.data import transforms
from pspnet_tf.data.datasets import SegmentationDataset
from pspnet_tf.errors import UserError


def steps_per_epoch(dataset: SegmentationDataset, global_batch_size: int) -> int:
    """Full global batches per epoch (the remainder of each shuffled epoch is dropped)."""
    steps = len(dataset.samples) // global_batch_size
    if steps == 0:
        raise UserError(f"split {dataset.split} has {len(dataset.samples)} images, fewer than "
                        f"the batch size {global_batch_size}; lower --batch_size")
    return steps


def train_sample_order(
    num_samples: int, steps_per_epoch: int, global_batch_size: int, epochs: int, seed: int
) -> np.ndarray:
    """Sample indices for every slot of the schedule: one permutation per epoch, truncated.

    Each epoch's permutation depends only on (seed, epoch), so it can be rebuilt at any time.
    """
    per_epoch = steps_per_epoch * global_batch_size
    if per_epoch > num_samples:
        raise ValueError(f"{steps_per_epoch} steps of {global_batch_size} need {per_epoch} "
                         f"samples per epoch but there are only {num_samples}")
    epochs_order = [np.random.default_rng((seed, epoch)).permutation(num_samples)[:per_epoch]
                    for epoch in range(epochs)]
    return np.concatenate([np.zeros(0, np.int64), *epochs_order]).astype(np.int64)


def _load(dataset: SegmentationDataset, index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Decode one sample in Python (cv2/PIL release the GIL, so parallel map calls overlap)."""
    image, label = tf.numpy_function(lambda i: dataset.load(int(i)), [index],
                                     (tf.uint8, tf.uint8), stateful=False)
    return tf.ensure_shape(image, [None, None, 3]), tf.ensure_shape(label, [None, None])


def _augment(
    image: tf.Tensor, label: tf.Tensor, seed: tf.Tensor, *, crop_size: tuple[int, int],
    scale: tuple[int, int], ratio_range: tuple[float, float], cat_max_ratio: float,
) -> tuple[tf.Tensor, tf.Tensor]:
    """SPEC.md training steps 1-6, in order, each with its own seed split from `seed`."""
    rescale_seed, crop_seed, flip_seed, photo_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 4))
    image, label = transforms.random_rescale(image, label, scale, ratio_range, seed=rescale_seed)
    image, label = transforms.random_crop(image, label, crop_size, cat_max_ratio, seed=crop_seed)
    image, label = transforms.random_flip(image, label, seed=flip_seed)
    image = transforms.normalize(transforms.photometric_distortion(image, seed=photo_seed))
    image, label = transforms.pad_to_size(image, label, crop_size)
    return (tf.ensure_shape(image, [*crop_size, 3]),
            tf.ensure_shape(tf.cast(label, tf.int32), list(crop_size)))


def build_train_dataset(
    dataset: SegmentationDataset, *, crop_size: tuple[int, int], scale: tuple[int, int],
    global_batch_size: int, epochs: int, seed: int, start_step: int = 0,
    end_step: int | None = None, ratio_range: tuple[float, float] = (0.5, 2.0),
    cat_max_ratio: float = 0.75,
) -> tf.data.Dataset:
    """Batches (image float32 [B, h, w, 3] normalised, label int32 [B, h, w]) for global steps
    [start_step, end_step) of the whole `epochs`-long schedule (end_step None = its end)."""
    steps = steps_per_epoch(dataset, global_batch_size)
    total_steps = steps * epochs
    end_step = total_steps if end_step is None else end_step
    if not 0 <= start_step <= end_step <= total_steps:
        raise ValueError(f"steps [{start_step}, {end_step}) are outside the schedule's "
                         f"{total_steps} steps ({epochs} epochs of {steps})")
    order = train_sample_order(len(dataset.samples), steps, global_batch_size, epochs, seed)
    slots = np.arange(start_step * global_batch_size, end_step * global_batch_size,
                      dtype=np.int64)
    crop_size, scale = tuple(crop_size), tuple(scale)

    def load_and_augment(index: tf.Tensor, slot: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image, label = _load(dataset, index)
        sample_seed = tf.stack([tf.constant(seed, tf.int64), slot])
        return _augment(image, label, sample_seed, crop_size=crop_size, scale=scale,
                        ratio_range=ratio_range, cat_max_ratio=cat_max_ratio)

    return (tf.data.Dataset.from_tensor_slices((order[slots], slots))
            .map(load_and_augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(global_batch_size, drop_remainder=True)
            .prefetch(tf.data.AUTOTUNE))


def build_eval_dataset(dataset: SegmentationDataset) -> tf.data.Dataset:
    """(image uint8 [H, W, 3], label int32 [H, W]) at original size, unbatched, in split order."""

    def load(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image, label = _load(dataset, index)
        return image, tf.cast(label, tf.int32)

    return (tf.data.Dataset.range(len(dataset.samples))
            .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .prefetch(tf.data.AUTOTUNE))
