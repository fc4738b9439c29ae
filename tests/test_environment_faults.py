"""Faults of the machine (full disk, read-only folder, over-long path) as one `error:` line
with exit status 4, nothing already written lost, no orphaned temporary files, and a rerun
after the fault is fixed that resumes. A real tmpfs is mounted where the sandbox allows it
(root with mount rights); elsewhere those tests are skipped and the errno is injected."""

import contextlib
import errno
import os
import subprocess
import sys

import keras
import pytest
import tensorflow as tf
from absl import flags

from helpers import ROOT, TINY, error_lines, run_python, tiny_model
from pspnet_tf.atomic import (DestinationTaken, remove_stale_temporaries, temporary_prefix,
                              write_atomically)
from pspnet_tf.config import ExperimentConfig, config_from_flags, define_flags
from pspnet_tf.errors import (ENVIRONMENT_FAULT_EXIT_STATUS, EnvironmentFault, UserError,
                              as_user_error, environment_fault)
from pspnet_tf.inference.deploy import check_new_file
from pspnet_tf.inference.export import export_saved_model
from pspnet_tf.inference.outputs import save_output
from pspnet_tf.training.run_dir import CONFIG_FILE, RUN_LOCK_FILE, prepare_run_dir
from pspnet_tf.training.trainer import FINAL_MODEL, FINAL_WEIGHTS, train


def _dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# ----------------------------------------------------------------------------- classification

@pytest.mark.parametrize("number, advice", [
    (errno.ENOSPC, "free space"), (errno.EDQUOT, "free space"),
    (errno.EROFS, "writable disk"), (errno.EACCES, "can be written"),
    (errno.EPERM, "can be written"), (errno.ENAMETOOLONG, "shorter path"),
])
def test_os_errors_of_the_machine_name_the_path_and_the_remedy(number, advice):
    fault = environment_fault(OSError(number, os.strerror(number), "/data/run/x.tmp"),
                              "/data/run/x")
    assert isinstance(fault, EnvironmentFault) and isinstance(fault, UserError)
    assert fault.exit_status == ENVIRONMENT_FAULT_EXIT_STATUS == 4
    assert str(fault).startswith("/data/run/x: ") and advice in str(fault)
    assert errno.errorcode[number] in str(fault) and "\n" not in str(fault)


@pytest.mark.parametrize("kind, message, path", [
    (tf.errors.ResourceExhaustedError,
     "{{function_node __wrapped__SaveV2_dtypes_3_device_/job:localhost/replica:0/task:0/"
     "device:CPU:0}} /r/checkpoints/ckpt-1_temp/part-00000-of-00001.data-00000-of-00001"
     ".tempstate157; No space left on device [Op:SaveV2]",
     "/r/checkpoints/ckpt-1_temp/part-00000-of-00001.data-00000-of-00001.tempstate157"),
    (tf.errors.PermissionDeniedError, "runs/x/checkpoints; Read-only file system",
     "runs/x/checkpoints"),
    (tf.errors.InvalidArgumentError,
     "{{function_node __wrapped__CreateSummaryFileWriter_device_/job:localhost/replica:0/"
     "task:0/device:CPU:0}} /r/tensorboard; File name too long [Op:CreateSummaryFileWriter]",
     "/r/tensorboard"),
])
def test_tensorflow_errors_are_recognised_by_their_message(kind, message, path):
    fault = environment_fault(kind(None, None, message))
    assert fault is not None and str(fault).startswith(f"{path}: ")


def test_other_errors_are_not_environment_faults(tmp_path):
    assert environment_fault(ValueError("No space left on device")) is None
    assert environment_fault(tf.errors.InvalidArgumentError(None, None, "bad shape")) is None
    assert environment_fault(FileNotFoundError(errno.ENOENT, "No such file", "/x")) is None
    # EEXIST only for a file where a folder must be, not for an existing folder.
    assert environment_fault(FileExistsError(errno.EEXIST, "File exists", str(tmp_path))) is None
    blocker = tmp_path / "file"
    blocker.write_text("")
    fault = environment_fault(FileExistsError(errno.EEXIST, "File exists", str(blocker)))
    assert fault is not None and str(fault).startswith(f"{blocker}: a file is in the way")


def test_a_fault_raised_inside_tf_data_keeps_its_exit_status():
    wrapped = tf.errors.UnknownError(None, None, "Traceback ...\nEnvironmentFault: /x: full\n")
    assert as_user_error(wrapped).exit_status == 4
    assert str(as_user_error(wrapped)) == "/x: full"


# ----------------------------------------------------------------------------- real file systems

@contextlib.contextmanager
def _tmpfs(folder, options: str):
    """A tmpfs mounted on `folder` (skips the test where this sandbox cannot mount one)."""
    os.makedirs(folder, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                             capture_output=True, check=False)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield str(folder)
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _remount(folder, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(folder)], check=True)


def test_write_atomically_on_a_full_disk_keeps_the_old_file_and_no_temporary(tmp_path):
    with _tmpfs(tmp_path / "disk", "size=64k") as disk:
        target = os.path.join(disk, "history.csv")
        write_atomically(target, lambda path: open(path, "w").write("old"))
        with pytest.raises(EnvironmentFault, match=f"{target}: no space left.*ENOSPC"):
            write_atomically(target, lambda path: open(path, "wb").write(b"x" * 200_000))
        assert os.listdir(disk) == ["history.csv"] and open(target).read() == "old"


def test_a_read_only_folder_is_refused_before_the_conversion(tmp_path):
    with _tmpfs(tmp_path / "disk", "size=64k,ro") as disk:
        with pytest.raises(EnvironmentFault, match="read-only.*writable disk"):
            check_new_file(os.path.join(disk, "model.onnx"), "--output", ".onnx")


def test_an_over_long_file_name_is_refused_before_the_conversion(tmp_path):
    with pytest.raises(EnvironmentFault, match="too long"):
        check_new_file(str(tmp_path / ("m" * 300 + ".onnx")), "--output", ".onnx")
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- orphans

def test_temporaries_of_dead_writers_are_removed_those_of_live_ones_kept(tmp_path):
    dead, host = _dead_pid(), temporary_prefix("x").split("-")[1]
    stale = [f".final_model.keras.tmp-{host}-{dead}-ab12.keras", f".3.tmp-{host}-{dead}-cd34"]
    kept = [f".final_model.keras.tmp-{host}-{os.getpid()}-ef56.keras",  # this process
            f".history.csv.tmp-{host}-1-gh78",  # a live process (init)
            f".history.csv.tmp-0badc0de-{dead}-ij90",  # another host: cannot be checked
            "final_model.keras", ".hidden", f".tmp-2-{dead}"]  # not a name this version writes
    for name in stale + kept:
        if ".3.tmp" in name:
            (tmp_path / name).mkdir()
            (tmp_path / name / "saved_model.pb").write_bytes(b"partial")
        else:
            (tmp_path / name).write_bytes(b"")
    removed = remove_stale_temporaries(str(tmp_path))
    assert sorted(os.path.basename(path) for path in removed) == sorted(stale)
    assert sorted(os.listdir(tmp_path)) == sorted(kept)


def test_a_run_dir_loses_the_temporaries_of_killed_writes_when_reopened(tmp_path):
    config = ExperimentConfig.from_fields(run_dir=str(tmp_path / "run"))
    prepare_run_dir(config)
    host = temporary_prefix("x").split("-")[1]
    left = [f".final_model.keras.tmp-{host}-{_dead_pid()}-ab12.keras",
            f".history.csv.tmp-{host}-{_dead_pid()}-cd34"]
    for name in left:
        (tmp_path / "run" / name).write_bytes(b"partial")
    assert prepare_run_dir(config) is True
    assert os.listdir(tmp_path / "run") == [CONFIG_FILE]


