"""train.py end to end through the accidents of a long run: divergence, a damaged checkpoint
state file, and a second launch on a busy --run_dir. Shipped defaults (dropout 0.1). The
runs are in this process (`run_command`); only the busy run_dir's holder is another one."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from pspnet_tf.training.divergence import DIVERGED_EXIT_STATUS
from pspnet_tf.training.run_dir import RUN_LOCK_FILE
from helpers import TINY, error_lines, files_under, run_command

SHIPPED = [flag for flag in TINY if not flag.startswith("--dropout")]


def checkpoint_files(run_dir: str) -> dict[str, bytes]:
    return {name: content for name, content in files_under(run_dir).items()
            if name.startswith("checkpoints/ckpt-")}


@pytest.mark.slow  # over a minute on a 2-core CPU
def test_diverging_run_stops_with_status_3_and_saves_nothing_non_finite(demo_root, tmp_path):
    run_dir = str(tmp_path / "run")
    args = [*SHIPPED, f"--data_root={demo_root}", f"--run_dir={run_dir}",
            "--learning_rate=1e4", "--checkpoint_every_steps=1"]
    result = run_command("pspnet-train", *args)
    assert result.returncode == DIVERGED_EXIT_STATUS, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    [line] = error_lines(result.stderr)
    assert line == result.stderr.strip().splitlines()[-1]
    assert "training diverged at step " in line and "--learning_rate" in line
    step = int(line.split("at step ")[1].split(":")[0])
    assert 1 <= step < 8, "the tiny run has 8 steps; lr 1e4 diverges within a few"
    assert line[len("error: "):] in open(os.path.join(run_dir, "train.log")).read()
    assert not os.path.exists(os.path.join(run_dir, "final_weights.h5"))
    assert not os.path.exists(os.path.join(run_dir, "metrics.json"))
    saved = sorted(int(name.split("-")[1].split(".")[0]) for name in checkpoint_files(run_dir))
    assert saved and max(saved) < step
    for checkpoint in set(saved):
        reader = tf.train.load_checkpoint(os.path.join(run_dir, "checkpoints",
                                                       f"ckpt-{checkpoint}"))
        for name in reader.get_variable_to_shape_map():
            value = np.asarray(reader.get_tensor(name))
            assert value.dtype.kind != "f" or np.isfinite(value).all(), (checkpoint, name)

    # The same command resumes from the last finite checkpoint and says the same again.
    before = checkpoint_files(run_dir)
    again = run_command("pspnet-train", *args)
    assert again.returncode == DIVERGED_EXIT_STATUS
    assert error_lines(again.stderr) == [line]
    log = open(os.path.join(run_dir, "train.log")).read()
    assert f"ckpt-{max(saved)} at step {max(saved)}" in log.split("resumed from")[-1]
    assert checkpoint_files(run_dir) == before


@pytest.fixture(scope="module")
def one_epoch_run(demo_root, tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("runs") / "one_epoch")
    result = run_command("pspnet-train", *SHIPPED, "--epochs=1", f"--data_root={demo_root}",
                         f"--run_dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


@pytest.mark.slow  # over a minute on a 2-core CPU
def test_garbled_state_file_neither_restarts_nor_overwrites(one_epoch_run, demo_root):
    run_dir = one_epoch_run
    with open(os.path.join(run_dir, "checkpoints", "checkpoint"), "w") as handle:
        handle.write("model_checkpoint_path: \x00garbled{{")
    checkpoints = checkpoint_files(run_dir)
    history = open(os.path.join(run_dir, "history.csv")).read()

    result = run_command("pspnet-train", *SHIPPED, "--epochs=1", f"--data_root={demo_root}",
                         f"--run_dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in open(os.path.join(run_dir, "train.log")).read()
    assert checkpoint_files(run_dir) == checkpoints
    assert open(os.path.join(run_dir, "history.csv")).read() == history  # no epoch twice
    state = open(os.path.join(run_dir, "checkpoints", "checkpoint")).read()
    assert 'model_checkpoint_path: "ckpt-4"' in state


def test_second_launch_on_a_busy_run_dir_is_refused_and_changes_nothing(one_epoch_run,
                                                                       demo_root):
    run_dir = one_epoch_run
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        with open(os.path.join(run_dir, RUN_LOCK_FILE), "w") as handle:
            json.dump({"host": socket.gethostname(), "pid": holder.pid,
                       "started": "2026-01-01T00:00:00+0000"}, handle)
        before = files_under(run_dir)
        result = run_command("pspnet-train", *SHIPPED, "--epochs=1",
                             f"--data_root={demo_root}", f"--run_dir={run_dir}")
    finally:
        holder.kill()
        holder.wait()
        after = files_under(run_dir)
        os.remove(os.path.join(run_dir, RUN_LOCK_FILE))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    [line] = error_lines(result.stderr)
    assert f"in use by pid {holder.pid} on host {socket.gethostname()}" in line
    assert "2026-01-01T00:00:00" in line
    assert after == before
