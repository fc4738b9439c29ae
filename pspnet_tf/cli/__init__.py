"""The command-line entry points (train, evaluate, predict, export) and their start-up (app)."""

from pspnet_tf.cli.app import run, use_one_inter_op_thread_on_cpu, user_error_message

__all__ = ["run", "use_one_inter_op_thread_on_cpu", "user_error_message"]
