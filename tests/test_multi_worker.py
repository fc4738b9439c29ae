"""Multi-worker training: two train.py workers on loopback, chief-only outputs, --strategy=tpu.

The workers find each other through TF_CONFIG, as on a real cluster. MultiWorkerMirroredStrategy
blocks a worker in its collective ops while another is missing, so every wait here is bounded
and both process groups are killed whatever happens.
"""

import contextlib
import os
import re
import signal
import subprocess
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import (DETERMINISTIC_ENV, ROOT, files_under, free_ports, h5_weights, run_command,
                     script_command, tf_config)

from pspnet_tf.data.demo import generate_demo_dataset
from pspnet_tf.training.checkpoints import CheckpointKeeper, checkpoint_files

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
def started_workers(args: list[str], log_dir, env: dict[str, str] | None = None):
    """Starts train.py as worker 0 (the chief) and worker 1 in `env` (default: this
    process's); kills both process groups on exit.

    Yields the processes and a function that returns each one's output so far.
    """
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    scratch = log_dir / "tmp"  # TMPDIR of the workers: a non-chief's scratch checkpoints
    scratch.mkdir(exist_ok=True)
    processes, paths = [], [log_dir / f"worker_{index}.log" for index in range(2)]
    try:
        for index, path in enumerate(paths):
            worker_env = {**(env or os.environ), "CUDA_VISIBLE_DEVICES": "",
                          "TMPDIR": str(scratch), "TF_CONFIG": tf_config(cluster, "worker", index)}
            with open(path, "w") as log:
                processes.append(subprocess.Popen(
                    script_command("train.py", *args), cwd=ROOT, env=worker_env,
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


def run_workers(args: list[str], log_dir, env: dict[str, str] | None = None,
                timeout_s: float = TIMEOUT_S) -> list[tuple[int, str]]:
    """Runs both workers to the end; returns (exit code, output) of each."""
    with started_workers(args, log_dir, env) as (processes, outputs):
        wait_for(processes, outputs, timeout_s)
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


# The shipped defaults (dropout on) with 8 training images: 4 steps per epoch, 3 epochs.
PREEMPTIBLE = [*[flag for flag in TINY if flag != "--dropout=0"], "--epochs=3",
               "--eval_every_epochs=3"]  # validating once, at the end, saves time
PREEMPTIBLE_STEPS = 12
PREEMPTIBLE_TIMEOUT_S = 600  # a run of 12 steps took over 300 s on a 2-core CPU under load


@pytest.fixture(scope="module")
def preemptible_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("demo8"))
    generate_demo_dataset(root, num_train=8, num_val=2, image_size=48)
    return root


def checkpoint_values(run_dir, step: int) -> dict[str, np.ndarray]:
    """Every value in the chief's ckpt-`step` (weights, optimizer state, random states)."""
    reader = tf.train.load_checkpoint(str(run_dir / "checkpoints" / f"ckpt-{step}"))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name != "_CHECKPOINTABLE_OBJECT_GRAPH" and not name.startswith("save_counter")}


def assert_same_arrays(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    """Equal bit for bit, but the running sums of the epoch's logged losses: those only to
    float32 rounding, as they add the resumed steps' losses onto the restored sums."""
    assert got.keys() == expected.keys() and len(expected) > 100
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], err_msg=name, atol=0,
                                   rtol=1e-5 if name.startswith("epoch_loss_sums") else 0)


TF_LOG_LINE = re.compile(r"[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.+-]+:\d+\] ")


