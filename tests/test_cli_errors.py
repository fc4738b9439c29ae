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
    "unknown flag": (["--batch_sise=2"],
                     "error: Unknown command line flag 'batch_sise'. Did you mean: batch_size ?"),
    "bad value": (["--batch_size=abc"], "error: flag --batch_size=abc: "),
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
