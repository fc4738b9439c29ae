"""pspnet_tf: PSPNet semantic segmentation for TensorFlow 2 / Keras 3."""

import os
import sys
from importlib import metadata

from pspnet_tf.native_logs import native_logs_dropped, verbose_requested

# TensorFlow's C++ INFO/WARNING lines (CUDA probing, tf.data op errors that the entry points
# report in one line) drown the progress output; a value the user set wins, and
# PSPNET_VERBOSE=1 / --verbose keeps them.
_VERBOSE = verbose_requested()
if not _VERBOSE:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# TensorFlow turns its oneDNN CPU kernels on by default only on CPUs with AVX-512 VNNI/BF16 or
# AMX. On an AVX2 CPU they made the R-50-D8 training step 1.3x faster, but inference slower
# (docs/performance.md), so training asks for them; a value the user set wins. It must be
# set before TensorFlow is imported, which is here for `python train.py` and `pspnet-train`.
if os.path.basename(sys.argv[0]) in ("train.py", "pspnet-train"):
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

with native_logs_dropped(enabled=not _VERBOSE):  # TensorFlow's start-up lines
    from pspnet_tf.convert import from_pretrained, list_pretrained  # noqa: E402
    from pspnet_tf.models import (  # noqa: E402
        SegmentationModel,
        build_pspnet,
        load_weights,
        save_weights,
    )

try:
    __version__ = metadata.version("pspnet-tf")  # pyproject.toml is the one source
except metadata.PackageNotFoundError:  # a source checkout that was never pip-installed
    __version__ = "0+unknown"

__all__ = ["SegmentationModel", "__version__", "build_pspnet", "from_pretrained",
           "list_pretrained", "load_weights", "save_weights"]
