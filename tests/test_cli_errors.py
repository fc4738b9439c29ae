"""Flag mistakes in every command: one `error: ...` line and exit status 2 (in-process);
output into a closed pipe: no traceback and status 141 (a fresh process, for the pipe)."""

import os
import subprocess
import sys

import pytest

from helpers import console_scripts, run_command

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = sorted(console_scripts())
MISTAKES = {
    "unknown flag": (["--data_rot=x"],
                     "error: Unknown command line flag 'data_rot'. Did you mean: data_root ?"),
    "bad value": (["--dataset=nope"], "error: flag --dataset=nope: "),
    "missing flagfile": (["--flagfile=configs/nope.cfg"],
                         "error: cannot read the flagfile: [Errno 2] No such file or directory: "
                         "'configs/nope.cfg'"),
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_a_flag_mistake_is_one_error_line_and_status_2(command, mistake):
    args, start = MISTAKES[mistake]
    result = run_command(command, *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(start), result.stderr
    assert "FATAL" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [name for name in COMMANDS if name != "pspnet-train"])
def test_a_flag_the_command_does_not_read_is_refused_on_the_command_line(command):
    result = run_command(command, "--flagfile=configs/demo.cfg", "--epochs=3")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: --epochs is not read by {command} (it is a training flag); leave it out (a "
        "--flagfile may still set it)"]


@pytest.mark.parametrize("args, line", [
    (["--noskip_bad_samples"], "error: --skip_bad_samples is not read by pspnet-verify (it is "
                               "a training flag); "),
    (["--jit_compile"], "error: --jit_compile is not read by pspnet-verify (it is read by "
                        "pspnet-train, pspnet-evaluate, pspnet-predict, pspnet-export, "
                        "pspnet-submit); "),
])
def test_a_refused_flag_is_named_also_when_negated_or_read_elsewhere(args, line):
    result = run_command("pspnet-verify", *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(line), result.stderr


def test_flags_the_command_does_not_read_are_accepted_from_a_flagfile(demo_root):
    # configs/demo.cfg also sets --epochs, --learning_rate, --run_dir ... for pspnet-train
    result = run_command("pspnet-verify", "--flagfile=configs/demo.cfg",
                         f"--data_root={demo_root}")
    assert result.returncode == 0, result.stderr
    assert "no problems found" in result.stdout


@pytest.mark.parametrize("command", [name for name in COMMANDS if name != "pspnet-train"])
def test_every_command_reads_a_shared_flagfile_past_its_training_flags(command):
    result = run_command(command, "--flagfile=configs/demo.cfg")
    assert "is not read by" not in result.stderr
    assert "error: " in result.stderr  # stops later, on what the command itself lacks


def test_help_into_a_closed_pipe_ends_quietly_with_status_141():
    reader, writer = os.pipe()
    os.close(reader)  # the reader quit before anything was written (`| head` done early)
    try:
        result = subprocess.run([sys.executable, "train.py", "--help"], cwd=ROOT,
                                stdout=writer, stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(writer)
    assert result.returncode == 141
    assert result.stderr == ""
