"""Builds the network an experiment config describes (train.py, evaluate.py, predict.py,
export.py and the converter all build it here, so they agree on the architecture).

The config is only a type hint here: config.py imports models/ (for BACKBONES), so a
runtime import of config.py would make models/ depend on the layer above it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras

from pspnet_tf.models.pspnet import build_pspnet
from pspnet_tf.models.segmenter import PSPNetSegmenter

if TYPE_CHECKING:
    from pspnet_tf.config import ExperimentConfig


def build_model(config: ExperimentConfig, training_heads: bool, tap_gradients: bool = False,
                recompute: str | None = None) -> PSPNetSegmenter:
    """The PSPNet that `config` describes, in its dtype policy (Keras keeps it global), with
    the training choices `tap_gradients` and `recompute` (see `PSPNetSegmenter`)."""
    keras.mixed_precision.set_global_policy(config.runtime.mixed_precision)
    return build_pspnet(**config.model, training_heads=training_heads,
                        scale=config.data.scale, dataset=config.data.dataset,
                        data_root=config.data.data_root, tap_gradients=tap_gradients,
                        recompute=recompute)
