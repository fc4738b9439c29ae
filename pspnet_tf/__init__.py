"""pspnet_tf: PSPNet semantic segmentation for TensorFlow 2 / Keras 3."""

import os

# TensorFlow's C++ INFO/WARNING lines (CUDA probing, tf.data op errors that the entry points
# report in one line) drown the progress output; a value the user set wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow turns its oneDNN CPU kernels on by default only on CPUs with AVX-512 VNNI/BF16 or
# AMX; on others (AVX2) they made an R-50-D8 training step about 1.7x faster in
# benchmarks/train_step.py. Effective when pspnet_tf is imported before TensorFlow, as the
# entry points do; a value the user set wins.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from pspnet_tf.models import build_pspnet, load_weights, save_weights  # noqa: E402

__all__ = ["build_pspnet", "load_weights", "save_weights"]
