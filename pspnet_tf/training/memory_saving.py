"""Whether a CPU training run trades step time for peak memory (`--memory_saving`).

Two measures, both for hosts without a GPU or TPU: oneDNN's system allocator
(`TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1`: malloc instead of oneDNN's pool, which keeps what it
once held) and `recompute_first_stage` (the stem and layer1 run again in the backward pass).
malloc hands large tensors back to the kernel when they are freed, so every step pays page
faults to get them again. Training steps under MirroredStrategy on the CPU, as train.py runs
them, on a 2-core AMD EPYC (AVX2), one process per setting (docs/performance.md):

| step | both measures | neither |
|---|---|---|
| R-50-D8, batch 2, 512x512 | 27.5 s, 4108 MB peak | 19.4 s, 5298 MB |
| demo R-18-D8, batch 8, 128x128 | 4.1 s, 1346 MB | 2.0 s, 1415 MB |

Memory matters at the first size and costs twice the time for little gain at the second, so
"auto" turns the measures on from AUTO_MIN_PIXELS crop pixels per worker and step. glibc
settings that keep freed memory for reuse (no mmap, no trimming; one arena or several) kept
the steps fast but peaked at 5265-5663 MB, no better than oneDNN's pool.
"""

import os

import tensorflow as tf

from pspnet_tf.config import ExperimentConfig
from pspnet_tf.training.strategy import parse_tf_config

AUTO_MIN_PIXELS = 2 * 512 * 512
ALLOCATOR_VARIABLE = "TF_ONEDNN_USE_SYSTEM_ALLOCATOR"


def memory_saving_on(config: ExperimentConfig) -> bool:
    """`--memory_saving`: on, off, or for auto whether a worker's batch (the global batch
    over TF_CONFIG's training tasks) holds at least AUTO_MIN_PIXELS crop pixels."""
    setting = config.runtime.memory_saving
    if setting != "auto":
        return setting == "on"
    workers = max(parse_tf_config(os.environ.get("TF_CONFIG")).num_workers, 1)
    height, width = config.data.crop_size
    return config.optimizer.batch_size // workers * height * width >= AUTO_MIN_PIXELS


def choose_cpu_allocator(config: ExperimentConfig) -> None:
    """Sets TF_ONEDNN_USE_SYSTEM_ALLOCATOR unless the user set it: "1" when
    `memory_saving_on(config)` on a host without a GPU or TPU (where the step's tensors are
    CPU tensors), else "0". TensorFlow reads it at its first CPU tensor, so call this before
    any op runs (the entry point does, right after parsing its flags); listing the physical
    devices starts nothing."""
    accelerated = any(tf.config.list_physical_devices(kind) for kind in ("GPU", "TPU"))
    saving = memory_saving_on(config) and not accelerated
    os.environ.setdefault(ALLOCATOR_VARIABLE, "1" if saving else "0")
