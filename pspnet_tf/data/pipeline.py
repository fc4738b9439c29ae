"""tf.data input pipelines: the deterministic, resumable training stream and the eval stream.

The training schedule is fixed up front: which sample fills each slot of each global step
comes from `train_sample_order`, and each sample's augmentation seed from (seed, slot). So
starting at step k yields exactly the batches k, k+1, ... of an uninterrupted run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import tensorflow as tf
from absl import logging

from pspnet_tf.data import transforms
from pspnet_tf.data.datasets import SegmentationDataset
from pspnet_tf.errors import ParameterError, UserError


def steps_per_epoch(dataset: SegmentationDataset, global_batch_size: int) -> int:
    """Full global batches per epoch (the remainder of each shuffled epoch is dropped)."""
    steps = len(dataset.samples) // global_batch_size
    if steps == 0:
        raise ParameterError("split {split} has {count} images, fewer than the {size} of one "
                             "training step ({batch_size} x {gradient_accumulation_steps}); "
                             "lower either", split=dataset.split,
                             count=len(dataset.samples), size=global_batch_size)
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


def _load(load: Callable[[int], tuple[np.ndarray, np.ndarray]],
          index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Decode one sample in Python (cv2/PIL release the GIL, so parallel map calls overlap)."""
    image, label = tf.numpy_function(lambda i: load(int(i)), [index],
                                     (tf.uint8, tf.uint8), stateful=False)
    return tf.ensure_shape(image, [None, None, 3]), tf.ensure_shape(label, [None, None])


class BadSampleSkipper:
    """Loads sample i or, when it fails to decode, the next loadable sample after it.

    The replacement depends only on i and on which files are bad, so batches stay full and a
    resumed run still sees the batches an uninterrupted one would. Each bad file is logged
    once with its name and the running count (also in `bad_samples`).
    """

    def __init__(self, dataset: SegmentationDataset) -> None:
        self.dataset = dataset
        self.bad_samples: set[int] = set()
        self._lock = threading.Lock()

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        count = len(self.dataset.samples)
        for offset in range(count):
            candidate = (index + offset) % count
            if candidate in self.bad_samples:
                continue
            try:
                return self.dataset.load(candidate)
            except UserError as error:
                self._record(candidate, error)
        raise UserError(f"no sample of split {self.dataset.split} can be loaded; run "
                        "pspnet-verify on the dataset")

    def _record(self, index: int, error: UserError) -> None:
        with self._lock:
            new = index not in self.bad_samples
            self.bad_samples.add(index)
            total = len(self.bad_samples)
        if new:
            logging.warning("skipping bad sample %d (%d skipped so far, replaced by the next "
                            "good one): %s", index, total, error)


def _augment(
    image: tf.Tensor, label: tf.Tensor, seed: tf.Tensor, *, crop_size: tuple[int, int],
    scale: tuple[int, int], ratio_range: tuple[float, float], cat_max_ratio: float,
) -> tuple[tf.Tensor, tf.Tensor]:
    """The training steps 1-6 of docs/recipe.md, in order, each with its own seed split from
    `seed`."""
    rescale_seed, crop_seed, flip_seed, photometric_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 4))
    image, label = transforms.random_train_window(
        image, label, scale, crop_size, ratio_range, cat_max_ratio, rescale_seed=rescale_seed,
        crop_seed=crop_seed, flip_seed=flip_seed, photometric_seed=photometric_seed)
    return (tf.ensure_shape(image, [*crop_size, 3]),
            tf.ensure_shape(tf.cast(label, tf.int32), list(crop_size)))


def build_train_dataset(
    dataset: SegmentationDataset, *, crop_size: tuple[int, int], scale: tuple[int, int],
    global_batch_size: int, epochs: int, seed: int, start_step: int = 0,
    end_step: int | None = None, ratio_range: tuple[float, float] = (0.5, 2.0),
    cat_max_ratio: float = 0.75, skip_bad_samples: bool = False,
) -> tf.data.Dataset:
    """Batches (image float32 [B, h, w, 3] normalised, label int32 [B, h, w]) for global steps
    [start_step, end_step) of the whole `epochs`-long schedule (end_step None = its end).

    A sample that fails to decode stops the run with an error naming its file, unless
    `skip_bad_samples`: then it is logged and replaced (see BadSampleSkipper)."""
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
    load = BadSampleSkipper(dataset).load if skip_bad_samples else dataset.load

    # Not converted by AutoGraph: the transforms branch with tf.cond / tf.while_loop, never on
    # a tensor in Python, and the conversion was most of the time this function took.
    @tf.autograph.experimental.do_not_convert
    def load_and_augment(index: tf.Tensor, slot: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image, label = _load(load, index)
        sample_seed = tf.stack([tf.constant(seed, tf.int64), slot])
        return _augment(image, label, sample_seed, crop_size=crop_size, scale=scale,
                        ratio_range=ratio_range, cat_max_ratio=cat_max_ratio)

    return (tf.data.Dataset.from_tensor_slices((order[slots], slots))
            .map(load_and_augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(global_batch_size, drop_remainder=True)
            .prefetch(tf.data.AUTOTUNE)
            .with_options(distribution_options()))


def distribution_options() -> tf.data.Options:
    """DATA auto-sharding, stated instead of left to AUTO.

    Under MultiWorkerMirroredStrategy, Keras cuts every global batch into one piece per
    replica and DATA sharding hands each worker only its own replicas' pieces, so the workers
    share each global batch without duplicates. AUTO would first try FILE sharding, which this
    from_tensor_slices dataset cannot use; OFF would give every worker every piece. Each worker
    still decodes the whole global batch and keeps its share.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options


def build_eval_dataset(dataset: SegmentationDataset) -> tf.data.Dataset:
    """(image uint8 [H, W, 3], label int32 [H, W]) at original size, unbatched, in split order."""

    @tf.autograph.experimental.do_not_convert
    def load(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image, label = _load(dataset.load, index)
        return image, tf.cast(label, tf.int32)

    return (tf.data.Dataset.range(len(dataset.samples))
            .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .prefetch(tf.data.AUTOTUNE))
