"""What a command does to the process before TensorFlow loads: a quiet start.

TensorFlow's C++ INFO/WARNING lines (CUDA probing, tf.data op errors that the commands
report in one line) drown the progress output, so TF_CPP_MIN_LOG_LEVEL=2; its start-up
lines, written before it reads that variable, are caught on file descriptor 2 while it
loads and makes its first device query (`failed call to cuInit` on hosts without a GPU).
PSPNET_VERBOSE=1 or --verbose keeps every line; a value the user set for a variable wins.
Training also asks for the oneDNN CPU kernels (TF_ENABLE_ONEDNN_OPTS=1), which TensorFlow
turns on by default only on CPUs with AVX-512 VNNI/BF16 or AMX: on an AVX2 CPU they make the
training step faster but inference slower (docs/performance.md).

Only the commands' launcher (pspnet_tf_launch) calls `start`, before anything imports
TensorFlow (`import pspnet_tf` does); importing the library changes nothing in the process.
"""

import os
import sys

from pspnet_tf_launch.native_logs import native_logs_dropped, verbose_requested


def start(*, onednn: bool = False) -> None:
    """Sets TensorFlow's start-up variables (when it has not loaded yet) and loads it with
    its C++ start-up lines dropped, unless --verbose / PSPNET_VERBOSE=1; `onednn` asks for
    the oneDNN CPU kernels (training)."""
    verbose = verbose_requested()
    if "tensorflow" not in sys.modules:  # read once, when TensorFlow loads
        if not verbose:
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        if onednn:
            os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    with native_logs_dropped(enabled=not verbose):
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")
