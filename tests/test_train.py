"""train.py and evaluate.py end to end on tiny generated demo data, including kill -9,
SIGINT and SIGTERM resumes with the shipped dropout.

The runs that resumed runs are compared with bit for bit run in fresh processes as users run
them (deterministic kernels, and oneDNN as train.py asks for it before TensorFlow loads);
the refusals run in this process (`run_command`)."""

import csv
import json
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from helpers import (DETERMINISTIC_ENV, ROOT, TINY, TINY_INFERENCE, h5_weights, run_command,
                     script_command, tiny_model)
from helpers import run_deterministically as run

STEPS_PER_EPOCH = 4  # 16 training images / batch 4
STEPS = 8  # x 2 epochs


# TensorFlow's C++ log level as users have it (tests/conftest.py quiets it), so that its
# warnings would show.
USER_LOGGING_ENV = {key: value for key, value in DETERMINISTIC_ENV.items()
                    if key != "TF_CPP_MIN_LOG_LEVEL"}


def final_weights(run_dir: str) -> dict[str, np.ndarray]:
    return h5_weights(os.path.join(run_dir, "final_weights.h5"))


@pytest.fixture(scope="module")
def finished_run(demo_root, tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("runs") / "uninterrupted")
    result = run("train.py", *TINY, f"--data_root={demo_root}", f"--run_dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result


def test_training_writes_a_complete_run_directory(finished_run):
    run_dir, result = finished_run
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    assert set(metrics) == {"mIoU", "aAcc", "mAcc", "mDice", "per_class", "per_class_scores",
                            "confusion_matrix", "best"}
    assert metrics["best"]["metric"] == "mIoU" and metrics["best"]["epoch"] in (1, 2)
    assert os.path.exists(os.path.join(run_dir, "best_model.keras"))
    assert os.path.exists(os.path.join(run_dir, "best_weights.h5"))
    assert set(metrics["per_class"]) == {"background", "circle", "square", "triangle", "star"}
    # The last validation's report (the worst images are evaluate.py's).
    assert sorted(os.listdir(os.path.join(run_dir, "report"))) == [
        "confusion_matrix.csv", "confusion_matrix.png", "confusion_matrix_normalized.csv",
        "per_class.csv", "per_class_iou.png", "report.md"]
    assert all(0.0 <= metrics[key] <= 1.0 for key in ("mIoU", "aAcc", "mAcc"))
    assert "mIoU" in result.stdout
    config = json.load(open(os.path.join(run_dir, "config.json")))
    assert config["optimizer"]["epochs"] == 2 and config["model"]["backbone"] == "resnet18_v1c"
    checkpoints = open(os.path.join(run_dir, "checkpoints", "checkpoint")).read()
    assert f"ckpt-{STEPS}" in checkpoints
    events = [name for _, _, names in os.walk(os.path.join(run_dir, "tensorboard"))
              for name in names if name.startswith("events.out")]
    assert len(events) >= 3  # train scalars, validation scalars, validation images
    history = open(os.path.join(run_dir, "history.csv")).read()
    assert "learning_rate" in history and "val_mIoU" in history


def test_training_writes_a_self_describing_final_model(finished_run, demo_root):
    import keras

    from pspnet_tf import load_weights
    from pspnet_tf.data.demo import DEMO_CLASS_NAMES
    from pspnet_tf.models import PSPNetSegmenter

    run_dir, _ = finished_run
    model = keras.saving.load_model(os.path.join(run_dir, "final_model.keras"))
    assert isinstance(model, PSPNetSegmenter) and not isinstance(model.output, dict)
    assert model.class_names == list(DEMO_CLASS_NAMES) and model.num_classes == 5
    assert model.scale == (48, 48) and model.dataset == "demo"
    assert model.data_root == demo_root
    assert not model.tap_gradients and model.recompute is None  # training choices stay out
    from pspnet_tf.models.convolution import has_accelerator
    taps = "off" if has_accelerator() else "on"  # auto: on where no GPU or TPU is seen
    log = open(os.path.join(run_dir, "train.log")).read()
    assert f"tap gradients {taps} (--tap_gradients=auto)" in log
    weights = tiny_model(5)
    load_weights(weights, os.path.join(run_dir, "final_weights.h5"))
    images = np.random.default_rng(1).normal(size=(1, 40, 52, 3)).astype("float32")
    np.testing.assert_array_equal(model(images), weights(images))


def test_evaluate_reproduces_the_final_validation(finished_run, demo_root, tmp_path):
    run_dir, _ = finished_run
    output = str(tmp_path / "eval.json")
    result = run("evaluate.py", *TINY_INFERENCE, f"--data_root={demo_root}",
                 f"--weights={run_dir}/final_weights.h5", f"--output={output}")
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = json.load(open(output))
    trained = json.load(open(os.path.join(run_dir, "metrics.json")))
    assert evaluated["mIoU"] == pytest.approx(trained["mIoU"], abs=1e-6)
    assert "aAcc" in result.stdout


def latest_step(run_dir: str) -> int:
    state = os.path.join(run_dir, "checkpoints", "checkpoint")
    if not os.path.exists(state):
        return 0
    text = open(state).read()
    return int(text.split('model_checkpoint_path: "ckpt-')[1].split('"')[0])


def checkpoint_values(run_dir: str, step: int = STEPS) -> dict[str, np.ndarray]:
    """Every value in a checkpoint (weights, optimizer slots and iterations, random states)
    but the count of saves."""
    reader = tf.train.load_checkpoint(os.path.join(run_dir, "checkpoints", f"ckpt-{step}"))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name != "_CHECKPOINTABLE_OBJECT_GRAPH" and not name.startswith("save_counter")}


