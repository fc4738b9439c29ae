"""run_dir's lock: one holder, a clear refusal naming it, stale locks taken over."""

import json
import os
import socket
import subprocess
import sys

import pytest
from absl import logging

from pspnet_tf.errors import UserError
from pspnet_tf.training.run_dir import RUN_LOCK_FILE
from pspnet_tf.training.run_lock import run_dir_lock


def write_lock(run_dir, **holder) -> str:
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, RUN_LOCK_FILE)
    with open(path, "w") as handle:
        json.dump({"host": socket.gethostname(), "started": "2026-01-01T00:00:00+0000",
                   **holder}, handle)
    return path


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_lock_is_held_inside_and_released_after_also_on_error(tmp_path):
    run_dir = str(tmp_path / "run")
    with pytest.raises(RuntimeError):
        with run_dir_lock(run_dir):
            holder = json.load(open(os.path.join(run_dir, RUN_LOCK_FILE)))
            assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
            raise RuntimeError("training failed")
    assert not os.path.exists(run_dir)  # created for the lock, left with nothing: removed


@pytest.fixture
def live_pid():
    """A process that is alive during the test, standing in for a running train.py."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield process.pid
    process.kill()
    process.wait()


def test_busy_run_dir_is_refused_with_one_line_naming_the_holder(tmp_path, live_pid):
    run_dir = str(tmp_path / "run")
    path = write_lock(run_dir, pid=live_pid)
    before = open(path).read()
    with pytest.raises(UserError) as refused:
        with run_dir_lock(run_dir):
            pytest.fail("a second holder got the lock")
    message = str(refused.value)
    assert "\n" not in message
    assert f"pid {live_pid} on host {socket.gethostname()}" in message
    assert "2026-01-01T00:00:00" in message and "rerun with force_unlock " in message
    assert os.listdir(run_dir) == [RUN_LOCK_FILE] and open(path).read() == before


def test_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path, monkeypatch):
    warnings = []
    monkeypatch.setattr(logging, "warning", lambda fmt, *args: warnings.append(fmt % args))
    run_dir = str(tmp_path / "run")
    pid = dead_pid()
    write_lock(run_dir, pid=pid)
    with run_dir_lock(run_dir):
        assert json.load(open(os.path.join(run_dir, RUN_LOCK_FILE)))["pid"] == os.getpid()
    assert len(warnings) == 1 and f"pid {pid}" in warnings[0]
    assert "no longer exists" in warnings[0]
    assert os.listdir(run_dir) == []  # released; the run_dir itself was there before


def test_lock_from_another_host_needs_force_unlock(tmp_path):
    run_dir = str(tmp_path / "run")
    write_lock(run_dir, host="elsewhere.example", pid=dead_pid())
    with pytest.raises(UserError, match="elsewhere.example.*another host.*force_unlock"):
        with run_dir_lock(run_dir):
            pass
    with run_dir_lock(run_dir, force=True):
        assert json.load(open(os.path.join(run_dir, RUN_LOCK_FILE)))["pid"] == os.getpid()
