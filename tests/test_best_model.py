"""best_model.keras's choice, its state in best.json, early stopping and their resumption
(pspnet_tf.training.best): driven by hand-made validation summaries, and end to end by
train.py interrupted just after a new best and after a worse epoch."""

import csv
import json
import os
import signal
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import TINY, Killed, h5_weights, run_command
from helpers import run_deterministically as run
from test_train import logged, start_training, stop, wait_until

from pspnet_tf.data.demo import DEMO_CLASS_NAMES
from pspnet_tf.training import trainer
from pspnet_tf.errors import UserError
from pspnet_tf.training.best import (BEST_MODEL, BEST_STATE, BEST_WEIGHTS, BestModelKeeper,
                                     metric_key, metric_value)

CLASSES = ("background", "person", "car")


def summary(miou: float, person: float | None = 0.5) -> dict:
    return {"mIoU": miou, "aAcc": 0.9, "mAcc": 0.8,
            "per_class": {"background": 0.9, "person": person, "car": 0.1}}


class Run:
    """A keeper over a run of validations, each epoch's summary (None = not validated)."""

    def __init__(self, run_dir: str, metric: str = "mIoU", patience: int = 0,
                 min_delta: float = 0.0, steps_per_epoch: int = 10) -> None:
        os.makedirs(run_dir, exist_ok=True)
        self.saved: list[int] = []  # the epochs best_model was written at
        self.latest: dict | None = None
        self._steps = steps_per_epoch
        self.model = types.SimpleNamespace(optimizer=types.SimpleNamespace(
            iterations=tf.Variable(0, dtype=tf.int64)), stop_training=False)
        self.keeper = BestModelKeeper(
            run_dir, metric, CLASSES, lambda: self.latest,
            lambda model: self.saved.append(self.epoch), patience, min_delta)
        self.keeper.set_model(self.model)
        self.epoch = 0

    def epoch_end(self, epoch: int, validated: dict | None) -> None:
        """Keras' epoch `epoch` (from 0) ends, with a validation summary or none."""
        self.epoch = epoch + 1
        self.model.optimizer.iterations.assign(self.epoch * self._steps)
        logs = {"loss": 1.0}
        if validated is not None:
            self.latest = validated
            logs["val_mIoU"] = validated["mIoU"]
        self.keeper.on_epoch_end(epoch, logs)


def state(run_dir) -> dict:
    return json.load(open(os.path.join(run_dir, BEST_STATE)))


def test_metric_names():
    assert metric_key("mIoU", CLASSES) == "mIoU"
    assert metric_key("mAcc", CLASSES) == "mAcc" and metric_key("aAcc", CLASSES) == "aAcc"
    assert metric_key("IoU:person", CLASSES) == "person"
    assert metric_key("IoU:2", CLASSES) == "car"
    assert metric_value("IoU:1", CLASSES, summary(0.3, person=0.25)) == 0.25
    for bad in ("miou", "IoU:bus", "IoU:3", "IoU:", "loss"):
        with pytest.raises(UserError, match=f"best_metric={bad} is not a metric"):
            metric_key(bad, CLASSES)


def test_best_is_kept_on_improvement_only_and_recorded(tmp_path):
    run = Run(str(tmp_path))
    for epoch, miou in enumerate([0.2, 0.4, 0.3, 0.4, 0.5]):
        run.epoch_end(epoch, summary(miou))
    assert run.saved == [1, 2, 5]  # ties and worse epochs keep the earlier best
    assert state(tmp_path)["last_validated_epoch"] == 5
    assert run.keeper.summary() == {"metric": "mIoU", "score": 0.5, "epoch": 5, "step": 50,
                                    "stopped_early": False}
    assert not run.model.stop_training


def test_a_class_iou_picks_its_own_best_and_skips_undefined_scores(tmp_path):
    run = Run(str(tmp_path), metric="IoU:person")
    for epoch, (miou, person) in enumerate([(0.5, None), (0.2, 0.3), (0.6, 0.1), (0.1, 0.4)]):
        run.epoch_end(epoch, summary(miou, person))
    assert run.saved == [2, 4]
    assert run.keeper.summary()["score"] == 0.4


def test_only_validated_epochs_count(tmp_path):
    run = Run(str(tmp_path), patience=2)
    run.epoch_end(0, None)
    assert run.saved == [] and not os.path.exists(tmp_path / BEST_STATE)
    run.epoch_end(1, summary(0.3))
    for epoch in (2, 3, 4):
        run.epoch_end(epoch, None)
    run.epoch_end(5, summary(0.2))
    assert not run.model.stop_training  # one validation without improvement, not four epochs
    run.epoch_end(6, summary(0.1))
    assert run.model.stop_training and run.keeper.stopped_early
    assert run.keeper.summary() == {"metric": "mIoU", "score": 0.3, "epoch": 2, "step": 20,
                                    "stopped_early": True}


