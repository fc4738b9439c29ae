"""Whole-dataset segmentation scores (mIoU, aAcc, mAcc) from one confusion matrix.

The references accumulate intersection and union over the WHOLE dataset before dividing,
so the metric keeps an exact int64 confusion matrix (rows: ground truth, columns:
prediction) rather than averaging per-batch scores.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from pspnet_tf.data.descriptors import IGNORE_INDEX


@keras.saving.register_keras_serializable(package="pspnet_tf")
class SegmentationMetrics(keras.metrics.Metric):
    """Confusion-matrix metric whose `result()` is the dataset mIoU.

    `update_state(y_true, y_pred)` takes labels [B, H, W] (or [B, H, W, 1]) and logits
    [B, H, W, C] (argmax is taken) or, with `from_logits=False`, predicted labels.
    Pixels labelled `ignore_index` are skipped. Any other label (or prediction) outside
    [0, num_classes) is a data error (wrong `num_classes`, a forgotten label mapping):
    `update_state` raises on it, and because XLA compiles that check away the pixels are
    also counted, turning `result()` into NaN and making the numpy accessors raise.

    Under a `tf.distribute` strategy each replica accumulates its own matrix; `result()`
    sums them (an all-reduce when called inside a replica), and the numpy accessors,
    called outside any replica, read the variable's cross-replica sum.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = IGNORE_INDEX,
        name: str = "mIoU",
        from_logits: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.from_logits = bool(from_logits)
        self._confusion = self.add_variable(
            shape=(self.num_classes, self.num_classes),
            initializer="zeros",
            dtype="int64",
            name="confusion_matrix",
        )
        self._out_of_range = self.add_variable(
            shape=(), initializer="zeros", dtype="int64", name="out_of_range_pixels"
        )

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        """Add one batch of pixels to the confusion matrix."""
        if sample_weight is not None:
            raise ValueError(
                "SegmentationMetrics does not support sample weights; mark pixels to "
                f"leave out with the label {self.ignore_index} instead"
            )
        labels = tf.reshape(_label_map(y_true), [-1])
        if self.from_logits:
            predictions = tf.argmax(y_pred, axis=-1, output_type=tf.int32)
        else:
            predictions = _label_map(y_pred)
        predictions = tf.reshape(predictions, [-1])
        labelled = tf.not_equal(labels, self.ignore_index)
        in_range = (
            labelled
            & (labels >= 0)
            & (labels < self.num_classes)
            & (predictions >= 0)
            & (predictions < self.num_classes)
        )
        out_of_range = tf.reduce_sum(tf.cast(labelled & ~in_range, tf.int64))
        tf.debugging.assert_equal(
            out_of_range,
            tf.constant(0, tf.int64),
            message=(
                f"labels or predictions outside [0, {self.num_classes}) that are not the "
                f"ignore label {self.ignore_index}; check num_classes and the label mapping"
            ),
        )
        # unsorted_segment_sum, unlike bincount, has a static output size, which XLA needs.
        counts = tf.math.unsorted_segment_sum(
            tf.cast(in_range, tf.int32),
            tf.where(in_range, labels * self.num_classes + predictions, 0),
            num_segments=self.num_classes * self.num_classes,
        )
        self._confusion.assign_add(
            tf.reshape(tf.cast(counts, tf.int64), (self.num_classes, self.num_classes))
        )
        self._out_of_range.assign_add(out_of_range)

    def result(self) -> tf.Tensor:
        """Dataset mIoU (float32): mean IoU over classes with a non-empty union."""
        confusion, out_of_range = self._summed_state()
        confusion = tf.cast(confusion, tf.float64)
        intersection = tf.linalg.diag_part(confusion)
        union = tf.reduce_sum(confusion, 0) + tf.reduce_sum(confusion, 1) - intersection
        present = union > 0
        iou = tf.math.divide_no_nan(intersection, union)
        num_present = tf.reduce_sum(tf.cast(present, tf.float64))
        miou = tf.reduce_sum(tf.where(present, iou, 0.0)) / num_present
        nan = tf.constant(math.nan, tf.float64)
        return tf.cast(tf.where(out_of_range > 0, nan, miou), tf.float32)

    def confusion_matrix(self) -> np.ndarray:
        """Summed int64 confusion matrix [ground truth, prediction]."""
        out_of_range = int(keras.ops.convert_to_numpy(self._out_of_range))
        if out_of_range:
            raise ValueError(
                f"{out_of_range} pixels had a label or prediction outside "
                f"[0, {self.num_classes}) other than the ignore label "
                f"{self.ignore_index}; check num_classes and the label mapping"
            )
        return np.asarray(keras.ops.convert_to_numpy(self._confusion), dtype=np.int64)

    def per_class_iou(self) -> np.ndarray:
        """IoU per class (float64), NaN for classes absent from labels and predictions."""
        return iou_per_class(self.confusion_matrix())

    def summary(self, class_names: Sequence[str]) -> dict[str, Any]:
        """JSON-ready scores: fractions in [0, 1], None where a score is undefined.

        mIoU, aAcc, mAcc (mean recall), mDice, the IoU per class (`per_class`), precision,
        recall, F1 and Dice per class (`per_class_scores`) and the confusion matrix in
        counts (`confusion_matrix`, rows: ground truth, columns: prediction, in class order).
        """
        if len(class_names) != self.num_classes:
            raise ValueError(
                f"got {len(class_names)} class names for {self.num_classes} classes"
            )
        counts = self.confusion_matrix()
        confusion = counts.astype(np.float64)
        iou = iou_per_class(confusion)
        total = confusion.sum()
        scores = class_scores(confusion)
        return {
            "mIoU": _nanmean_or_none(iou),
            "aAcc": float(np.trace(confusion) / total) if total > 0 else None,
            "mAcc": _nanmean_or_none(scores["recall"]),
            "mDice": _nanmean_or_none(scores["Dice"]),
            "per_class": _by_name(class_names, iou),
            "per_class_scores": {
                str(name): {key: _or_none(values[index]) for key, values in scores.items()}
                for index, name in enumerate(class_names)
            },
            "confusion_matrix": counts.tolist(),
        }

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments, so compiled models save and reload."""
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            ignore_index=self.ignore_index,
            from_logits=self.from_logits,
        )
        return config

    def _summed_state(self) -> tuple[tf.Tensor, tf.Tensor]:
        """Confusion matrix and out-of-range count summed over all replicas."""
        state = (
            tf.convert_to_tensor(self._confusion),
            tf.convert_to_tensor(self._out_of_range),
        )
        replica = tf.distribute.get_replica_context()
        if replica is not None and replica.num_replicas_in_sync > 1:
            state = replica.all_reduce(tf.distribute.ReduceOp.SUM, state)
        return state


def _label_map(labels: Any) -> tf.Tensor:
    """int32 label map, dropping a trailing channel axis of size 1."""
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank == 4 and labels.shape[-1] == 1:
        labels = tf.squeeze(labels, axis=-1)
    return tf.cast(labels, tf.int32)


def iou_per_class(confusion: np.ndarray) -> np.ndarray:
    """IoU per class of a confusion matrix, NaN where the union is empty."""
    confusion = np.asarray(confusion, dtype=np.float64)
    intersection = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - intersection
    return np.divide(
        intersection, union, out=np.full(len(intersection), np.nan), where=union > 0
    )


def class_scores(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 and Dice (float64, NaN where undefined) of a confusion
    matrix [ground truth, prediction]. For pixel sets F1 and Dice are the same number,
    2 TP / (2 TP + FP + FN) (mmseg reports both); undefined when a class is absent from
    labels and predictions alike."""
    confusion = np.asarray(confusion, dtype=np.float64)
    true_positive = np.diag(confusion)
    predicted, labelled = confusion.sum(axis=0), confusion.sum(axis=1)

    def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
        return np.divide(numerator, denominator, out=np.full(len(numerator), np.nan),
                         where=denominator > 0)

    dice = ratio(2 * true_positive, predicted + labelled)
    return {"precision": ratio(true_positive, predicted),
            "recall": ratio(true_positive, labelled), "F1": dice, "Dice": dice}


def _or_none(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def _by_name(class_names: Sequence[str], values: np.ndarray) -> dict[str, float | None]:
    return {str(name): _or_none(value) for name, value in zip(class_names, values)}


def _nanmean_or_none(values: np.ndarray) -> float | None:
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else None
