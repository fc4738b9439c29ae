"""Recomputing the stem and the first backbone stage in the backward pass, for less memory.

Training only, like `use_tap_gradients`: `compile_for_training` calls it when
`--memory_saving` is on (pspnet_tf/training/memory_saving.py), and it acts on CPU hosts. The
model keeps its layers, weights, configuration and forward values; only its training call
changes, so saved models, inference and export are as before.
"""

import contextlib
from collections.abc import Iterator

import keras
import tensorflow as tf

from pspnet_tf.compat import input_history_kept
from pspnet_tf.models.convolution import has_accelerator


@contextlib.contextmanager
def _statistics_frozen(layers: list[keras.layers.BatchNormalization]) -> Iterator[None]:
    """BatchNorm in training mode with momentum 1: the same outputs (batch statistics), and
    a moving-statistics update that writes back the value already there."""
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 1.0
    try:
        yield
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum


def _first_stage_output(model: keras.Model) -> keras.KerasTensor:
    """The output of ResNet layer1's last block (`layer1_<last>_relu`)."""
    ends = [layer for layer in model.layers
            if layer.name.startswith("layer1_") and layer.name.endswith("_relu")
            and layer.name.count("_") == 2]
    return max(ends, key=lambda layer: int(layer.name.split("_")[1])).output


def recompute_first_stage(model: keras.Model) -> bool:
    """Makes `model`'s training call keep only the images and layer1's output of the stem
    and layer1, and run both again in the backward pass; returns whether it did.

    Stem and layer1 work at 1/2 and 1/4 of the input resolution, where the activations
    that a backward pass needs are largest: recomputing them cut the R-50-D8 training step's
    peak from 4532 to about 4100 MB at the cost of their forward pass again
    (docs/performance.md). BatchNorm runs the recomputation with the same batch statistics
    and writes its moving statistics back unchanged, so they advance once per step; the
    stage has no dropout. Hosts with a GPU or TPU keep the plain training call.
    """
    if has_accelerator():
        return False
    images = model.inputs[0]
    with input_history_kept(images):  # so that `model` still serialises
        stage = keras.Model(images, _first_stage_output(model))
        rest = keras.Model([images, stage.output], model.output)
    batch_norms = [layer for layer in stage.layers
                   if isinstance(layer, keras.layers.BatchNormalization)]
    plain_call = model.call

    @tf.custom_gradient
    def run_stage(inputs: tf.Tensor):
        outputs = stage(inputs, training=True)

        def gradient(upstream: tf.Tensor, variables: list[tf.Variable]):
            with _statistics_frozen(batch_norms), tf.GradientTape() as tape:
                tape.watch(inputs)
                again = stage(inputs, training=True)
            input_gradient, *variable_gradients = tape.gradient(
                again, [inputs, *variables], output_gradients=upstream)
            return input_gradient, variable_gradients

        return outputs, gradient

    def call(inputs, training=None, mask=None):
        if not training:
            return plain_call(inputs, training=training, mask=mask)
        inputs = tf.convert_to_tensor(inputs)
        return rest([inputs, run_stage(inputs)], training=True)

    model.call = call
    return True
