"""Gradient accumulation (--gradient_accumulation_steps): N micro-batches per optimizer step
equal one step on their whole batch where BatchNorm does not train, on one device and on
two CPU replicas; the default (1) is Keras' own train step; train.py counts optimizer steps."""

import csv
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from pspnet_tf.config import ExperimentConfig
from pspnet_tf.models import accumulation, segmenter
from pspnet_tf.models.schedules import poly_learning_rate
from pspnet_tf.training.trainer import build_training_model, compile_for_training
from helpers import (TINY, report_from_two_cpu_replicas, run_command, tiny_model,
                     two_cpu_replicas)

# The tiny PSPNet without dropout (its masks depend on the batch's shape), and a learning
# rate at which three steps move the weights far beyond float32 rounding.
CONFIG = ExperimentConfig.from_fields(num_classes=4, backbone="resnet18_v1c", psp_channels=16,
                                      aux_channels=8, dropout=0.0, learning_rate=0.05)
STEPS, STEP_BATCH = 3, 8


@pytest.fixture(autouse=True)
def restore_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


def batches(count: int = STEPS * STEP_BATCH, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels with every pixel labelled: each micro-batch's mean over labelled
    pixels then weighs as much as the others, as one batch's mean does."""
    rng = np.random.default_rng(0)
    images = rng.normal(size=(count, size, size, 3)).astype("float32")
    labels = rng.integers(0, CONFIG.model.num_classes, size=(count, size, size)).astype("int32")
    return images, labels


def frozen_batch_norm_model(config: ExperimentConfig) -> keras.Model:
    """train.py's training model and compile, BatchNorm frozen (inference mode), seed 0."""
    keras.utils.set_random_seed(0)
    model = build_training_model(config)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    compile_for_training(model, config, total_steps=STEPS)
    return model


def trained(config: ExperimentConfig) -> tuple[keras.Model, dict, list[np.ndarray]]:
    """The model after STEPS steps of STEP_BATCH images, its fit history, its initial weights."""
    model = frozen_batch_norm_model(config)
    initial = [weight.numpy().copy() for weight in model.weights]
    images, labels = batches()
    history = model.fit(images, {"logits": labels, "aux_logits": labels},
                        batch_size=STEP_BATCH, epochs=1, shuffle=False, verbose=0)
    return model, history.history, initial


def assert_same_steps(got: keras.Model, expected: keras.Model, initial: list[np.ndarray]) -> None:
    """Same weights and optimizer state (momentum buffers, step counter) to float32
    rounding, after updates far larger than that."""
    moved = max(float(np.abs(after.numpy() - before).max())
                for after, before in zip(expected.weights, initial))
    assert moved > 1e-3
    for mine, theirs in zip(got.weights, expected.weights, strict=True):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=0, atol=1e-6,
                                   err_msg=mine.path)
    for mine, theirs in zip(got.optimizer.variables, expected.optimizer.variables, strict=True):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=0, atol=1e-6,
                                   err_msg=mine.path)
    assert int(got.optimizer.iterations.numpy()) == STEPS


def test_the_default_is_one_micro_batch_through_keras_own_train_step(monkeypatch):
    assert ExperimentConfig().optimizer.gradient_accumulation_steps == 1

    def refuse(*args):
        raise AssertionError("the default must not accumulate")

    monkeypatch.setattr(segmenter, "accumulated_train_step", refuse)
    model, history, initial = trained(CONFIG)
    assert model.gradient_accumulation_steps == 1
    assert int(model.optimizer.iterations.numpy()) == STEPS
    assert np.isfinite(history["loss"]).all()


def test_four_micro_batches_of_two_equal_one_step_of_eight():
    """With weight decay 5e-4, momentum 0.9 and the poly schedule of the shipped recipe."""
    accumulated, history, initial = trained(CONFIG.replace(gradient_accumulation_steps=4))
    whole, whole_history, whole_initial = trained(CONFIG)
    for mine, theirs in zip(initial, whole_initial):
        np.testing.assert_array_equal(mine, theirs)
    assert accumulated.gradient_accumulation_steps == 4
    assert_same_steps(accumulated, whole, initial)
    # The logged losses are the mean over micro-batches, the whole batch's mean here.
    for key in ("loss", "logits_loss", "aux_logits_loss"):
        np.testing.assert_allclose(history[key], whole_history[key], rtol=1e-5, err_msg=key)
    np.testing.assert_allclose(float(np.asarray(accumulated.optimizer.learning_rate)),
                               float(np.asarray(whole.optimizer.learning_rate)), rtol=1e-7)


@pytest.mark.slow  # about a minute on a loaded 2-core CPU
def test_micro_batches_equal_the_whole_batch_with_the_stages_recomputed():
    config = CONFIG.replace(memory_saving="on")
    accumulated, _, initial = trained(config.replace(gradient_accumulation_steps=2))
    assert accumulated.recompute
    assert_same_steps(accumulated, trained(config)[0], initial)


@pytest.mark.parametrize("changes", [
    {"mixed_precision": "mixed_bfloat16"},
    pytest.param({"mixed_precision": "mixed_float16"}, marks=pytest.mark.slow),  # emulated
    pytest.param({"jit_compile": True}, marks=pytest.mark.slow),  # XLA: minutes on 2 cores
])
def test_mixed_precision_and_xla_accumulate_finite_steps(changes):
    config = CONFIG.replace(**changes, gradient_accumulation_steps=2)
    model, history, initial = trained(config)
    if config.runtime.mixed_precision == "mixed_float16":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert np.isfinite(history["loss"]).all()
    assert int(model.optimizer.iterations.numpy()) == STEPS
    kernel = model.get_layer("conv_seg").kernel
    before = initial[next(i for i, w in enumerate(model.weights) if w is kernel)]
    assert not np.allclose(kernel.numpy(), before)


