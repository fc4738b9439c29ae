"""The run's best model by one validation metric, and early stopping; both resumable.

After each validation the chosen metric (`mIoU`, `aAcc`, `mAcc`, or one class's IoU as
`IoU:NAME` or `IoU:INDEX`) is compared with the best so far. A score above the best by more
than `min_delta` rewrites best_model.keras and best_weights.h5 (atomically, in that order);
then the state (best score, its epoch and step, the validations since, whether training
stopped early) is written to best.json, atomically, after every validation. A resumed run
reads best.json back, so it keeps, compares and stops exactly as an uninterrupted run would;
an epoch end that a resumed run repeats (stopped during its validation) is recognised by the
epoch recorded and counted once. Only validations count: with --eval_every_epochs=N (or a
run that validates only at its last epoch) the best is chosen among the epochs validated, and
the patience of early stopping counts validations, not epochs.
"""

import json
import os
import pathlib
from collections.abc import Callable, Sequence

import keras
from absl import logging

from pspnet_tf.atomic import write_atomically
from pspnet_tf.errors import UserError

BEST_MODEL = "best_model.keras"  # the inference model, as final_model.keras
BEST_WEIGHTS = "best_weights.h5"
BEST_STATE = "best.json"
SUMMARY_METRICS = ("mIoU", "aAcc", "mAcc")
_CLASS_PREFIX = "IoU:"


def metric_key(metric: str, class_names: Sequence[str]) -> str:
    """The key of `metric` in a validation summary: one of SUMMARY_METRICS, or the class name
    of `IoU:NAME` / `IoU:INDEX` (a key of its `per_class`); UserError for anything else."""
    if metric in SUMMARY_METRICS:
        return metric
    names = [str(name) for name in class_names]
    if metric.startswith(_CLASS_PREFIX):
        wanted = metric[len(_CLASS_PREFIX):]
        if wanted in names:
            return wanted
        if wanted.isdigit() and int(wanted) < len(names):
            return names[int(wanted)]
    raise UserError(
        f"best_metric={metric} is not a metric of this run; use one of "
        f"{', '.join(SUMMARY_METRICS)}, IoU:NAME or IoU:INDEX with a class of the validation "
        f"split (0-{len(names) - 1}: {', '.join(names[:8])}{', ...' if len(names) > 8 else ''})")


def metric_value(metric: str, class_names: Sequence[str], summary: dict) -> float | None:
    """`metric` in a validation summary (None where it is undefined, e.g. a class absent
    from both labels and predictions)."""
    key = metric_key(metric, class_names)
    return summary[key] if key in SUMMARY_METRICS else summary["per_class"][key]


class BestModelKeeper(keras.callbacks.Callback):
    """Keeps best_model.keras by `metric` and stops training after `patience` validations
    without improvement (0: never). Put it after the validation callback, before the history.

    `latest_summary` gives the validation summary of the epoch just validated; `save_best`
    writes best_model.keras and best_weights.h5 into `run_dir`; None where run_dir is not
    written (a non-chief worker: it keeps the same state, read from the chief's best.json).
    """

    def __init__(self, run_dir: str, metric: str, class_names: Sequence[str],
                 latest_summary: Callable[[], dict | None],
                 save_best: Callable[[keras.Model], None] | None,
                 patience: int = 0, min_delta: float = 0.0) -> None:
        super().__init__()
        metric_key(metric, class_names)  # UserError for a metric of no class
        self._state_path = os.path.join(run_dir, BEST_STATE)
        self._metric, self._class_names = metric, tuple(class_names)
        self._latest_summary = latest_summary
        self._save_best = save_best
        self._patience, self._min_delta = patience, min_delta
        self.state = self._read_state()

    def _read_state(self) -> dict:
        path = self._state_path
        if os.path.exists(path):
            state = json.loads(pathlib.Path(path).read_text())
            if state.get("metric") == self._metric:
                return state
            logging.warning("%s tracks %s, not %s: starting a new best", path,
                            state.get("metric"), self._metric)
        return {"metric": self._metric, "score": None, "epoch": None, "step": None,
                "last_validated_epoch": 0, "validations_without_improvement": 0,
                "stopped_early": False}

    @property
    def stopped_early(self) -> bool:
        return bool(self.state["stopped_early"])

    def summary(self) -> dict:
        """metrics.json's `best`: the metric, its best score and the epoch (counted from 1)
        and step of that score (None each before any defined score)."""
        return {key: self.state[key] for key in ("metric", "score", "epoch", "step",
                                                 "stopped_early")}

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        done = epoch + 1
        if logs is None or "val_mIoU" not in logs or done <= self.state["last_validated_epoch"]:
            return  # not validated, or a repeated epoch end already counted
        score = metric_value(self._metric, self._class_names, self._latest_summary())
        best = self.state["score"]
        state = {**self.state, "last_validated_epoch": done}
        if score is not None and (best is None or score > best + self._min_delta):
            step = int(self.model.optimizer.iterations.numpy())
            state.update(score=score, epoch=done, step=step, validations_without_improvement=0)
            if self._save_best:
                self._save_best(self.model)
            logging.info("epoch %d: new best %s %.4f, saved %s", done, self._metric, score,
                         BEST_MODEL)
        else:
            state["validations_without_improvement"] += 1
        if self._patience and state["validations_without_improvement"] >= self._patience:
            state["stopped_early"] = True
            logging.info("epoch %d: no %s improvement in %d validations, stopping early (best "
                         "%s at epoch %s)", done, self._metric, self._patience, state["score"],
                         state["epoch"])
        self.state = state
        if self._save_best:
            write_atomically(self._state_path, lambda target: pathlib.Path(
                target).write_text(json.dumps(state, indent=2)))
        if state["stopped_early"]:
            self.model.stop_training = True