def assert_same_training(resumed_dir: str, uninterrupted_dir: str) -> None:
    """Final weights and every checkpointed value (optimizer state, dropout's random state)
    as in the uninterrupted run, to 1e-6; the epoch's loss sums to float32 rounding."""
    uninterrupted, resumed = final_weights(uninterrupted_dir), final_weights(resumed_dir)
    assert uninterrupted.keys() == resumed.keys()
    for name in uninterrupted:
        np.testing.assert_allclose(resumed[name], uninterrupted[name], rtol=0, atol=1e-6,
                                   err_msg=name)
    uninterrupted, resumed = checkpoint_values(uninterrupted_dir), checkpoint_values(resumed_dir)
    assert uninterrupted.keys() == resumed.keys()
    assert any("optimizer" in name and "iter" in name for name in resumed)
    assert any("random_states" in name for name in resumed)
    differences = []
    for name in uninterrupted:
        loss_sums = "epoch_loss_sums" in name
        if not loss_sums:
            differences.append(np.max(np.abs(resumed[name].astype(np.float64)
                                             - uninterrupted[name]), initial=0))
        np.testing.assert_allclose(resumed[name], uninterrupted[name],
                                   rtol=1e-5 if loss_sums else 0,
                                   atol=0 if loss_sums else 1e-6, err_msg=name)
    print(f"largest difference of a checkpointed weight or optimizer value: "
          f"{max(differences):.3g}")


def history_rows(run_dir: str) -> list[dict[str, str]]:
    with open(os.path.join(run_dir, "history.csv"), newline="") as handle:
        return list(csv.DictReader(handle))


def assert_same_history(resumed_dir: str, uninterrupted_dir: str) -> None:
    """history.csv: each epoch once, the values of the uninterrupted run (whole-epoch
    means, also for an epoch that was interrupted); TensorBoard: each scalar once per epoch."""
    resumed, uninterrupted = history_rows(resumed_dir), history_rows(uninterrupted_dir)
    assert [row["epoch"] for row in resumed] == ["0", "1"]
    for got, expected in zip(resumed, uninterrupted):
        assert got.keys() == expected.keys()
        for key in expected:
            assert float(got[key]) == pytest.approx(float(expected[key]), rel=1e-5), key
    for name in ("train", "validation"):
        folder = os.path.join(resumed_dir, "tensorboard", name)
        points = [(value.tag, event.step) for file in sorted(os.listdir(folder))
                  for event in tf.compat.v1.train.summary_iterator(os.path.join(folder, file))
                  for value in event.summary.value]
        assert points and len(points) == len(set(points)), f"{name}: {sorted(points)}"
        assert {step for _, step in points} == {0, 1}


def start_training(args: list[str], stderr_path: str) -> subprocess.Popen:
    with open(stderr_path, "w") as stderr:
        return subprocess.Popen(script_command("train.py", *args), cwd=ROOT,
                                env=DETERMINISTIC_ENV,
                                stdout=subprocess.DEVNULL, stderr=stderr)


def wait_until(process: subprocess.Popen, ready, timeout: float = 400) -> None:
    deadline = time.time() + timeout
    while not ready() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be interrupted"


