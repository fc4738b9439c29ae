"""Every custom layer of pspnet_tf through the shared harness (tests/layer_testing.py)."""

from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from layer_testing import assert_same_outputs, run_layer_test

from pspnet_tf.models.layers import (
    AdaptiveAveragePooling2D,
    Conv2D,
    FusedBatchNormalization,
    PyramidBottleneckConv,
    ResizeLike,
    SpatialDropout2D,
)


@pytest.mark.parametrize("bins, input_shape", [(1, (2, 5, 4, 3)), (3, (2, 10, 7, 4)),
                                               (6, (1, 13, 13, 2))])
def test_adaptive_average_pooling(bins, input_shape):
    batch, _, _, channels = input_shape
    run_layer_test(AdaptiveAveragePooling2D, {"bins": bins}, input_shape,
                   expected_output_shape=(batch, bins, bins, channels))


@pytest.mark.parametrize("features_size", [(7, 9), (1, 1)])
def test_pyramid_bottleneck_conv(features_size):
    pooled = [(2, bins, bins, 4) for bins in (1, 2, 3, 6)]
    run_layer_test(PyramidBottleneckConv, {"filters": 5}, [(2, *features_size, 6), *pooled],
                   expected_output_shape=(2, *features_size, 5),
                   expected_num_trainable_weights=1)


@pytest.mark.parametrize("tap_gradient", [False, True])
def test_conv2d(tap_gradient):
    run_layer_test(Conv2D, {"filters": 4, "kernel_size": 3, "padding": "same",
                            "dilation_rate": 2, "tap_gradient": tap_gradient},
                   (2, 7, 9, 3), expected_output_shape=(2, 7, 9, 4),
                   expected_num_trainable_weights=2)


def test_spatial_dropout():
    run_layer_test(SpatialDropout2D, {"rate": 0.5, "seed": 1}, (2, 5, 6, 3),
                   expected_output_shape=(2, 5, 6, 3))


def test_spatial_dropout_follows_the_enclosing_training_call():
    """Keras's layer records training=False in a functional graph; this one records
    nothing, so a keras.Function of the graph drops out inside a training call."""
    images = keras.Input((4, 4, 8))
    dropped = SpatialDropout2D(0.5, seed=1)(images)
    part = keras.Function(images, dropped)

    class Outer(keras.layers.Layer):
        def call(self, inputs, training=None):
            return part(inputs)

    ones = tf.ones((2, 4, 4, 8))
    np.testing.assert_array_equal(Outer()(ones, training=False), ones)
    assert np.any(Outer()(ones, training=True).numpy() == 0.0)


@pytest.mark.parametrize("source, reference", [((2, 5, 6, 3), (2, 11, 13, 8)),
                                               ((1, 12, 10, 2), (1, 4, 5, 1))])
def test_resize_like(source, reference):
    run_layer_test(ResizeLike, {}, [source, reference],
                   expected_output_shape=(source[0], *reference[1:3], source[3]),
                   constant_inputs=(1,))


def test_fused_batch_normalization():
    run_layer_test(FusedBatchNormalization, {"epsilon": 1e-5, "momentum": 0.9,
                                             "synchronized": True},
                   (2, 5, 6, 3), expected_output_shape=(2, 5, 6, 3),
                   expected_num_trainable_weights=2)


def _batch_norm_training_step(layer_cls: type, run: Any) -> tuple[list[np.ndarray], set]:
    """One training call of a BatchNorm with PyTorch's defaults and non-trivial weights:
    outputs, the gradients of a loss for the input, gamma and beta, the moving statistics
    after it, and the op types of the traced step."""
    rng = np.random.default_rng(0)
    images = tf.constant(rng.normal(2.0, 3.0, (2, 7, 5, 6)).astype("float32"))
    layer = layer_cls(epsilon=1e-5, momentum=0.9, synchronized=True)
    layer.build(images.shape)
    layer.set_weights([rng.uniform(0.5, 2.0, 6), rng.normal(size=6), rng.normal(size=6),
                       rng.uniform(0.5, 2.0, 6)])

    def step():
        with tf.GradientTape() as tape:
            tape.watch(images)
            outputs = layer(images, training=True)
            loss = tf.reduce_sum(outputs * tf.sin(outputs))
        return [outputs, *tape.gradient(loss, [images, layer.gamma, layer.beta])]

    results = run(step)
    traced = tf.function(step).get_concrete_function()
    op_types = {op.type for op in traced.graph.get_operations()}
    return [np.asarray(r) for r in results] + [layer.moving_mean.numpy(),
                                                layer.moving_variance.numpy()], op_types


