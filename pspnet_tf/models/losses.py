"""Pixel-wise softmax cross-entropy with an ignore label, as the PSPNet references train with,
optionally class-weighted and with online hard-example mining (mmseg's OHEMPixelSampler)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from pspnet_tf.data.descriptors import IGNORE_INDEX


@keras.saving.register_keras_serializable(package="pspnet_tf")
class SegmentationCrossEntropy(keras.losses.Loss):
    """Softmax cross-entropy averaged over the pixels whose label is not `ignore_index`.

    `call` returns that mean as a scalar (0 when every pixel is ignored). Keras' own
    `Loss.__call__` passes a scalar through untouched, i.e. it would NOT apply the
    1/num_replicas factor that its reductions normally add and that the trainer undoes
    when it reports the loss; gradients are then summed over replicas, so the update
    would be num_replicas times too large. `__call__` therefore applies that factor
    itself inside a multi-replica context, giving the PyTorch DDP gradient: the mean
    over replicas of each replica's mean-over-valid-pixels gradient.

    Labels must lie in [0, num_classes) or equal `ignore_index`; TensorFlow's sparse
    cross-entropy raises on other labels on the CPU but returns NaN on a GPU, and
    `SegmentationMetrics` reports them.

    `class_weights` (one number per class) multiplies each pixel's cross-entropy by its
    true class's weight; `ohem_threshold` > 0 keeps only the hard pixels, with mmseg's
    `OHEMPixelSampler(thresh, min_kept)` rule (`ohem_keep_mask`). As in mmseg (its
    `avg_non_ignore=True`), the sum of the weighted, kept pixels' losses is divided by the
    number of labelled pixels, so that without weights and OHEM this is the plain mean.
    """

    def __init__(
        self,
        ignore_index: int = IGNORE_INDEX,
        name: str = "segmentation_cross_entropy",
        *,
        class_weights: Sequence[float] | None = None,
        ohem_threshold: float = 0.0,
        ohem_min_kept: int = 100000,
        **kwargs: Any,
    ) -> None:
        reduction = kwargs.pop("reduction", "sum_over_batch_size")
        if reduction != "sum_over_batch_size":
            raise ValueError(
                "SegmentationCrossEntropy always averages over labelled pixels; "
                f"reduction={reduction!r} is not supported"
            )
        super().__init__(name=name, reduction=reduction, **kwargs)
        self.ignore_index = int(ignore_index)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        if not 0.0 <= ohem_threshold <= 1.0:
            raise ValueError(f"ohem_threshold must lie in [0, 1] (0 = off), got {ohem_threshold}")
        if ohem_min_kept < 0:
            raise ValueError(f"ohem_min_kept must be at least 0, got {ohem_min_kept}")
        self.ohem_threshold = float(ohem_threshold)
        self.ohem_min_kept = int(ohem_min_kept)

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> tf.Tensor:
        """Compute the loss, scaled for the replica count like Keras' built-in losses."""
        if sample_weight is not None:
            raise ValueError(
                "SegmentationCrossEntropy does not support sample weights; mark pixels "
                f"to leave out with the label {self.ignore_index} instead"
            )
        with tf.name_scope(self.name):
            loss = self.call(y_true, y_pred)
            replica = tf.distribute.get_replica_context()
            if replica is not None and replica.num_replicas_in_sync > 1:
                loss = loss * (1.0 / replica.num_replicas_in_sync)
            return loss

    def call(self, y_true: Any, y_pred: Any) -> tf.Tensor:
        """(Weighted, OHEM-selected) cross-entropy summed over the counted pixels, divided
        by the labelled pixels' count; computed in float32."""
        logits = tf.cast(y_pred, tf.float32)
        labels = tf.cast(y_true, tf.int32)
        if labels.shape.rank == logits.shape.rank:
            labels = tf.squeeze(labels, axis=-1)
        valid = tf.not_equal(labels, self.ignore_index)
        safe_labels = tf.where(valid, labels, tf.zeros_like(labels))
        per_pixel = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=safe_labels, logits=logits
        )
        if self.class_weights is not None:
            weights = tf.constant(self.class_weights, tf.float32)
            per_pixel = per_pixel * tf.gather(weights, safe_labels)
        counted = valid
        if self.ohem_threshold > 0.0:
            counted = ohem_keep_mask(logits, safe_labels, valid, self.ohem_threshold,
                                     self.ohem_min_kept)
        per_pixel = tf.where(counted, per_pixel, tf.zeros_like(per_pixel))
        num_valid = tf.reduce_sum(tf.cast(valid, tf.float32))
        return tf.math.divide_no_nan(tf.reduce_sum(per_pixel), num_valid)

    def get_config(self) -> dict[str, Any]:
        """Serialisable arguments, so compiled models save and reload."""
        config = super().get_config()
        config.update(ignore_index=self.ignore_index, class_weights=self.class_weights,
                      ohem_threshold=self.ohem_threshold, ohem_min_kept=self.ohem_min_kept)
        return config


def ohem_keep_mask(logits: tf.Tensor, labels: tf.Tensor, valid: tf.Tensor, threshold: float,
                   min_kept: int) -> tf.Tensor:
    """mmseg's `OHEMPixelSampler(thresh=threshold, min_kept=min_kept)`: the labelled pixels
    whose softmax probability of the true class is below max(threshold, p_k), where p_k is
    the (min(min_kept * batch, valid - 1))-th smallest such probability in the batch (0
    when no pixel is labelled), so that at least min_kept pixels per image are kept when
    the batch has them. No gradient flows through the selection.

    `logits` is [batch, ..., classes] float32, `labels` the int32 labels with ignored pixels
    already replaced by any class, `valid` where a pixel is labelled.
    """
    probs = tf.stop_gradient(tf.nn.softmax(logits, axis=-1))
    true_prob = tf.gather(probs, labels, axis=-1, batch_dims=labels.shape.rank)
    # Unlabelled pixels sort last (probabilities are at most 1), so the sorted valid ones lead.
    ranked = tf.sort(tf.reshape(tf.where(valid, true_prob, 2.0 * tf.ones_like(true_prob)), [-1]))
    num_valid = tf.reduce_sum(tf.cast(valid, tf.int32))
    batch_kept = min_kept * tf.shape(labels)[0]
    index = tf.minimum(batch_kept, num_valid - 1)
    min_threshold = tf.where(num_valid > 0, tf.gather(ranked, tf.maximum(index, 0)), 0.0)
    return tf.logical_and(valid, true_prob < tf.maximum(min_threshold, threshold))
