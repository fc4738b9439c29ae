"""train.py and evaluate.py end to end on tiny generated demo data, including kill -9 resume."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from pspnet_tf.data.demo import generate_demo_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--flagfile=configs/demo.cfg", "--epochs=2", "--batch_size=4", "--crop_size=32,32",
        "--scale=48,48", "--psp_channels=16", "--aux_channels=8", "--dropout=0",
        "--num_image_summaries=2"]
STEPS = 8  # 16 training images / batch 4 x 2 epochs


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("demo"))
    generate_demo_dataset(root, num_train=16, num_val=4, image_size=48)
    return root


def command(script: str, *args: str) -> list[str]:
    return [sys.executable, os.path.join(ROOT, script), *args]


# Deterministic kernels, so that a resumed run can be compared with an uninterrupted one
# however loaded the machine is.
ENV = {**os.environ, "TF_DETERMINISTIC_OPS": "1"}


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(command(script, *args), cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=600)


def h5_weights(path: str) -> dict[str, np.ndarray]:
    """Every array in a weights file, by its path inside the file."""
    found = {}

    def keep(name, item):  # returns None: a value would stop visititems
        if isinstance(item, h5py.Dataset):
            found[name] = item[()]

    with h5py.File(path) as handle:
        handle.visititems(keep)
    return found


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
    assert set(metrics) == {"mIoU", "aAcc", "mAcc", "per_class"}
    assert set(metrics["per_class"]) == {"background", "circle", "square", "triangle", "star"}
    assert all(0.0 <= metrics[key] <= 1.0 for key in ("mIoU", "aAcc", "mAcc"))
    assert "mIoU" in result.stdout
    config = json.load(open(os.path.join(run_dir, "config.json")))
    assert config["epochs"] == 2 and config["backbone"] == "resnet18_v1c"
    checkpoints = open(os.path.join(run_dir, "checkpoints", "checkpoint")).read()
    assert f"ckpt-{STEPS}" in checkpoints
    events = [name for _, _, names in os.walk(os.path.join(run_dir, "tensorboard"))
              for name in names if name.startswith("events.out")]
    assert len(events) >= 3  # train scalars, validation scalars, validation images
    history = open(os.path.join(run_dir, "history.csv")).read()
    assert "learning_rate" in history and "val_mIoU" in history


def test_training_writes_a_self_describing_final_model(finished_run, demo_root):
    import keras

    from pspnet_tf import SegmentationModel, build_pspnet, load_weights
    from pspnet_tf.data.demo import DEMO_CLASS_NAMES

    run_dir, _ = finished_run
    model = keras.saving.load_model(os.path.join(run_dir, "final_model.keras"))
    assert isinstance(model, SegmentationModel) and not isinstance(model.output, dict)
    assert model.metadata["class_names"] == list(DEMO_CLASS_NAMES)
    assert model.metadata["scale"] == [48, 48] and model.metadata["dataset"] == "demo"
    assert model.metadata["data_root"] == demo_root and model.metadata["num_classes"] == 5
    weights = build_pspnet(5, backbone="resnet18_v1c", psp_channels=16, aux_channels=8)
    load_weights(weights, os.path.join(run_dir, "final_weights.h5"))
    images = np.random.default_rng(1).normal(size=(1, 40, 52, 3)).astype("float32")
    np.testing.assert_array_equal(model(images), weights(images))


def test_evaluate_reproduces_the_final_validation(finished_run, demo_root, tmp_path):
    run_dir, _ = finished_run
    output = str(tmp_path / "eval.json")
    result = run("evaluate.py", *TINY, f"--data_root={demo_root}",
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


def test_sigkill_then_rerun_resumes_and_matches_an_uninterrupted_run(finished_run, demo_root,
                                                                     tmp_path):
    run_dir = str(tmp_path / "killed")
    args = [*TINY, f"--data_root={demo_root}", f"--run_dir={run_dir}",
            "--checkpoint_every_steps=1"]
    process = subprocess.Popen(command("train.py", *args), cwd=ROOT, env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while latest_step(run_dir) < 3 and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = latest_step(run_dir)
    assert 3 <= killed_at < STEPS, "the run should have been killed part-way"

    result = run("train.py", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    log = open(os.path.join(run_dir, "train.log")).read()
    resumed_at = int(log.split("resumed from")[1].split("at step ")[1].split()[0])
    assert resumed_at >= killed_at
    assert latest_step(run_dir) == STEPS
    uninterrupted, resumed = final_weights(finished_run[0]), final_weights(run_dir)
    assert uninterrupted.keys() == resumed.keys()
    for name in uninterrupted:
        np.testing.assert_allclose(resumed[name], uninterrupted[name], rtol=1e-4, atol=1e-5,
                                   err_msg=name)


def test_run_dir_with_another_config_is_refused_and_left_untouched(finished_run, demo_root):
    run_dir, _ = finished_run
    before = open(os.path.join(run_dir, "config.json")).read()
    result = run("train.py", *TINY, f"--data_root={demo_root}", f"--run_dir={run_dir}",
                 "--epochs=3")
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
    result = run("train.py", *args, *flag.split())
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_corrupt_image_found_mid_run_is_named_in_one_line(demo_root, tmp_path):
    broken_root = tmp_path / "broken"
    shutil.copytree(demo_root, broken_root)
    first = (broken_root / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[0]
    (broken_root / "JPEGImages" / f"{first}.jpg").write_bytes(b"not a jpeg")
    result = run("train.py", *TINY, f"--data_root={broken_root}",
                 f"--run_dir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert f"{first}.jpg" in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr
