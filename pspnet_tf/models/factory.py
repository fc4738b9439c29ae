"""Builds the network an experiment config describes (train.py, evaluate.py, predict.py,
export.py and the converter all build it here, so they agree on the architecture).

The config is only a type hint here: config.py imports models/ (for BACKBONES), so a
runtime import of config.py would make models/ depend on the layer above it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras

from pspnet_tf.models.pspnet import build_pspnet

if TYPE_CHECKING:
    from pspnet_tf.config import ExperimentConfig


def build_model(config: ExperimentConfig, training_heads: bool) -> keras.Model:
    """The PSPNet that `config` describes, in its dtype policy (Keras keeps it global)."""
    keras.mixed_precision.set_global_policy(config.runtime.mixed_precision)
    return build_pspnet(**config.model, training_heads=training_heads)
