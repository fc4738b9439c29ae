"""Whether a CPU training run trades step time for peak memory (`--memory_saving`).

The measure is `recompute_early_stages` (pspnet_tf/models/recompute.py): the stem, layer1
and layer2 run again in the backward pass instead of keeping their activations, on hosts
without a GPU or TPU. On the R-50-D8 step at 2x512x512 (2-core AMD EPYC, AVX2; one process
per setting, docs/performance.md) it took the peak from 4819 to 4163 MB and from 4833 to
4217 MB in two benchmark runs, within 5% of PyTorch's, for 1.09x and 0.99x the step time; on
the demo's R-18-D8 at 8x128x128 there is little memory to save. So "auto" turns it on from
AUTO_MIN_PIXELS crop pixels per worker and step.

oneDNN's allocator stays its pool. Its malloc alternative (`TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1`,
which TensorFlow reads from the environment, so users can still choose it) hands large
tensors back to the kernel when they are freed and page-faults to get them again on every
step: the R-50-D8 step took 27.5 s instead of 19.4 s for a 4108 MB peak, and the demo ran at
half speed. Neither glibc's settings for keeping freed memory (no mmap, no trimming; one
arena or several) nor transparent huge pages changed that trade.
"""

import os

from pspnet_tf.config import ExperimentConfig
from pspnet_tf.training.strategy import parse_tf_config

AUTO_MIN_PIXELS = 2 * 512 * 512


def memory_saving_on(config: ExperimentConfig) -> bool:
    """`--memory_saving`: on, off, or for auto whether a worker's batch (the global batch
    over TF_CONFIG's training tasks) holds at least AUTO_MIN_PIXELS crop pixels."""
    setting = config.runtime.memory_saving
    if setting != "auto":
        return setting == "on"
    workers = max(parse_tf_config(os.environ.get("TF_CONFIG")).num_workers, 1)
    height, width = config.data.crop_size
    return config.optimizer.batch_size // workers * height * width >= AUTO_MIN_PIXELS
