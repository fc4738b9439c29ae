"""Class weights for the loss: given per class, or `auto` from the training split's pixel
frequencies, computed once and kept in run_dir/class_weights.json so a resume reuses them
(a run that stopped before its first checkpoint trained with none, so its rerun counts them
again: its data may have been fixed since).

`auto` uses ENet's inverse-log weighting (Paszke et al. 2016), w_c = 1 / ln(1.02 + p_c) with
p_c the fraction of labelled training pixels of class c, then scales all weights so that
sum_c p_c w_c = 1 (the average pixel's weight is 1, so the learning rate keeps its meaning).
Unlike median-frequency balancing (median(p) / p_c), it is bounded (at most 1 / ln(1.02),
about 50 times the weight of a class covering every pixel) for rare or absent classes.
"""

from __future__ import annotations

import json
import os

import numpy as np

from pspnet_tf.data.datasets import SegmentationDataset
from pspnet_tf.errors import UserError
from pspnet_tf.evaluation.tables import write_json
from pspnet_tf.training.run_dir import holds_checkpoints

CLASS_WEIGHTS_FILE = "class_weights.json"
AUTO = "auto"


def inverse_log_weights(pixel_counts: np.ndarray, c: float = 1.02) -> np.ndarray:
    """ENet's 1 / ln(c + p_class), scaled so that the pixel-weighted mean weight is 1."""
    frequencies = pixel_counts / max(int(pixel_counts.sum()), 1)
    weights = 1.0 / np.log(c + frequencies)
    mean = float((frequencies * weights).sum())
    return weights / mean if mean > 0 else weights


def pixel_counts(dataset: SegmentationDataset) -> np.ndarray:
    """Labelled pixels per class over every sample of `dataset`."""
    counts = np.zeros(256, np.int64)
    for index in range(len(dataset.samples)):
        counts += np.bincount(dataset.load(index)[1].ravel(), minlength=256)
    return counts[:dataset.num_classes]


def parse_class_weights(text: str, num_classes: int) -> list[float] | None:
    """None for "", else the `num_classes` non-negative numbers of a comma list (not auto)."""
    if not text:
        return None
    try:
        weights = [float(value) for value in text.split(",")]
    except ValueError:
        weights = []
    if len(weights) != num_classes or min(weights) < 0 or not np.all(np.isfinite(weights)):
        raise UserError(f"class_weights={text!r} is not {num_classes} non-negative numbers "
                        f"(one per class, comma-separated) nor {AUTO!r} nor \"\"")
    return weights


def resolve_class_weights(text: str, train_set: SegmentationDataset,
                          run_dir: str) -> list[float] | None:
    """The weights `text` asks for; `auto` reads run_dir's class_weights.json when the run
    trained with it (`_trained_with`), else counts the training split's pixels (then
    `save_class_weights` keeps them)."""
    if text != AUTO:
        return parse_class_weights(text, train_set.num_classes)
    path = _trained_with(run_dir)
    if path:
        with open(path) as saved:
            weights = json.load(saved)["weights"]
        if len(weights) != train_set.num_classes:
            raise UserError(f"{path} holds {len(weights)} class weights but the dataset has "
                            f"{train_set.num_classes} classes; remove it to count them again")
        return weights
    return inverse_log_weights(pixel_counts(train_set)).tolist()


def save_class_weights(weights: list[float], train_set: SegmentationDataset,
                       run_dir: str) -> None:
    """Writes run_dir/class_weights.json (class names and weights) unless the run trained
    with the one there."""
    if not _trained_with(run_dir):
        write_json({"formula": "1/ln(1.02 + p_c), scaled to sum_c p_c w_c = 1",
                    "classes": list(train_set.class_names), "weights": weights},
                   os.path.join(run_dir, CLASS_WEIGHTS_FILE))


def _trained_with(run_dir: str) -> str | None:
    """run_dir's class_weights.json when the run trained with it (it holds checkpoints),
    else None (no file, or one left by a start that stopped before its first checkpoint)."""
    path = os.path.join(run_dir, CLASS_WEIGHTS_FILE)
    return path if os.path.exists(path) and holds_checkpoints(run_dir) else None
