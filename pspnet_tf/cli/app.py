"""Shared start-up of the absl entry points: quiet TensorFlow, one-line user errors."""

import re
import sys
from collections.abc import Callable

import tensorflow as tf
from absl import app

from pspnet_tf.errors import UserError
from pspnet_tf.cli_help import prepare_argv

tf.get_logger().setLevel("WARNING")  # keeps checkpoint-saver chatter out of the run log
_EMBEDDED_USER_ERROR = re.compile(r"UserError: (.+)")


def user_error_message(error: BaseException) -> str | None:
    """The one-line message of a UserError, also when raised inside a tf.data function."""
    if isinstance(error, UserError):
        return str(error)
    if isinstance(error, tf.errors.OpError):
        match = _EMBEDDED_USER_ERROR.search(str(error))
        if match:
            return match.group(1).strip()
    return None


def use_one_inter_op_thread_on_cpu() -> None:
    """On CPU-only hosts, run one op at a time (each op still uses every core).

    TensorFlow's default runs as many ops in parallel as there are cores, each itself
    multi-threaded, so they contend for small CPUs. On a 2-core CPU with oneDNN (as train.py
    runs) benchmarks/cpu_train_step.py measured 1.64 and 1.71 s per demo training step
    against 2.05 s with the default, in two runs. Hosts with GPUs keep TensorFlow's defaults.
    """
    if not tf.config.list_physical_devices("GPU"):
        tf.config.threading.set_inter_op_parallelism_threads(1)


def run(main: Callable[[list[str]], None]) -> None:
    """`absl.app.run(main)`, printing user errors as `error: ...` and exiting with 2."""

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
            sys.exit(2)

    app.run(guarded, argv=prepare_argv(sys.argv, main))