def test_min_delta(tmp_path):
    run = Run(str(tmp_path), patience=2, min_delta=0.05)
    for epoch, miou in enumerate([0.30, 0.34, 0.36]):
        run.epoch_end(epoch, summary(miou))
    assert run.saved == [1, 3]
    assert state(tmp_path)["validations_without_improvement"] == 0


@pytest.mark.parametrize("stop_after", [2, 3])  # after a new best, after a worse epoch
def test_resumed_run_keeps_compares_and_stops_as_an_uninterrupted_one(tmp_path, stop_after):
    scores = [0.2, 0.4, 0.3, 0.35, 0.38, 0.5]
    whole = Run(str(tmp_path / "whole"), patience=3)
    for epoch, miou in enumerate(scores):
        if whole.model.stop_training:  # Keras' fit ends after the epoch that set it
            break
        whole.epoch_end(epoch, summary(miou))
    assert whole.model.stop_training and whole.saved == [1, 2]

    first = Run(str(tmp_path / "resumed"), patience=3)
    for epoch in range(stop_after):
        first.epoch_end(epoch, summary(scores[epoch]))
    resumed = Run(str(tmp_path / "resumed"), patience=3)
    # A run stopped during the next epoch's history row repeats that epoch end: counted once.
    resumed.epoch_end(stop_after - 1, summary(scores[stop_after - 1]))
    for epoch in range(stop_after, len(scores)):
        if resumed.model.stop_training:
            break
        resumed.epoch_end(epoch, summary(scores[epoch]))
    assert first.saved + resumed.saved == whole.saved
    assert state(tmp_path / "resumed") == state(tmp_path / "whole")
    assert resumed.epoch == whole.epoch == 5 and resumed.model.stop_training

    # Relaunched once it stopped early: it knows, and trains no further.
    assert Run(str(tmp_path / "resumed"), patience=3).keeper.stopped_early


def test_a_non_chief_worker_keeps_the_state_but_writes_nothing(tmp_path):
    run = Run(str(tmp_path), patience=1)
    run.keeper = BestModelKeeper(str(tmp_path), "mIoU", CLASSES, lambda: run.latest, None, 1)
    run.keeper.set_model(run.model)
    run.epoch_end(0, summary(0.3))
    run.epoch_end(1, summary(0.2))
    assert run.model.stop_training and os.listdir(tmp_path) == []
    assert np.isclose(run.keeper.summary()["score"], 0.3)


EPOCHS = 5


def best_files(run_dir: str) -> tuple[dict, dict, dict[str, np.ndarray]]:
    """best.json, metrics.json's `best`, and best_weights.h5's arrays."""
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    return state(run_dir), metrics["best"], h5_weights(os.path.join(run_dir, BEST_WEIGHTS))


def assert_same_best(run_dir: str, expected_dir: str) -> None:
    """best.json, metrics.json's `best` and best_weights.h5 (to 1e-6) as in expected_dir."""
    (got_state, got_best, got_weights), (state_, best_, weights) = (
        best_files(run_dir), best_files(expected_dir))
    assert got_state == pytest.approx(state_) and got_best == pytest.approx(best_)
    assert got_weights.keys() == weights.keys()
    for name, expected in weights.items():
        np.testing.assert_allclose(got_weights[name], expected, rtol=0, atol=1e-6, err_msg=name)


def improvements(scores: list[float], min_delta: float) -> list[bool]:
    """Whether each validation beat the best before it by more than min_delta."""
    found, best = [], None
    for score in scores:
        found.append(best is None or score > best + min_delta)
        best = score if found[-1] else best
    return found


# The tiny demo run (helpers.TINY, shipped dropout 0.1) for 5 epochs: with the defaults (no
# early stopping), and stopping after 2 validations that do not beat the best by over 0.005.
@pytest.mark.slow  # about a minute and a half each on a 2-core CPU
@pytest.mark.parametrize("early_stop", [[], ["--early_stop_patience=2",
                                             "--early_stop_min_delta=0.005"]])
