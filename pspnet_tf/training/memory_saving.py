"""The training choices that trade nothing in the result for speed or memory, resolved per
host from `--tap_gradients` and `--memory_saving` (both "auto", "on" or "off").

- Tap gradients (`PSPNetSegmenter(tap_gradients=True)`): the stride-1 convolutions compute
  their gradients by matrix products per kernel tap, faster than TensorFlow's on CPUs.
  auto: on where TensorFlow sees no GPU or TPU (cuDNN's own gradient is fast).
- Recomputation (`PSPNetSegmenter(recompute="layer2")`): the stem, layer1 and layer2 run
  again in the backward pass instead of keeping their activations, which lowers the peak
  memory of large CPU batches at a small cost in step time. auto: on where TensorFlow sees
  no GPU or TPU and a worker's batch holds at least AUTO_MIN_PIXELS crop pixels; small
  batches (the demo's) have little to save.

The resolved choices are logged in train.log and recorded in the training model's config;
config.json keeps the settings as given, so a run resumed on another host resolves them
there. Figures: docs/performance.md.
"""

import dataclasses
import os

from pspnet_tf.config import ExperimentConfig
from pspnet_tf.models.convolution import has_accelerator
from pspnet_tf.training.strategy import parse_tf_config

AUTO_MIN_PIXELS = 2 * 512 * 512
RECOMPUTED_THROUGH = "layer2"


@dataclasses.dataclass(frozen=True)
class TrainingChoices:
    """The `PSPNetSegmenter` training options a run uses."""

    tap_gradients: bool
    recompute: str | None


def memory_saving_on(config: ExperimentConfig) -> bool:
    """`--memory_saving`: on, off, or for auto whether this host has no GPU or TPU and a
    worker's batch (the global batch over TF_CONFIG's training tasks) holds at least
    AUTO_MIN_PIXELS crop pixels."""
    setting = config.runtime.memory_saving
    if setting != "auto":
        return setting == "on"
    workers = max(parse_tf_config(os.environ.get("TF_CONFIG")).num_workers, 1)
    height, width = config.data.crop_size
    large = config.optimizer.batch_size // workers * height * width >= AUTO_MIN_PIXELS
    return large and not has_accelerator()


def tap_gradients_on(config: ExperimentConfig) -> bool:
    """`--tap_gradients`: on, off, or for auto whether this host has no GPU or TPU."""
    setting = config.runtime.tap_gradients
    return not has_accelerator() if setting == "auto" else setting == "on"


def training_choices(config: ExperimentConfig) -> TrainingChoices:
    """The training options `config` asks for on this host."""
    return TrainingChoices(tap_gradients=tap_gradients_on(config),
                           recompute=RECOMPUTED_THROUGH if memory_saving_on(config) else None)
