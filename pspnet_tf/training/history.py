"""Per-epoch history (history.csv, TensorBoard epoch scalars) that survives interruptions.

Keras' CSVLogger and TensorBoard callbacks append whatever `fit` reports: after a resume
mid-epoch that is the mean over the steps run since the resume only, and an epoch whose
row was written before a kill is written again. Here the epoch's loss sums are part of
every checkpoint (EpochLosses), so a resumed epoch still reports the mean over all of its
steps, and each epoch's row is keyed by epoch: history.csv is rewritten atomically with
that row replaced, and its TensorBoard scalars are written once, at step = epoch.
"""

import csv
import os

import keras
import numpy as np
import tensorflow as tf

from pspnet_tf.atomic import write_atomically


class EpochLosses(keras.callbacks.Callback):
    """Sums of the epoch's per-step losses so far, in variables saved with each checkpoint.

    Keras reports at each batch end the mean over the batches of the current `fit` epoch;
    times the number of those batches that is their sum, to which the sum carried over from
    before a mid-epoch resume (restored from the checkpoint) is added.
    """

    def __init__(self, keys: tuple[str, ...], steps_per_epoch: int) -> None:
        super().__init__()
        self.keys = keys
        self._steps_per_epoch = steps_per_epoch
        self.sums = tf.Variable(np.zeros(len(keys)), dtype=tf.float64, trainable=False,
                                name="epoch_loss_sums")
        self.steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch_loss_steps")
        self._carried_sums = np.zeros(len(keys))
        self._carried_steps = 0

    def checkpointed(self) -> dict[str, tf.Variable]:
        """The variables to save and restore with the model."""
        return {"epoch_loss_sums": self.sums, "epoch_loss_steps": self.steps}

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if int(self.model.optimizer.iterations.numpy()) % self._steps_per_epoch:
            # Resumed mid-epoch: the restored variables hold the epoch's earlier steps.
            self._carried_sums, self._carried_steps = self.sums.numpy(), int(self.steps.numpy())
        else:
            self._carried_sums, self._carried_steps = np.zeros(len(self.keys)), 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        done = batch + 1
        self.sums.assign(self._carried_sums + [float(logs[key]) * done for key in self.keys])
        self.steps.assign(self._carried_steps + done)

    def means(self) -> dict[str, float]:
        steps = int(self.steps.numpy())
        return {key: float(total) / steps for key, total in zip(self.keys, self.sums.numpy())}


class EpochHistory(keras.callbacks.Callback):
    """history.csv (one row per epoch, column `epoch` counted from 0 as Keras does) and
    TensorBoard scalars `epoch_<name>` under train/ and validation/ at step = epoch.

    Put it after the callbacks that add to the epoch logs (learning rate, validation).
    """

    def __init__(self, csv_path: str, tensorboard_dir: str, losses: EpochLosses) -> None:
        super().__init__()
        self._csv_path = csv_path
        self._tensorboard_dir = tensorboard_dir
        self._losses = losses
        self._rows = _read_rows(csv_path)
        self._writers: dict[str, tf.summary.SummaryWriter] = {}

    def has(self, epoch: int) -> bool:
        return epoch in self._rows

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        values = {key: float(value) for key, value in (logs or {}).items()}
        self.record(epoch, {**values, **self._losses.means()})

    def record(self, epoch: int, values: dict[str, float]) -> None:
        """Writes `epoch`'s TensorBoard scalars, then its history.csv row (the row marks
        the epoch as done, so a kill between the two repeats only the scalars)."""
        for key, value in sorted(values.items()):
            validation = key.startswith("val_")
            writer = self._writer("validation" if validation else "train")
            with writer.as_default():
                tf.summary.scalar(f"epoch_{key[4:] if validation else key}", value, step=epoch)
        for writer in self._writers.values():
            writer.flush()
        self._rows[epoch] = values
        _write_rows(self._rows, self._csv_path)

    def _writer(self, name: str) -> tf.summary.SummaryWriter:
        if name not in self._writers:
            self._writers[name] = tf.summary.create_file_writer(
                os.path.join(self._tensorboard_dir, name))
        return self._writers[name]


def _read_rows(path: str) -> dict[int, dict[str, float]]:
    """history.csv's rows by epoch (a later row for the same epoch wins, as in files that
    Keras' CSVLogger appended to); empty when the file does not exist yet."""
    if not os.path.exists(path):
        return {}
    with open(path, newline="") as handle:
        return {int(row.pop("epoch")): {key: float(value) for key, value in row.items() if value}
                for row in csv.DictReader(handle)}


def _write_rows(rows: dict[int, dict[str, float]], path: str) -> None:
    columns = sorted({key for row in rows.values() for key in row})

    def write(target: str) -> None:
        with open(target, "w", newline="") as handle:
            writer = csv.DictWriter(handle, ["epoch", *columns])
            writer.writeheader()
            for epoch in sorted(rows):
                writer.writerow({"epoch": epoch, **rows[epoch]})

    write_atomically(path, write)
