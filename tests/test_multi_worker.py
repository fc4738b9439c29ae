"""Multi-worker training: two train.py workers on loopback, chief-only outputs, --strategy=tpu.

The workers find each other through TF_CONFIG, as on a real cluster. MultiWorkerMirroredStrategy
blocks a worker in its collective ops while another is missing, so every wait here is bounded
and both process groups are killed whatever happens.
"""

import contextlib
import os
import signal
import subprocess
import time

import keras
import numpy as np
import pytest
from helpers import (ROOT, files_under, free_ports, h5_weights, run_command, script_command,
                     tf_config)

from pspnet_tf.data.demo import generate_demo_dataset
from pspnet_tf.training.checkpoints import CheckpointKeeper

# One 32x32 crop per worker and step, 2 steps: enough to see both workers apply the same
# updates, small enough for two TensorFlow processes on a 2-core CPU.
TINY = ["--flagfile=configs/demo.cfg", "--epochs=1", "--batch_size=2", "--crop_size=32,32",
        "--scale=48,48", "--psp_channels=8", "--aux_channels=8", "--dropout=0",
        "--num_image_summaries=1"]
STEPS = 2  # 4 training images / global batch 2 x 1 epoch
TIMEOUT_S = 300


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("demo"))
    generate_demo_dataset(root, num_train=4, num_val=2, image_size=48)
    return root


