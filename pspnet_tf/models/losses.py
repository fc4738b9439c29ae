"""Pixel-wise softmax cross-entropy with an ignore label, as the PSPNet references train with."""

from __future__ import annotations

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
    """

    def __init__(
        self,
        ignore_index: int = IGNORE_INDEX,
        name: str = "segmentation_cross_entropy",
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
        """Mean cross-entropy over labelled pixels, computed in float32."""
        logits = tf.cast(y_pred, tf.float32)
        labels = tf.cast(y_true, tf.int32)
        if labels.shape.rank == logits.shape.rank:
            labels = tf.squeeze(labels, axis=-1)
        valid = tf.not_equal(labels, self.ignore_index)
        safe_labels = tf.where(valid, labels, tf.zeros_like(labels))
        per_pixel = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=safe_labels, logits=logits
        )
        per_pixel = tf.where(valid, per_pixel, tf.zeros_like(per_pixel))
        num_valid = tf.reduce_sum(tf.cast(valid, tf.float32))
        return tf.math.divide_no_nan(tf.reduce_sum(per_pixel), num_valid)

    def get_config(self) -> dict[str, Any]:
        """Serialisable arguments, so compiled models save and reload."""
        config = super().get_config()
        config["ignore_index"] = self.ignore_index
        return config
