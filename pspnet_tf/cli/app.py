"""Shared running of the absl entry points: quiet TensorFlow logs, one-line user errors."""

import sys
from collections.abc import Callable

import tensorflow as tf
from absl import app, flags

from pspnet_tf.cli.console import line_tracked_stdout, print_on_own_line
from pspnet_tf.cli.help import prepare_argv
from pspnet_tf.errors import ParameterError, RunInterrupted, UserError, as_user_error

tf.get_logger().setLevel("WARNING")  # keeps checkpoint-saver chatter out of the run log


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


def run(main: Callable[[list[str]], None]) -> None:
    """`absl.app.run(main)`, printing user errors as `error: ...` and exiting with their
    `exit_status` (2; 3 for a diverged training run; 4 for an environment fault such as a
    full disk), and an interrupted run's one line with
    its exit status (RunInterrupted; 130 for a Ctrl-C met outside a run's training loop),
    never a stack trace."""

    def guarded(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        use_one_inter_op_thread_on_cpu()
        try:
            main(argv)
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

    with line_tracked_stdout():  # so that those lines start on a line of their own
        app.run(guarded, argv=prepare_argv(sys.argv, main))