def test_interrupted_after_a_new_best_and_after_a_worse_epoch_resumes_exactly(
        demo_root, tmp_path, early_stop):
    args = [*TINY, f"--epochs={EPOCHS}", f"--data_root={demo_root}", *early_stop]
    whole_dir = str(tmp_path / "whole")
    result = run("train.py", *args, f"--run_dir={whole_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    whole_state, whole_best, _ = best_files(whole_dir)
    scores = [row["val_mIoU"] for row in history(whole_dir)]
    improved = improvements(scores, 0.005 if early_stop else 0.0)
    assert whole_state["epoch"] == max(epoch for epoch, up in enumerate(improved, 1) if up)
    assert whole_best["score"] == scores[whole_state["epoch"] - 1]
    assert whole_best["stopped_early"] == bool(early_stop)
    if early_stop:
        assert whole_state["epoch"] + 2 == len(scores) < EPOCHS
    assert (f"best mIoU {100 * whole_best['score']:.2f} at epoch {whole_state['epoch']}"
            in result.stdout)
    model = keras.saving.load_model(os.path.join(whole_dir, BEST_MODEL))
    assert model.class_names == list(DEMO_CLASS_NAMES) and not isinstance(model.output, dict)
    # A new best followed by a validation without improvement (what the test interrupts at).
    new_best = next(epoch for epoch in range(1, len(scores))
                    if improved[epoch - 1] and not improved[epoch])

    run_dir = str(tmp_path / "interrupted")
    args.append(f"--run_dir={run_dir}")
    for epoch in (new_best, new_best + 1):
        process = start_training(args, str(tmp_path / "stderr"))
        wait_until(process, lambda: logged(run_dir, f"epoch {epoch}/{EPOCHS}: val mIoU"))
        assert stop(process, signal.SIGINT) == 130
        assert state(run_dir)["last_validated_epoch"] == epoch
    result = run("train.py", *args)
    assert result.returncode == 0, result.stderr[-3000:]

    assert_same_best(run_dir, whole_dir)
    assert len(history(run_dir)) == len(scores)  # stopped (early or not) at the same epoch
    if early_stop:  # relaunched once stopped early: trains no further, keeps best_model
        mtime = os.path.getmtime(os.path.join(run_dir, BEST_MODEL))
        result = run("train.py", *args)
        assert result.returncode == 0, result.stderr[-3000:]
        assert len(history(run_dir)) == len(scores)
        assert os.path.getmtime(os.path.join(run_dir, BEST_MODEL)) == mtime


@pytest.fixture(scope="module")
def uninterrupted(demo_root, tmp_path_factory) -> str:
    """The tiny demo run (helpers.TINY: 2 epochs), run in this process."""
    run_dir = str(tmp_path_factory.mktemp("best") / "whole")
    result = run_command("pspnet-train", *TINY, f"--data_root={demo_root}",
                         f"--run_dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


@pytest.mark.slow  # two tiny runs in this process, about a minute on a loaded 2-core CPU
@pytest.mark.parametrize("written", [BEST_MODEL, BEST_WEIGHTS])
def test_killed_after_the_best_files_before_best_json_resumes_with_a_consistent_best(
        uninterrupted, demo_root, tmp_path, monkeypatch, written):
    """The moments the atomic writes leave between a new best's files and its best.json:
    a kill after best_model.keras or after best_weights.h5 (the new best's) with best.json
    still the previous state. The epoch's history row is not written yet, so the rerun
    repeats that epoch's end: it validates the same weights again, finds the same new best
    and ends with the best.json, metrics.json `best` and best_weights.h5 of an uninterrupted
    run."""
    new_best = state(uninterrupted)["epoch"]  # the last improvement, killed at
    run_dir = str(tmp_path / "killed")
    args = [*TINY, f"--data_root={demo_root}", f"--run_dir={run_dir}"]
    saved_weights, saved_model = trainer.save_weights, trainer.save_final_model

    def killed_after(path: str) -> None:
        rows = os.path.exists(os.path.join(run_dir, "history.csv")) and history(run_dir)
        if os.path.basename(path) == written and len(rows or []) == new_best - 1:
            raise Killed

    def save_weights(model, path):
        saved_weights(model, path)
        killed_after(path)

    def save_final_model(model, config, val_set, path):
        saved_model(model, config, val_set, path)
        killed_after(path)

    monkeypatch.setattr(trainer, "save_weights", save_weights)
    monkeypatch.setattr(trainer, "save_final_model", save_final_model)
    with pytest.raises(Killed):
        run_command("pspnet-train", *args)
    monkeypatch.undo()
    assert os.path.exists(os.path.join(run_dir, written))
    before = state(run_dir) if os.path.exists(os.path.join(run_dir, BEST_STATE)) else None
    assert before is None or before["last_validated_epoch"] == new_best - 1

    result = run_command("pspnet-train", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_best(run_dir, uninterrupted)
    got_model, whole_model = (keras.saving.load_model(os.path.join(folder, BEST_MODEL))
                              for folder in (run_dir, uninterrupted))
    for got, expected in zip(got_model.weights, whole_model.weights, strict=True):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=0, atol=1e-6,
                                   err_msg=got.path)
    assert len(history(run_dir)) == 2


def history(run_dir: str) -> list[dict[str, float]]:
    with open(os.path.join(run_dir, "history.csv"), newline="") as handle:
        return [{key: float(value) for key, value in row.items() if value}
                for row in csv.DictReader(handle)]


def test_a_metric_of_no_class_is_one_line_and_creates_no_run_dir(demo_root, tmp_path):
    run_dir = tmp_path / "run"
    result = run_command("pspnet-train", *TINY, f"--data_root={demo_root}",
                         f"--run_dir={run_dir}", "--best_metric=IoU:person")
    assert result.returncode == 2, result.stderr[-3000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: best_metric=IoU:person is not a metric of this run")
    assert "0-4: background, circle, square, triangle, star" in line
    assert not run_dir.exists()