def test_a_batch_that_does_not_split_into_the_micro_batches_is_refused():
    with pytest.raises(tf.errors.InvalidArgumentError, match="4 equal micro-batches"):
        accumulation.split_micro_batches((tf.zeros((6, 2)), tf.zeros(6)), 4)
    with pytest.raises(ValueError, match="gradient_accumulation_steps must be at least 1"):
        tiny_model().compile(gradient_accumulation_steps=0)


def test_split_micro_batches_keeps_the_order_and_the_structure():
    data = {"a": tf.range(6), "b": tf.reshape(tf.range(12), (6, 2))}
    parts = accumulation.split_micro_batches(data, 3)
    assert [part["a"].numpy().tolist() for part in parts] == [[0, 1], [2, 3], [4, 5]]
    assert parts[2]["b"].numpy().tolist() == [[8, 9], [10, 11]]
    assert accumulation.split_micro_batches(None, 2) == [None, None]


def test_train_py_counts_optimizer_steps_and_records_the_setting(demo_root, tmp_path):
    """16 images, 2 micro-batches of 2 per step: 4 optimizer steps per epoch, 8 in all, and
    the poly schedule over those 8."""
    run_dir = str(tmp_path / "run")
    result = run_command("pspnet-train", *TINY, "--batch_size=2", "--gradient_accumulation_steps=2",
                         f"--data_root={demo_root}", f"--run_dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(run_dir, "config.json")) as handle:
        saved = ExperimentConfig.from_json(handle.read()).optimizer
    assert saved.gradient_accumulation_steps == 2
    log = open(os.path.join(run_dir, "train.log")).read()
    assert "4 steps per epoch" in log
    assert "each step accumulates 2 micro-batches of 2: 4 images per step" in log
    assert sorted(os.listdir(os.path.join(run_dir, "checkpoints")))[-1].startswith("ckpt-8.")
    with open(os.path.join(run_dir, "history.csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    schedule = poly_learning_rate(saved.learning_rate, 8, end_lr=saved.end_learning_rate)
    assert [float(row["learning_rate"]) for row in rows] == pytest.approx(
        [float(schedule(4)), float(schedule(8))], rel=1e-6)
    changed = run_command("pspnet-train", *TINY, "--batch_size=2", f"--data_root={demo_root}",
                          f"--run_dir={run_dir}")
    assert changed.returncode == 2
    assert "gradient_accumulation_steps: 2 -> 1" in changed.stderr


def test_a_split_smaller_than_one_step_is_one_line_naming_both_flags(demo_root, tmp_path):
    run_dir = tmp_path / "run"
    result = run_command("pspnet-train", *TINY, "--batch_size=4",
                         "--gradient_accumulation_steps=8", f"--data_root={demo_root}",
                         f"--run_dir={run_dir}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: split train has 16 images, fewer than the 32 of one training step "
        "(--batch_size x --gradient_accumulation_steps); lower either")
    assert not run_dir.exists()


@pytest.mark.slow  # a fresh process, over a minute on a loaded 2-core CPU
def test_two_cpu_replicas_accumulate_as_one_device_steps_the_whole_batch():
    """MirroredStrategy over two CPUs, 2 micro-batches of 4 (2 per replica) per step, equals
    one device's steps of 8; and with BatchNorm training (synchronised), steps run."""
    report = report_from_two_cpu_replicas(__file__, timeout=600)
    assert report["replicas"] == 2
    assert report["moved"] > 1e-3
    assert report["largest_difference"] < 1e-6
    assert report["iterations"] == STEPS
    assert report["synchronised_batch_norm_losses_finite"]


def _two_replica_report() -> dict:
    """Runs in a fresh process (helpers.report_from_two_cpu_replicas)."""
    strategy = two_cpu_replicas()
    whole, _, initial = trained(CONFIG)
    with strategy.scope():
        distributed, _, _ = trained(CONFIG.replace(gradient_accumulation_steps=2))
    differences = [float(np.abs(mine.numpy() - theirs.numpy()).max())
                   for mine, theirs in zip(distributed.weights, whole.weights, strict=True)]
    with strategy.scope():
        keras.utils.set_random_seed(0)
        config = CONFIG.replace(gradient_accumulation_steps=2)
        training = build_training_model(config)
        compile_for_training(training, config, total_steps=STEPS)
    images, labels = batches(count=STEP_BATCH)
    history = training.fit(images, {"logits": labels, "aux_logits": labels},
                           batch_size=STEP_BATCH, verbose=0).history
    return {"replicas": strategy.num_replicas_in_sync, "largest_difference": max(differences),
            "moved": max(float(np.abs(w.numpy() - w0).max())
                         for w, w0 in zip(whole.weights, initial)),
            "iterations": int(distributed.optimizer.iterations.numpy()),
            "synchronised_batch_norm_losses_finite": bool(np.isfinite(history["loss"]).all())}


if __name__ == "__main__":
    print(json.dumps(_two_replica_report()))
