"""Shared running of the absl entry points: quiet TensorFlow logs, one-line user errors."""

import os
import sys
from collections.abc import Callable

import tensorflow as tf
from absl import app, flags

from pspnet_tf.cli.console import line_tracked_stdout, print_on_own_line
from pspnet_tf.cli.help import USAGE_EXIT_STATUS, prepare_argv
from pspnet_tf.errors import ParameterError, RunInterrupted, UserError, as_user_error

tf.get_logger().setLevel("WARNING")  # keeps checkpoint-saver chatter out of the run log

# 128 + SIGPIPE: what a shell reports for a writer that a closed pipe stopped (`yes | head`).
BROKEN_PIPE_EXIT_STATUS = 141
_FLAGFILE_PREFIX = "ERROR:: Unable to open flagfile: "


def use_one_inter_op_thread_on_cpu() -> None:
    """On CPU-only hosts, run one op at a time (each op still uses every core).

    TensorFlow's default runs as many ops in parallel as there are cores, each itself
    multi-threaded, so they contend for small CPUs (figures in docs/performance.md). Hosts
    with GPUs keep TensorFlow's defaults.
    """
    if not tf.config.list_physical_devices("GPU"):
        tf.config.threading.set_inter_op_parallelism_threads(1)


# Library parameters whose flag has another name (the others share theirs: config fields
# and flags are one record, config.py).
_FLAGS_OF_PARAMETERS = {"config": "flagfile", "output_dir": "output"}


def _flag_name(parameter: str) -> str:
    """`--FLAG` for a library parameter that is a flag of the running command, else the
    parameter's own name."""
    flag = _FLAGS_OF_PARAMETERS.get(parameter, parameter)
    # --flagfile is absl's own, not in FLAGS
    return f"--{flag}" if flag in flags.FLAGS or flag == "flagfile" else parameter


def user_error_line(error: UserError) -> str:
    """The `error:` line of a UserError, a ParameterError's parameters named as flags."""
    message = error.render(_flag_name) if isinstance(error, ParameterError) else str(error)
    return f"error: {message}"


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a flag mistake (unknown flag, bad value, unreadable
    flagfile) printed as one `error: ...` line and exit status 2 instead of absl's
    `FATAL Flags parsing error` and status 1."""
    try:
        return flags.FLAGS(argv)
    except flags.CantOpenFlagFileError as error:
        reason = str(error).removeprefix(_FLAGFILE_PREFIX)
        print_on_own_line(f"error: cannot read the flagfile: {reason}; check the --flagfile "
                          "path (the shipped flagfiles are found by name, see --help)")
    except flags.Error as error:
        print_on_own_line(f"error: {error}; see --help")
    sys.exit(USAGE_EXIT_STATUS)


def _end_quietly_on_closed_pipe() -> None:
    """What well-behaved tools do when the reader of their output quits (`| head`): stop
    without a message, with the status a SIGPIPE would give. Python's advice (signal module
    docs): point stdout at devnull so that the exit's own flush does not raise again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(BROKEN_PIPE_EXIT_STATUS)


def run(main: Callable[[list[str]], None]) -> None:
    """`absl.app.run(main)`, printing user errors as `error: ...` and exiting with their
    `exit_status` (2, also for a flag mistake; 3 for a diverged training run; 4 for an
    environment fault such as a full disk), and an interrupted run's one line with
    its exit status (RunInterrupted; 130 for a Ctrl-C met outside a run's training loop),
    never a stack trace; output into a closed pipe ends quietly with status 141."""

    def guarded(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        use_one_inter_op_thread_on_cpu()
        try:
            main(argv)
        except BrokenPipeError:
            raise  # not an environment fault: the reader quit (see below)
        except (UserError, OSError, tf.errors.OpError) as error:
            user_error = as_user_error(error)  # environment faults too (exit status 4)
            if user_error is None:
                raise
            print_on_own_line(user_error_line(user_error))
            sys.exit(user_error.exit_status)
        except RunInterrupted as interrupted:
            print_on_own_line(str(interrupted))
            sys.exit(interrupted.exit_status)
        except KeyboardInterrupt:
            print_on_own_line("interrupted")
            sys.exit(130)

    try:
        with line_tracked_stdout():  # so that those lines start on a line of their own
            try:
                app.run(guarded, argv=prepare_argv(sys.argv, main), flags_parser=parse_flags)
            finally:
                sys.stdout.flush()  # a closed pipe shows here, not in the exit's own flush
    except BrokenPipeError:
        _end_quietly_on_closed_pipe()