def test_a_failed_saved_model_export_leaves_no_partial_folder(tmp_path, monkeypatch):
    export_dir = tmp_path / "exported"
    export_dir.mkdir()
    killed = export_dir / f".1.tmp-{temporary_prefix('x').split('-')[1]}-{_dead_pid()}-zz"
    killed.mkdir()  # what an export killed with -9 left
    (killed / "variables").mkdir()

    def disk_fills(self, path, verbose=False):
        os.makedirs(os.path.join(path, "variables"))
        raise OSError(errno.ENOSPC, "No space left on device",
                      os.path.join(path, "variables", "variables.data-00000-of-00001"))

    # ExportArchive() makes an instance of its backend's subclass.
    monkeypatch.setattr(type(keras.export.ExportArchive()), "write_out", disk_fills)
    with pytest.raises(EnvironmentFault) as caught:
        export_saved_model(tiny_model(num_classes=3), (48, 40), str(export_dir))
    assert str(caught.value).startswith(f"{export_dir / '1'}: no space left")
    assert os.listdir(export_dir) == []  # neither the killed nor the failed export's folder


# ----------------------------------------------------------------------------- concurrent writers

def test_an_output_created_meanwhile_by_another_process_is_kept(tmp_path):
    target = str(tmp_path / "labels" / "a.png")
    os.makedirs(os.path.dirname(target))

    def other_process_wins(path: str) -> None:
        with open(path, "w") as handle:
            handle.write("mine")
        with open(target, "w") as handle:  # the other run writes the same name meanwhile
            handle.write("theirs")

    with pytest.raises(DestinationTaken, match="created by another process"):
        save_output(target, other_process_wins)
    assert open(target).read() == "theirs" and os.listdir(os.path.dirname(target)) == ["a.png"]
    save_output(target, other_process_wins, overwrite=True)  # --overwrite replaces
    assert open(target).read() == "mine"


# ----------------------------------------------------------------------------- training

def _config(demo_root: str, run_dir: str, *extra: str):
    values = flags.FlagValues()
    define_flags(values)
    values(["train", *TINY, "--epochs=1", f"--data_root={demo_root}", f"--run_dir={run_dir}",
            "--checkpoint_every_steps=1", *extra])
    return config_from_flags(values)


@pytest.fixture
def in_repo(monkeypatch):
    monkeypatch.chdir(ROOT)  # TINY's flagfile is relative


def _stray_files(run_dir: str) -> list[str]:
    return [os.path.join(folder, name) for folder, _, names in os.walk(run_dir)
            for name in names if ".tmp" in name or "_temp" in folder]


@pytest.mark.slow  # trains twice (about a minute on 2 cores)
def test_a_full_disk_at_a_checkpoint_then_the_rerun_resumes(demo_root, tmp_path, in_repo):
    with _tmpfs(tmp_path / "disk", "size=4m") as disk:
        run_dir = os.path.join(disk, "run")
        config = _config(demo_root, run_dir)
        with pytest.raises(EnvironmentFault) as caught:
            train(config)
        message = str(caught.value)
        assert "no space left on the device (ENOSPC)" in message, message
        assert run_dir in message and "free space" in message
        assert f"error: {message}" in open(os.path.join(run_dir, "train.log")).read()
        assert not os.path.exists(os.path.join(run_dir, RUN_LOCK_FILE))
        assert os.path.exists(os.path.join(run_dir, CONFIG_FILE))
        _remount(disk, "size=1g")  # space freed
        train(config)
        assert os.path.exists(os.path.join(run_dir, FINAL_MODEL))
        assert _stray_files(run_dir) == []


def test_a_read_only_run_dir_is_one_error(demo_root, tmp_path, in_repo):
    with _tmpfs(tmp_path / "disk", "size=1m,ro") as disk:
        with pytest.raises(EnvironmentFault, match="read-only"):
            train(_config(demo_root, os.path.join(disk, "run")))


def test_an_over_long_run_dir_is_refused_before_anything_is_written(demo_root, tmp_path,
                                                                      in_repo):
    too_long_name = str(tmp_path / ("r" * 300))
    with pytest.raises(EnvironmentFault,
                       match=r"too long for the file system \(ENAMETOOLONG\); choose a shorter"):
        train(_config(demo_root, too_long_name))
    too_deep = str(tmp_path / "/".join(["d" * 200] * 20))  # fine itself, not its sub-paths
    with pytest.raises(EnvironmentFault, match="is too long: the files train.py writes"):
        train(_config(demo_root, too_deep))
    assert os.listdir(tmp_path) == []


