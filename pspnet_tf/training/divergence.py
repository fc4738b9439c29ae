"""Stops a run whose loss or weights stopped being finite, or whose loss grew by orders of
magnitude over its recent values, before anything from that step is saved.

A diverged run otherwise trains on for days, writes all-NaN checkpoints and final weights,
and a rerun "resumes" the NaN state. The per-step check reads the loss that Keras already
puts into the batch logs (a Python float there), so it adds no work to the step; weights
are checked only where they are written (CheckpointKeeper.save, the final weights).
"""

import collections
import math
import statistics
from collections.abc import Iterable

import keras
import tensorflow as tf

from pspnet_tf.errors import UserError

DIVERGED_EXIT_STATUS = 3
# The loss values (Keras' running means of the epoch) the growth check compares against.
RECENT_LOSSES = 20


class TrainingDiverged(UserError):
    """The loss or the weights became NaN or infinite; entry points exit with status 3."""

    exit_status = DIVERGED_EXIT_STATUS


def likely_cause(learning_rate: float, mixed_precision: str) -> str:
    """What the user should change, for the divergence message."""
    advice = ("the learning rate is probably too high: start a new --run_dir with a lower "
              f"--learning_rate (now {learning_rate:g})")
    if mixed_precision == "mixed_float16":
        advice += (", or float16 overflowed: try --mixed_precision=float32 or "
                   "--mixed_precision=mixed_bfloat16")
    return advice


def diverged(step: int, what: str, cause: str) -> TrainingDiverged:
    """The exception for a divergence at `step` (train() writes its line to train.log)."""
    message = (f"training diverged at step {step}: {what}; {cause}. Nothing non-finite was "
               "saved; rerunning the same command resumes from the last finite checkpoint "
               "and diverges again")
    return TrainingDiverged(message)


def first_non_finite(variables: Iterable[tf.Variable]) -> str | None:
    """The name of the first variable holding a NaN or an infinity, or None.

    Reduced where the variables live (one boolean per variable comes back, not the weights:
    on a GPU nothing is copied to the host). It runs once per checkpoint, not per step
    (its cost: docs/performance.md).
    """
    floating = [v for v in variables if tf.as_dtype(v.dtype).is_floating]
    finite = [tf.reduce_all(tf.math.is_finite(v)) for v in floating]
    if not finite or bool(tf.reduce_all(finite)):
        return None
    first = next(v for v, ok in zip(floating, finite) if not bool(ok))
    return first.path if hasattr(first, "path") else first.name


def check_finite_weights(variables: Iterable[tf.Variable], step: int, cause: str) -> None:
    """Raises TrainingDiverged instead of letting non-finite `variables` be saved."""
    name = first_non_finite(variables)
    if name is not None:
        raise diverged(step, f"variable {name} holds NaN or infinite values", cause)


class DivergenceGuard(keras.callbacks.Callback):
    """Stops `fit` at the first step whose reported loss is not finite, or (`growth_factor`
    > 0) exceeds `growth_factor` times the median of the last RECENT_LOSSES reported losses.

    Must come before the checkpoint callback, so that the step is not saved first.
    """

    def __init__(self, cause: str, growth_factor: float) -> None:
        super().__init__()
        self._cause = cause
        self._growth_factor = growth_factor
        self._recent: collections.deque[float] = collections.deque(maxlen=RECENT_LOSSES)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        what = None
        if not math.isfinite(loss):
            what = f"the loss is {loss}"
        elif self._growth_factor > 0 and self._recent:
            median = statistics.median(self._recent)
            if loss > self._growth_factor * median:
                what = (f"the loss grew to {loss:.3g}, over {self._growth_factor:g} times the "
                        f"median {median:.3g} of its last {len(self._recent)} values "
                        "(--divergence_factor)")
        if what is not None:
            step = int(self.model.optimizer.iterations.numpy())
            raise diverged(step, what, self._cause)
        self._recent.append(float(loss))