def stop(process: subprocess.Popen, signal_number: int) -> int:
    process.send_signal(signal_number)
    try:
        return process.wait(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def logged(run_dir: str, text: str) -> bool:
    path = os.path.join(run_dir, "train.log")
    return os.path.exists(path) and text in open(path).read()


def sigkill_mid_epoch_then_rerun(args: list[str], tmp_path) -> str:
    """Trains with `args` in tmp_path/killed, checkpointing every step, kills it with
    SIGKILL mid-epoch, reruns the same command to its end and returns the run directory."""
    run_dir = str(tmp_path / "killed")
    args = [*args, f"--run_dir={run_dir}", "--checkpoint_every_steps=1"]
    process = start_training(args, str(tmp_path / "stderr"))
    wait_until(process, lambda: latest_step(run_dir) >= 1)
    stop(process, signal.SIGKILL)
    killed_at = latest_step(run_dir)
    assert 0 < killed_at < STEPS and killed_at % STEPS_PER_EPOCH, "should stop mid-epoch"

    result = run("train.py", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    log = open(os.path.join(run_dir, "train.log")).read()
    resumed_at = int(log.split("resumed from")[1].split("at step ")[1].split()[0])
    assert resumed_at == killed_at
    assert latest_step(run_dir) == STEPS
    return run_dir


@pytest.mark.slow  # over a minute on a 2-core CPU
def test_sigkill_mid_epoch_then_rerun_matches_an_uninterrupted_run(finished_run, demo_root,
                                                                   tmp_path):
    run_dir = sigkill_mid_epoch_then_rerun([*TINY, f"--data_root={demo_root}"], tmp_path)
    assert_same_training(run_dir, finished_run[0])
    assert_same_history(run_dir, finished_run[0])


@pytest.mark.slow  # over two minutes on a 2-core CPU
def test_sigkill_with_gradient_accumulation_then_rerun_matches_an_uninterrupted_run(
        demo_root, tmp_path):
    """2 micro-batches of 2 per step: the same 4 steps per epoch as TINY's batches of 4;
    checkpoints, and so the resume, fall on optimizer steps."""
    args = [*TINY, f"--data_root={demo_root}", "--batch_size=2",
            "--gradient_accumulation_steps=2"]
    uninterrupted = str(tmp_path / "uninterrupted")
    result = run("train.py", *args, f"--run_dir={uninterrupted}")
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = sigkill_mid_epoch_then_rerun(args, tmp_path)
    assert_same_training(run_dir, uninterrupted)
    assert_same_history(run_dir, uninterrupted)


@pytest.mark.slow  # over a minute on a 2-core CPU
def test_sigint_checkpoints_says_so_in_one_line_and_the_rerun_matches(finished_run, demo_root,
                                                                      tmp_path):
    run_dir = str(tmp_path / "interrupted")
    args = [*TINY, f"--data_root={demo_root}", f"--run_dir={run_dir}"]
    process = start_training(args, str(tmp_path / "stderr"))
    # After the first epoch's validation: the signal comes during the second epoch.
    wait_until(process, lambda: logged(run_dir, "epoch 1/2: val mIoU"))
    assert stop(process, signal.SIGINT) == 130
    stderr = open(tmp_path / "stderr").read()
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    line = stderr.strip().splitlines()[-1]
    step = latest_step(run_dir)
    assert line == f"interrupted at step {step}; run the same command to resume"
    assert STEPS_PER_EPOCH <= step < STEPS
    assert logged(run_dir, line)

    result = run("train.py", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_training(run_dir, finished_run[0])
    assert_same_history(run_dir, finished_run[0])


@pytest.mark.slow
def test_every_kind_of_interruption_in_turn_then_rerun_matches(finished_run, demo_root,
                                                               tmp_path):
    """SIGKILL, SIGTERM and SIGINT mid-epoch, during validation and during the final
    validation of one run, each followed by the same command."""
    run_dir = str(tmp_path / "interrupted")
    args = [*TINY, f"--data_root={demo_root}", f"--run_dir={run_dir}",
            "--checkpoint_every_steps=1"]
    # Each signal goes once this run has checkpointed a step >= the target (and beyond the
    # step it started at). The epoch-end checkpoint comes just before validation.
    stops = [(signal.SIGKILL, 1), (signal.SIGTERM, 2), (signal.SIGINT, STEPS_PER_EPOCH),
             (signal.SIGKILL, 5), (signal.SIGTERM, STEPS - 1)]
    stopped_at = []
    for number, target in stops:
        started_at = latest_step(run_dir)
        process = start_training(args, str(tmp_path / "stderr"))
        wait_until(process, lambda: latest_step(run_dir) >= max(target, started_at + 1))
        status = stop(process, number)
        stderr = open(tmp_path / "stderr").read()
        assert "Traceback" not in stderr
        stopped_at.append(latest_step(run_dir))
        if number != signal.SIGKILL:
            assert status == 128 + number
            assert stderr.strip().splitlines()[-1] == (
                f"interrupted at step {stopped_at[-1]}; run the same command to resume")
    print("stopped at steps", stopped_at)
    result = run("train.py", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_training(run_dir, finished_run[0])
    assert_same_history(run_dir, finished_run[0])


def test_run_dir_with_another_config_is_refused_and_left_untouched(finished_run, demo_root):
    run_dir, _ = finished_run
    before = open(os.path.join(run_dir, "config.json")).read()
    result = run_command("pspnet-train", *TINY, f"--data_root={demo_root}",
                         f"--run_dir={run_dir}", "--epochs=3")
    assert result.returncode == 2
    assert "another config" in result.stderr and "epochs: 2 -> 3" in result.stderr
    assert "Traceback" not in result.stderr
    assert open(os.path.join(run_dir, "config.json")).read() == before


@pytest.mark.parametrize("flag, message", [
    ("--backbone=resnet34", "resnet34"),
    ("--dataset=voc --num_classes=21 --data_root=/nonexistent/voc", "/nonexistent/voc"),
    ("--num_classes=7", "--num_classes=5"),
    ("--crop_size=32", "--crop_size"),
])
def test_bad_input_gives_one_clear_line(flag, message, demo_root, tmp_path):
    args = [*TINY, f"--data_root={demo_root}", f"--run_dir={tmp_path / 'run'}"]
    result = run_command("pspnet-train", *args, *flag.split())
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def assert_one_error_line(result: subprocess.CompletedProcess, run_dir: str, *named: str) -> str:
    """Exit status 2, one `error: ...` line naming `named` (last on stderr and in train.log),
    no traceback and none of tf.numpy_function's noise."""
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert [line for line in lines if line.startswith("error: ")] == lines[-1:], lines[-3:]
    assert all(name in lines[-1] for name in named)
    assert "Traceback" not in result.stderr and "numpy_function" not in result.stderr
    assert logged(run_dir, lines[-1])
    return lines[-1]


@pytest.mark.slow  # 36 s on 2 idle cores
def test_corrupt_image_found_mid_run_is_named_in_one_line(demo_root, tmp_path):
    broken_root = tmp_path / "broken"
    shutil.copytree(demo_root, broken_root)
    first = (broken_root / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[0]
    (broken_root / "JPEGImages" / f"{first}.jpg").write_bytes(b"not a jpeg")
    run_dir = str(tmp_path / "run")
    result = run("train.py", *TINY, f"--data_root={broken_root}", f"--run_dir={run_dir}",
                 env=USER_LOGGING_ENV)
    assert_one_error_line(result, run_dir, f"{first}.jpg")


@pytest.mark.slow  # over a minute on a 2-core CPU
def test_label_out_of_range_is_one_line_and_the_corrected_command_reuses_the_run_dir(
        demo_root, tmp_path):
    broken_root = tmp_path / "broken"
    shutil.copytree(demo_root, broken_root)
    name = (broken_root / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[5]
    label_path = broken_root / "SegmentationClass" / f"{name}.png"
    good_label = label_path.read_bytes()
    with Image.open(label_path) as label:
        values, palette = np.array(label), label.getpalette()
    values[:4, :4] = 7  # the demo has classes 0..4
    bad_label = Image.fromarray(values, mode="P")
    bad_label.putpalette(palette)
    bad_label.save(label_path)
    run_dir = str(tmp_path / "run")
    args = [*TINY, f"--data_root={broken_root}", f"--run_dir={run_dir}"]
    assert_one_error_line(run("train.py", *args, env=USER_LOGGING_ENV), run_dir, f"{name}.png",
                          "[7]")

    # Fixed, and shortened: the run_dir holds no checkpoint, so its config may change.
    label_path.write_bytes(good_label)
    result = run("train.py", *args, "--epochs=1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.load(open(os.path.join(run_dir, "config.json")))["optimizer"]["epochs"] == 1


def test_run_dir_that_is_a_file_gives_one_line(demo_root, tmp_path):
    path = tmp_path / "run"
    path.write_text("a file")
    result = run_command("pspnet-train", *TINY, f"--data_root={demo_root}", f"--run_dir={path}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: --run_dir={path} is a file, not a directory; pass another --run_dir "
        "(nothing was changed)")
    assert "Traceback" not in result.stderr
    assert path.read_text() == "a file"