@contextlib.contextmanager
def started_workers(args: list[str], log_dir):
    """Starts train.py as worker 0 (the chief) and worker 1; kills both process groups on exit.

    Yields the processes and a function that returns each one's output so far.
    """
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    scratch = log_dir / "tmp"  # TMPDIR of the workers: a non-chief's scratch checkpoints
    scratch.mkdir(exist_ok=True)
    processes, paths = [], [log_dir / f"worker_{index}.log" for index in range(2)]
    try:
        for index, path in enumerate(paths):
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TMPDIR": str(scratch),
                   "TF_CONFIG": tf_config(cluster, "worker", index)}
            with open(path, "w") as log:
                processes.append(subprocess.Popen(
                    script_command("train.py", *args), cwd=ROOT, env=env,
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        yield processes, lambda: [path.read_text() for path in paths]
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_for(processes, outputs, timeout_s: float = TIMEOUT_S) -> None:
    """Waits until every process has exited; fails with their output tails after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
        time.sleep(0.2)
    if any(p.poll() is None for p in processes):
        tails = "\n".join(f"--- worker {i} ---\n{out[-2000:]}" for i, out in enumerate(outputs()))
        pytest.fail(f"the workers did not finish within {timeout_s} s; killing them\n{tails}")


def run_workers(args: list[str], log_dir) -> list[tuple[int, str]]:
    """Runs both workers to the end; returns (exit code, output) of each."""
    with started_workers(args, log_dir) as (processes, outputs):
        wait_for(processes, outputs)
    return [(process.returncode, output) for process, output in zip(processes, outputs())]


@pytest.mark.slow  # about a minute on a 2-core CPU
def test_two_workers_train_in_step_and_only_the_chief_writes_the_run(demo_root, tmp_path):
    run_dir = tmp_path / "run"
    results = run_workers([*TINY, f"--data_root={demo_root}", f"--run_dir={run_dir}"], tmp_path)
    for index, (code, output) in enumerate(results):
        assert code == 0, f"worker {index} exited with {code}:\n{output[-3000:]}"

    chief, other = h5_weights(run_dir / "final_weights.h5"), h5_weights(
        run_dir / "workers" / "worker_1" / "final_weights.h5")
    assert len(chief) > 100 and chief.keys() == other.keys()
    for name in chief:
        np.testing.assert_allclose(other[name], chief[name], rtol=0, atol=1e-6, err_msg=name)

    files = files_under(run_dir).keys()
    assert {"config.json", "train.log", "history.csv", "metrics.json", "final_weights.h5",
            "checkpoints/checkpoint", f"checkpoints/ckpt-{STEPS}.index"} <= files  # trained
    assert any(name.startswith("tensorboard/") for name in files)
    # The other worker keeps only its own log and final weights, in its own folder.
    assert {name for name in files if not name.startswith(("checkpoints/", "tensorboard/"))
            and "/" in name} == {"workers/worker_1/train.log", "workers/worker_1/final_weights.h5"}
    assert files_under(tmp_path / "tmp").keys() == set()  # its scratch checkpoints were removed
    log = open(run_dir / "train.log").read()
    assert "2 replicas" in log and "val mIoU" in log
    assert "worker_1" in open(run_dir / "workers" / "worker_1" / "train.log").read()


@pytest.mark.slow
def test_both_workers_resume_from_the_chiefs_checkpoint(demo_root, tmp_path):
    """A rerun must restore the same step on every worker, or the chief would stop training
    while the other worker waited in its first collective op."""
    run_dir = tmp_path / "run"
    args = [*TINY, f"--data_root={demo_root}", f"--run_dir={run_dir}"]
    for attempt in range(2):
        for index, (code, output) in enumerate(run_workers(args, tmp_path)):
            assert code == 0, f"run {attempt}, worker {index} exited with {code}:\n{output[-3000:]}"
    for log in (run_dir / "train.log", run_dir / "workers" / "worker_1" / "train.log"):
        assert f"ckpt-{STEPS} at step {STEPS}" in open(log).read()
    assert "resuming run" in open(run_dir / "train.log").read()


@pytest.mark.slow
def test_the_chief_stops_on_its_own_when_the_other_worker_dies(demo_root, tmp_path):
    run_dir = tmp_path / "run"
    args = [*TINY, "--epochs=50", "--checkpoint_every_steps=1", f"--data_root={demo_root}",
            f"--run_dir={run_dir}"]
    with started_workers(args, tmp_path) as (processes, outputs):
        deadline = time.monotonic() + TIMEOUT_S
        while (not (run_dir / "checkpoints" / "checkpoint").exists()
               and processes[0].poll() is None and time.monotonic() < deadline):
            time.sleep(0.2)
        assert processes[0].poll() is None, outputs()[0][-3000:]
        os.killpg(processes[1].pid, signal.SIGKILL)
        wait_for(processes, outputs, timeout_s=120)
    assert processes[0].returncode == 2
    assert "error: lost contact with another worker" in outputs()[0]
    assert "Traceback" not in outputs()[0]


def test_a_worker_that_cannot_use_the_run_dir_stops_both(demo_root, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("not a run")
    results = run_workers([*TINY, f"--data_root={demo_root}", f"--run_dir={run_dir}"], tmp_path)
    for index, (code, output) in enumerate(results):
        assert code == 2, f"worker {index} exited with {code}:\n{output[-3000:]}"
        assert "Traceback" not in output
    assert "is not empty and holds no config.json" in results[0][1]
    assert "another worker could not use --run_dir" in results[1][1]
    assert files_under(run_dir).keys() == {"notes.txt"}


def test_every_worker_resumes_from_the_chiefs_checkpoints(tmp_path):
    def keeper(directory, chief):
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        optimizer = keras.optimizers.SGD(0.1)
        optimizer.build(model.trainable_variables)
        return model, optimizer, CheckpointKeeper(str(directory), model, optimizer,
                                                  is_chief=chief)

    directory = tmp_path / "checkpoints"
    model, optimizer, chief = keeper(directory, chief=True)
    optimizer.iterations.assign(5)
    chief.save()
    other_model, _, other = keeper(directory, chief=False)
    other.save()  # a non-chief save goes to its own scratch folder, then is removed
    assert files_under(directory).keys() == {"checkpoint", "ckpt-5.index",
                                             "ckpt-5.data-00000-of-00001"}
    assert other.restore_latest() == 5
    for mine, theirs in zip(model.get_weights(), other_model.get_weights()):
        np.testing.assert_array_equal(theirs, mine)


def test_tpu_strategy_without_a_tpu_is_one_clear_line(demo_root, tmp_path, monkeypatch):
    monkeypatch.delenv("TPU_NAME", raising=False)
    result = run_command("pspnet-train", *TINY, f"--data_root={demo_root}",
                         f"--run_dir={tmp_path / 'run'}", "--strategy=tpu")
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --strategy=tpu found no TPU") and "--tpu=" in last
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()
