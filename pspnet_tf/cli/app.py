"""Shared running of the absl entry points: quiet TensorFlow logs, one-line user errors."""

import sys
from collections.abc import Callable

import tensorflow as tf
from absl import app

from pspnet_tf.cli.help import prepare_argv
from pspnet_tf.errors import RunInterrupted, UserError, user_error_message

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
    `exit_status` (2; 3 for a diverged training run), and an interrupted run's one line with
    its exit status (RunInterrupted; 130 for a Ctrl-C met outside a run's training loop),
    never a stack trace."""

    def guarded(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        use_one_inter_op_thread_on_cpu()
        try:
            main(argv)
        except (UserError, tf.errors.OpError) as error:
            message = user_error_message(error)
            if message is None:
                raise
            print(f"error: {message}", file=sys.stderr)
            sys.exit(error.exit_status if isinstance(error, UserError) else 2)
        except RunInterrupted as interrupted:
            print(interrupted, file=sys.stderr)
            sys.exit(interrupted.exit_status)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    app.run(guarded, argv=prepare_argv(sys.argv, main))