def preempt(args: list[str], log_dir, env: dict[str, str], worker: int, epoch: int) -> int:
    """Runs both workers until `worker` has logged the first step of `epoch` (counted from
    1), then sends SIGTERM to its process alone, as a VM's shutdown does. Checks that both
    stop with the interrupt line and status 143; returns the step they stopped at."""
    run_dir = next(arg.split("=", 1)[1] for arg in args if arg.startswith("--run_dir="))
    logged = re.compile(rf"Epoch {epoch}/\d+\n.*\x1b\[1m1/\d+\x1b\[0m", re.DOTALL)
    with started_workers(args, log_dir, env) as (processes, outputs):
        deadline = time.monotonic() + PREEMPTIBLE_TIMEOUT_S
        while (not logged.search(outputs()[worker]) and time.monotonic() < deadline
               and all(process.poll() is None for process in processes)):
            time.sleep(0.05)
        assert all(process.poll() is None for process in processes), outputs()[worker][-3000:]
        processes[worker].send_signal(signal.SIGTERM)
        wait_for(processes, outputs, PREEMPTIBLE_TIMEOUT_S)
    step = max(checkpoint_files(os.path.join(run_dir, "checkpoints")))
    line = f"interrupted at step {step}; run the same command to resume"
    for index, (process, output) in enumerate(zip(processes, outputs())):
        assert process.returncode == 143, f"worker {index}:\n{output[-3000:]}"
        assert "Traceback" not in output
        lines = output.strip().splitlines()
        assert lines.count(line) == 1, f"worker {index}:\n{output[-3000:]}"
        # Only TensorFlow's own log may follow, from its shutdown: a worker whose peer left
        # a few seconds earlier (on a loaded machine) logs the lost heartbeats.
        after = lines[lines.index(line) + 1:]
        assert not after or TF_LOG_LINE.match(after[0]), f"worker {index}:\n{after}"
    for log in (os.path.join(run_dir, "train.log"),
                os.path.join(run_dir, "workers", "worker_1", "train.log")):
        assert open(log).read().strip().endswith(line)
    return step


@pytest.mark.slow  # about 4 minutes on a 2-core CPU: four runs of two workers
def test_sigterm_to_one_worker_checkpoints_both_and_the_rerun_matches(preemptible_root,
                                                                      tmp_path):
    """A preempted worker (SIGTERM to its process alone: worker 1, then, in the resumed
    run, the chief) costs no step: both workers save the same step and stop with the
    interrupt line, and the last rerun ends with the weights and optimizer state of an
    uninterrupted run, bit for bit."""
    env = DETERMINISTIC_ENV
    args = [*PREEMPTIBLE, f"--data_root={preemptible_root}"]
    uninterrupted = tmp_path / "uninterrupted"
    for index, (code, output) in enumerate(run_workers(
            [*args, f"--run_dir={uninterrupted}"], tmp_path, env, PREEMPTIBLE_TIMEOUT_S)):
        assert code == 0, f"worker {index} exited with {code}:\n{output[-3000:]}"

    run_dir = tmp_path / "preempted"
    args.append(f"--run_dir={run_dir}")
    logs = (run_dir / "train.log", run_dir / "workers" / "worker_1" / "train.log")
    # Signalled once the worker has logged step 5 (then step 9): the last checkpoints before
    # are the epoch ends, ckpt-4 (ckpt-8), so a stop that saves nothing would lose steps.
    first = preempt(args, tmp_path, env, worker=1, epoch=2)
    assert 5 <= first < PREEMPTIBLE_STEPS
    second = preempt(args, tmp_path, env, worker=0, epoch=3)
    assert max(9, first + 1) <= second < PREEMPTIBLE_STEPS
    for log in logs:
        assert f"ckpt-{first} at step {first}" in log.read_text()

    for index, (code, output) in enumerate(run_workers(args, tmp_path, env,
                                                       PREEMPTIBLE_TIMEOUT_S)):
        assert code == 0, f"rerun, worker {index} exited with {code}:\n{output[-3000:]}"
    for log in logs:
        assert f"ckpt-{second} at step {second}" in log.read_text()
    expected = h5_weights(uninterrupted / "final_weights.h5")
    assert_same_arrays(h5_weights(run_dir / "final_weights.h5"), expected)
    assert_same_arrays(h5_weights(logs[1].parent / "final_weights.h5"), expected)
    assert_same_arrays(checkpoint_values(run_dir, PREEMPTIBLE_STEPS),
                       checkpoint_values(uninterrupted, PREEMPTIBLE_STEPS))


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