@pytest.mark.parametrize("run", ["eager", "tf.function", "jit_compile", "one-replica strategy"])
def test_fused_batch_normalization_trains_like_keras(run):
    """The fused training call gives Keras' outputs, gradients and moving statistics (biased
    batch variance) to float32 rounding, and is the fused op where the statistics are the
    replica's own: here, without a strategy and on a one-replica MirroredStrategy."""
    runners = {
        "eager": lambda step: step(),
        "tf.function": lambda step: tf.function(step)(),
        "jit_compile": lambda step: tf.function(step, jit_compile=True)(),
        "one-replica strategy": lambda step: tf.distribute.MirroredStrategy(["/cpu:0"]).run(
            tf.function(step)),
    }
    ours, op_types = _batch_norm_training_step(FusedBatchNormalization, runners[run])
    keras_results, keras_op_types = _batch_norm_training_step(
        keras.layers.BatchNormalization, runners[run])
    assert "FusedBatchNormV3" in op_types and "FusedBatchNormV3" not in keras_op_types
    for name, mine, theirs in zip(["outputs", "input gradient", "gamma gradient",
                                   "beta gradient", "moving mean", "moving variance"],
                                  ours, keras_results):
        scale = float(np.abs(theirs).max())
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=2e-6 * scale, err_msg=name)


def test_fused_batch_normalization_keeps_keras_inference_and_frozen_statistics():
    """Inference and a non-trainable layer use the moving statistics, as Keras does."""
    rng = np.random.default_rng(1)
    images = rng.normal(size=(2, 4, 4, 3)).astype("float32")
    weights = [np.float32(w) for w in (rng.uniform(0.5, 2.0, 3), rng.normal(size=3),
                                       rng.normal(size=3), rng.uniform(0.5, 2.0, 3))]
    layers = []
    for layer_cls in (FusedBatchNormalization, keras.layers.BatchNormalization):
        layer = layer_cls()
        layer.build(images.shape)
        layer.set_weights(weights)
        layers.append(layer)
    assert_same_outputs(layers[0](images, training=False), layers[1](images, training=False))
    for layer in layers:
        layer.trainable = False
    assert_same_outputs(layers[0](images, training=True), layers[1](images, training=True))
    np.testing.assert_array_equal(layers[0].moving_mean.numpy(), weights[2])


def test_pyramid_bottleneck_config_holds_only_its_own_arguments():
    layer = PyramidBottleneckConv(5, name="bottleneck_conv")
    own = set(layer.get_config()) - set(keras.layers.Layer(name="x").get_config())
    assert own == {"filters", "kernel_initializer", "tap_gradient", "inference_form"}
    layer([keras.Input((None, None, 6)), keras.Input((1, 1, 4)), keras.Input((2, 2, 4))])
    assert [(w.path, tuple(w.shape)) for w in layer.weights] == [
        ("bottleneck_conv/kernel", (3, 3, 14, 5))]  # as Conv2D named it: checkpoints load


def test_pyramid_bottleneck_restores_training_checkpoints_of_the_conv2d_it_was(tmp_path):
    """Runs checkpointed while the layer was a keras.layers.Conv2D subclass still resume."""
    conv = keras.layers.Conv2D(5, 3, padding="same", use_bias=False)
    conv.build((None, 7, 7, 14))
    conv.kernel.assign(np.random.default_rng(0).normal(size=(3, 3, 14, 5)).astype("float32"))
    path = tf.train.Checkpoint(layer=conv).save(str(tmp_path / "ckpt"))
    layer = PyramidBottleneckConv(5)
    layer.build([(None, 7, 7, 6), (None, 1, 1, 8)])
    tf.train.Checkpoint(layer=layer).restore(path).assert_consumed()
    np.testing.assert_array_equal(layer.kernel.numpy(), conv.kernel.numpy())


class _Unregistered(keras.layers.Layer):
    def __init__(self, bins: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.bins = bins

    def call(self, inputs):
        return inputs * self.bins


@keras.saving.register_keras_serializable(package="pspnet_tf_tests")
class _IncompleteConfig(_Unregistered):
    def get_config(self) -> dict:
        return super().get_config()  # registered, but without "bins"


@pytest.mark.parametrize("layer_cls, problem", [(_Unregistered, "not registered"),
                                                (_IncompleteConfig, "get_config lacks")])
def test_the_harness_catches_what_breaks_loading(layer_cls, problem):
    with pytest.raises(AssertionError, match=problem):
        run_layer_test(layer_cls, {"bins": 2}, (1, 3, 3, 2), (1, 3, 3, 2))


def test_the_preprocessor_resizes_keeping_the_ratio_and_normalises():
    from pspnet_tf.data.transforms import IMAGE_MEAN, IMAGE_STD
    from pspnet_tf.models import PSPNetPreprocessor

    image = np.random.default_rng(3).integers(0, 256, (1, 30, 50, 3), dtype=np.uint8)
    layer = PSPNetPreprocessor((40, 20))
    outputs = layer(image)
    # long edge 50 -> at most 40, short edge 30 -> at most 20: factor 2/3, 20 x 33.
    assert outputs.shape == (1, 20, 33, 3) and outputs.dtype == tf.float32
    resized = np.clip(np.round(tf.image.resize(image.astype("float32"), (20, 33)).numpy()), 0, 255)
    np.testing.assert_allclose(outputs, (resized - IMAGE_MEAN) / IMAGE_STD, atol=1e-6)
    np.testing.assert_array_equal(layer(image, size=(20, 33)), outputs)  # a static size
    assert layer(image, ratio=0.5).shape == (1, 10, 17, 3)
    assert [int(edge) for edge in layer.network_size(30, 50)] == [20, 33]
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(revived) is PSPNetPreprocessor and revived.scale == (40, 20)
