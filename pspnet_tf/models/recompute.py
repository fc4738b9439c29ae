"""Recomputing the stem and the first two backbone stages in the backward pass, for less memory.

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


RECOMPUTED_THROUGH = "layer2"


def _stage_output(model: keras.Model, stage: str) -> keras.KerasTensor:
    """The output of a ResNet stage's last block (`<stage>_<last>_relu`)."""
    ends = [layer for layer in model.layers
            if layer.name.startswith(f"{stage}_") and layer.name.endswith("_relu")
            and layer.name.count("_") == 2]
    return max(ends, key=lambda layer: int(layer.name.split("_")[1])).output


def recompute_early_stages(model: keras.Model) -> bool:
    """Makes `model`'s training call keep only the images and layer2's output of the stem,
    layer1 and layer2, and run them again in the backward pass; returns whether it did.

    These work at 1/2 to 1/8 of the input resolution with few channels: activations a
    backward pass needs are large there and the arithmetic is small. On the R-50-D8
    training step at 2x512x512 (2-core CPU, oneDNN's pool) recomputing them cut the peak
    from about 4890 to 4160 MB (stem and layer1 alone: 4390 MB); in the benchmark's two
    runs the step took 1.09x and 0.99x as long as without it (docs/performance.md).
    BatchNorm runs the recomputation with the same batch statistics and writes its moving
    statistics back unchanged, so they advance once per step; the stages have no dropout.
    Hosts with a GPU or TPU keep the plain training call.
    """
    if has_accelerator():
        return False
    images = model.inputs[0]
    with input_history_kept(images):  # so that `model` still serialises
        stage = keras.Model(images, _stage_output(model, RECOMPUTED_THROUGH))
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