@pytest.mark.slow  # trains twice (about a minute on 2 cores)
def test_a_full_disk_at_the_final_save_then_the_rerun_saves(demo_root, tmp_path, in_repo,
                                                            monkeypatch):
    run_dir = str(tmp_path / "run")
    config = _config(demo_root, run_dir)
    real_save = keras.Model.save

    def disk_fills(self, path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(keras.Model, "save", disk_fills)
    with pytest.raises(EnvironmentFault, match=f"{run_dir}/{FINAL_MODEL}: no space left"):
        train(config)
    assert not os.path.exists(os.path.join(run_dir, FINAL_MODEL))
    assert _stray_files(run_dir) == []
    monkeypatch.setattr(keras.Model, "save", real_save)
    train(config)
    assert os.path.exists(os.path.join(run_dir, FINAL_MODEL))
    assert os.path.exists(os.path.join(run_dir, FINAL_WEIGHTS))


# ----------------------------------------------------------------------------- entry points

RAISES = """
import errno, os
import keras
from pspnet_tf.cli import app as cli
from pspnet_tf.errors import UserError

def main(argv):
    progress = keras.utils.Progbar(4)
    progress.update(2, values=[("loss", 240500785152.0)])  # the bar stays on its line
    if os.environ["FAULT_CASE"] == "disk":
        raise OSError(errno.ENOSPC, "No space left on device", "/runs/x/final_model.keras")
    raise KeyboardInterrupt

cli.run(main)
"""


@pytest.mark.parametrize("case, status, line", [
    ("disk", 4, "error: /runs/x/final_model.keras: no space left on the device (ENOSPC); "
                "free space on that disk (or use a folder on another one), then run the same "
                "command again"),
    ("interrupt", 130, "interrupted"),
])
def test_error_lines_start_on_their_own_line_after_a_progress_bar(case, status, line):
    result = subprocess.run([sys.executable, "-c", RAISES], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False,
                            env={**os.environ, "PYTHONPATH": ROOT, "FAULT_CASE": case},
                            timeout=300)
    assert result.returncode == status, result.stdout[-3000:]
    assert "Traceback" not in result.stdout
    lines = result.stdout.splitlines()
    assert lines[-1] == line and "loss: " in lines[-2]


def test_error_lines_start_on_their_own_line_on_a_terminal():
    import pty

    leader, follower = pty.openpty()
    process = subprocess.Popen([sys.executable, "-c", RAISES], cwd=ROOT,
                               stdout=follower, stderr=follower,
                               env={**os.environ, "PYTHONPATH": ROOT, "FAULT_CASE": "disk"})
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the terminal's other end closed
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    assert process.wait(timeout=300) == 4
    text = output.decode()
    assert "\r\nerror: /runs/x/final_model.keras: no space left" in text
    assert "loss: 240500785152.0000\r\n" in text.replace("\x1b[0m", "")


def test_a_full_disk_in_an_entry_point_is_one_line_with_status_4():
    script = ("import errno; from pspnet_tf.cli import app as cli\n"
              "def main(argv):\n"
              "    import tensorflow as tf\n"
              "    raise tf.errors.ResourceExhaustedError(None, None, '{{function_node x}} "
              "/r/checkpoints/ckpt-1_temp/part; No space left on device [Op:SaveV2]')\n"
              "cli.run(main)\n")
    result = run_python("-c", script, env={**os.environ, "PYTHONPATH": ROOT})
    assert result.returncode == 4 and "Traceback" not in result.stderr
    [line] = error_lines(result.stderr)
    assert line.startswith("error: /r/checkpoints/ckpt-1_temp/part: no space left")


def test_write_atomically_gives_the_mode_a_plain_open_gives(tmp_path):
    umask = os.umask(0o027)
    try:
        target = str(tmp_path / "out.txt")
        write_atomically(target, lambda path: open(path, "w").write("x"))
        exclusive = str(tmp_path / "exclusive.txt")
        write_atomically(exclusive, lambda path: open(path, "w").write("x"), exclusive=True)
    finally:
        os.umask(umask)
    assert os.stat(target).st_mode & 0o777 == 0o640
    assert os.stat(exclusive).st_mode & 0o777 == 0o640
    assert os.listdir(tmp_path) == sorted(os.listdir(tmp_path)) and len(os.listdir(tmp_path)) == 2
