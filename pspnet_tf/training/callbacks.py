"""Keras callbacks of a training run: checkpoints, learning rate, validation, images."""

import os

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from pspnet_tf.data.datasets import SegmentationDataset
from pspnet_tf.evaluation.evaluator import evaluate
from pspnet_tf.inference.predictor import Predictor
from pspnet_tf.inference.visualize import colorize
from pspnet_tf.training.checkpoints import CheckpointKeeper
from pspnet_tf.training.interrupts import StopRequests


class CheckpointCallback(keras.callbacks.Callback):
    """Checkpoints at every epoch end and, optionally, every N optimizer steps; on a stop
    request (SIGINT/SIGTERM, on any worker), checkpoints the step just finished and raises
    RunInterrupted."""

    def __init__(self, keeper: CheckpointKeeper, every_steps: int = 0,
                 stop: StopRequests | None = None) -> None:
        super().__init__()
        self._keeper = keeper
        self._every_steps = every_steps
        self._stop = stop

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        stopping = self._stop is not None and self._stop.stop_after_step()
        if stopping or (self._every_steps and self._keeper.step % self._every_steps == 0):
            self._keeper.save()
        if stopping:
            self._stop.raise_if_requested(self._keeper.step)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._keeper.save()


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the current learning rate to the epoch logs (and so to TensorBoard)."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["learning_rate"] = float(np.asarray(self.model.optimizer.learning_rate))


class ValidationCallback(keras.callbacks.Callback):
    """Validates with the whole-image protocol every few epochs.

    Puts `val_mIoU`, `val_aAcc` and `val_mAcc` into the epoch logs, writes image / ground
    truth / prediction summaries to TensorBoard, and keeps the latest summary dict.
    """

    def __init__(self, dataset: SegmentationDataset, scale: tuple[int, int], epochs: int,
                 every_epochs: int, log_dir: str | None, num_images: int,
                 stop: StopRequests | None = None) -> None:
        super().__init__()
        self._stop = stop  # checked between images: validating a big split takes minutes
        self._dataset = dataset
        self._scale = scale
        self._epochs = epochs
        self._every_epochs = every_epochs
        # No log_dir (a non-chief worker): no image summaries.
        self._writer = (tf.summary.create_file_writer(os.path.join(log_dir, "validation_images"))
                        if log_dir else None)
        self._num_images = num_images if log_dir else 0
        self.latest: dict | None = None

    def run(self, model: keras.Model) -> dict:
        """Evaluates `model` on the whole validation split and returns the summary."""
        images = []
        step = int(model.optimizer.iterations.numpy())

        def keep(index: int, image: np.ndarray, label: np.ndarray, prediction: np.ndarray) -> None:
            if self._stop is not None:
                self._stop.raise_if_requested(step)
            if index < self._num_images:
                palette = self._dataset.palette
                images.append(np.concatenate(
                    [image, colorize(label, palette), colorize(prediction, palette)], axis=1))

        self.latest = evaluate(Predictor(model, self._scale), self._dataset, verbose=False,
                               on_sample=keep)
        if self._writer:
            with self._writer.as_default():
                for index, panel in enumerate(images):
                    tf.summary.image(f"image_truth_prediction/{index}", panel[np.newaxis],
                                     step=step)
            self._writer.flush()
        return self.latest

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        done = epoch + 1
        if done % self._every_epochs and done != self._epochs:
            return
        summary = self.run(self.model)
        logging.info("epoch %d/%d: val mIoU %.4f, aAcc %.4f, mAcc %.4f", done, self._epochs,
                     summary["mIoU"], summary["aAcc"], summary["mAcc"])
        if logs is not None:
            logs.update({f"val_{key}": summary[key] for key in ("mIoU", "aAcc", "mAcc")})
