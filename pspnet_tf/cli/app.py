"""Shared running of the absl entry points: quiet TensorFlow logs, one-line user errors."""

import sys
from collections.abc import Callable

import tensorflow as tf
from absl import app

from pspnet_tf.cli.console import line_tracked_stdout, print_on_own_line
from pspnet_tf.cli.help import prepare_argv
from pspnet_tf.errors import RunInterrupted, UserError, as_user_error

tf.get_logger().setLevel("WARNING")  # keeps checkpoint-saver chatter out of the run log


def use_one_inter_op_thread_on_cpu() -> None:
    """On CPU-only hosts, run one op at a time (each op still uses every core).

    TensorFlow's default runs as many ops in parallel as there are cores, each itself
    multi-threaded, so they contend for small CPUs (figures in docs/performance.md). Hosts
    with GPUs keep TensorFlow's defaults.
    """
    if not tf.config.list_physical_devices("GPU"):
        tf.config.threading.set_inter_op_parallelism_threads(1)


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
            print_on_own_line(f"error: {user_error}")
            sys.exit(user_error.exit_status)
        except RunInterrupted as interrupted:
            print_on_own_line(str(interrupted))
            sys.exit(interrupted.exit_status)
        except KeyboardInterrupt:
            print_on_own_line("interrupted")
            sys.exit(130)

    with line_tracked_stdout():  # so that those lines start on a line of their own
        app.run(guarded, argv=prepare_argv(sys.argv, main))
