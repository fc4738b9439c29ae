"""Whole-dataset evaluation: predictions at the original size, one confusion matrix."""

from collections.abc import Callable
from typing import Protocol

import keras
import numpy as np

from pspnet_tf.data.datasets import SegmentationDataset
from pspnet_tf.data.pipeline import build_eval_dataset
from pspnet_tf.evaluation.metrics import SegmentationMetrics

SampleCallback = Callable[[int, np.ndarray, np.ndarray, np.ndarray], None]


class LabelPredictor(Protocol):
    """Anything that maps a uint8 [H, W, 3] RGB image to int class ids [H, W]."""

    def predict(self, image: np.ndarray) -> np.ndarray: ...


def evaluate(predictor: LabelPredictor, dataset: SegmentationDataset, verbose: bool = True,
             on_sample: SampleCallback | None = None) -> dict:
    """Evaluates every sample of `dataset`; returns the metrics summary dict.

    `on_sample(index, image, label, prediction)` sees each sample, e.g. to keep a few
    for image summaries.
    """
    metric = SegmentationMetrics(dataset.num_classes, from_logits=False)
    progress = keras.utils.Progbar(len(dataset.samples), verbose=1 if verbose else 0,
                                   unit_name="image")
    for index, (image, label) in enumerate(build_eval_dataset(dataset)):
        prediction = predictor.predict(image)
        metric.update_state(label[np.newaxis], prediction[np.newaxis])
        if on_sample is not None:
            on_sample(index, image.numpy(), label.numpy(), prediction)
        progress.update(index + 1)
    return metric.summary(dataset.class_names)
