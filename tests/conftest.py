"""Shared test set-up: quiet TensorFlow logs and the CPU threading the entry points use."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from pspnet_tf.cli import use_one_inter_op_thread_on_cpu  # noqa: E402

use_one_inter_op_thread_on_cpu()
