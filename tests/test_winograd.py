"""Winograd's F(2x2, 3x3) convolutions: as exact as the convolution op, in the layers, the
inference copies, the Predictor and the SavedModel."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import DEMO_SCALE, randomise, tiny_model
from layer_testing import run_layer_test, run_serialization_test

from pspnet_tf.config import ExperimentConfig
from pspnet_tf.errors import ParameterError
from pspnet_tf.inference.deploy import export_model
from pspnet_tf.inference.export import METADATA_FILE, export_saved_model
from pspnet_tf.inference.modes import predictor_for
from pspnet_tf.models import winograd_conversion
from pspnet_tf.models.factory import build_model
from pspnet_tf.models.folding import fold_batchnorm
from pspnet_tf.models.layers import PyramidBottleneckConv, WinogradConv2D
from pspnet_tf.models.winograd import winograd_conv2d, winograd_kernel
from pspnet_tf.models.winograd_conversion import (
    inference_network,
    winograd_layers,
    with_direct_convolutions,
    with_winograd_convolutions,
)

# The convolutions of at least 512 input channels of tiny_model's R-18 (layer4 but its
# first, strided block's first convolution) and the PPM bottleneck on layer4's 512 channels.
R18_WINOGRAD_LAYERS = ["layer4_0_conv2", "layer4_1_conv1", "layer4_1_conv2", "bottleneck_conv"]


def _convolutions(shape, dilation, seed=0):
    """(float32 winograd_conv2d, float32 convolution op, float64 convolution) outputs."""
    rng = np.random.default_rng(seed)
    inputs = rng.standard_normal(shape).astype(np.float32)
    kernel = rng.standard_normal((3, 3, shape[-1], 7)).astype(np.float32)
    exact = tf.nn.conv2d(inputs.astype(np.float64), kernel.astype(np.float64), 1, "SAME",
                         dilations=list(dilation)).numpy()
    direct = tf.nn.conv2d(inputs, kernel, 1, "SAME", dilations=list(dilation)).numpy()
    function = tf.function(lambda x: winograd_conv2d(x, winograd_kernel(kernel), dilation),
                           input_signature=[tf.TensorSpec([None, None, None, shape[-1]])])
    return function(inputs).numpy(), direct, exact


@pytest.mark.parametrize("shape, dilation", [
    ((2, 13, 7, 6), (1, 1)), ((1, 8, 8, 3), (1, 1)), ((1, 9, 17, 5), (2, 2)),
    ((1, 31, 20, 3), (4, 4)), ((1, 5, 12, 4), (2, 1)), ((1, 1, 1, 4), (1, 1)),
    ((1, 3, 2, 4), (4, 4))])
def test_winograd_convolution_is_as_exact_as_the_convolution_op(shape, dilation):
    winograd, direct, exact = _convolutions(shape, dilation)
    assert winograd.shape == exact.shape
    direct_error = np.abs(direct - exact).max()
    floor = np.finfo(np.float32).eps * np.abs(exact).max()
    assert np.abs(winograd - exact).max() <= 2 * max(direct_error, floor)


def test_winograd_kernel_is_the_transformed_kernel_in_window_order():
    kernel = np.zeros((3, 3, 1, 1), np.float32)
    kernel[1, 1] = 1.0  # the identity: G k G^T = outer(G's middle column)
    middle = np.array([0.0, 0.5, -0.5, 0.0])
    np.testing.assert_array_equal(winograd_kernel(kernel)[:, 0, 0],
                                  np.outer(middle, middle).ravel())


def test_winograd_layer():
    run_layer_test(WinogradConv2D, {"filters": 3, "dilation_rate": 2}, (2, 9, 11, 4),
                   expected_output_shape=(2, 9, 11, 3), expected_num_trainable_weights=2)


@pytest.mark.parametrize("form, features_kernel", [
    ("winograd", ("bottleneck_conv/winograd_kernel", (16, 6, 5))),
    ("convolution", ("bottleneck_conv/features_kernel", (3, 3, 6, 5)))])
def test_bottleneck_inference_forms_hold_the_kernel_in_two_parts_and_are_inference_only(
        form, features_kernel):
    layer = PyramidBottleneckConv(5, inference_form=form, name="bottleneck_conv")
    inputs = [keras.Input((None, None, 6)), keras.Input((1, 1, 4)), keras.Input((2, 2, 4))]
    layer(inputs)
    assert [(w.path, tuple(w.shape)) for w in layer.weights] == [
        features_kernel, ("bottleneck_conv/branch_kernel", (3, 3, 8, 5))]
    rng = np.random.default_rng(0)
    values = [rng.normal(size=(1, 9, 7, 6)), rng.normal(size=(1, 1, 1, 4)),
              rng.normal(size=(1, 2, 2, 4))]
    values = [value.astype(np.float32) for value in values]
    with pytest.raises(ValueError, match="for inference only"):
        layer(values, training=True)


def test_bottleneck_refuses_an_unknown_inference_form():
    with pytest.raises(ValueError, match="inference_form='fast'; choose one of taps"):
        PyramidBottleneckConv(5, inference_form="fast")


def _converted_tiny_model(min_channels):
    model = tiny_model(num_classes=5)
    randomise(model, seed=3)
    folded = fold_batchnorm(model)
    return model, folded, with_winograd_convolutions(folded, min_channels=min_channels)


def test_converted_model_gives_the_folded_outputs_and_leaves_the_original():
    model, folded, converted = _converted_tiny_model(min_channels=1)
    before = [weight.numpy().copy() for weight in folded.weights]
    images = np.random.default_rng(0).normal(size=(2, 45, 61, 3)).astype("float32")
    expected = np.asarray(keras.tree.flatten(folded(images, training=False))[0])
    got = np.asarray(keras.tree.flatten(converted(images, training=False))[0])
    np.testing.assert_allclose(got, expected, atol=2e-5 * np.abs(expected).max())
    # Every 3x3 stride-1 convolution converted (the stem's first is strided), and the
    # bottleneck.
    convolutions = [layer.name for layer in folded.layers
                    if isinstance(layer, keras.layers.Conv2D) and layer.kernel_size == (3, 3)
                    and layer.strides == (1, 1)]
    assert winograd_layers(converted) == [*convolutions, "bottleneck_conv"]
    for weight, value in zip(folded.weights, before):
        np.testing.assert_array_equal(weight.numpy(), value)
    run_serialization_test(converted, images[:1])


def test_only_convolutions_of_512_or_more_channels_convert_by_default():
    _, _, converted = _converted_tiny_model(min_channels=winograd_conversion.MIN_CHANNELS)
    assert winograd_layers(converted) == R18_WINOGRAD_LAYERS


def test_bfloat16_models_are_not_converted():
    config = ExperimentConfig().replace(backbone="resnet18_v1c", num_classes=5,
                                        mixed_precision="mixed_bfloat16")
    previous = keras.config.dtype_policy()
    try:
        model = build_model(config, training_heads=False)  # sets Keras' global policy
    finally:
        keras.config.set_dtype_policy(previous)
    assert model.get_layer("layer4_1_conv1").compute_dtype == "bfloat16"
    assert with_winograd_convolutions(model, min_channels=1) is model


def _bottleneck_form(network):
    return network.get_layer("bottleneck_conv").inference_form


@pytest.mark.parametrize("accelerator, onednn, converts", [
    (False, True, True), (False, False, False), (True, True, False), (True, False, False)])
def test_inference_network_converts_on_cpus_that_run_onednn(monkeypatch, accelerator, onednn,
                                                            converts):
    monkeypatch.setattr(winograd_conversion, "has_accelerator", lambda: accelerator)
    monkeypatch.setattr(winograd_conversion, "onednn_enabled", lambda: onednn)
    model = tiny_model(num_classes=5)
    network = inference_network(model)
    assert winograd_layers(network) == (R18_WINOGRAD_LAYERS if converts else [])
    assert _bottleneck_form(network) == ("winograd" if converts else "convolution")
    assert winograd_layers(inference_network(model, winograd=True)) == R18_WINOGRAD_LAYERS
    direct = inference_network(model, winograd=False)
    assert (winograd_layers(direct), _bottleneck_form(direct)) == ([], "convolution")


def test_direct_copy_gives_the_folded_outputs():
    _, folded, _ = _converted_tiny_model(min_channels=1)
    direct = with_direct_convolutions(folded)
    images = np.random.default_rng(1).normal(size=(1, 37, 45, 3)).astype("float32")
    expected = np.asarray(keras.tree.flatten(folded(images, training=False))[0])
    got = np.asarray(keras.tree.flatten(direct(images, training=False))[0])
    np.testing.assert_allclose(got, expected, atol=1e-5 * np.abs(expected).max())
    assert with_direct_convolutions(direct) is direct


@pytest.fixture(scope="module")
def model():
    model = tiny_model(num_classes=5)
    randomise(model, seed=5)
    return model


def _images(seed):
    return np.random.default_rng(seed).integers(0, 256, (2, 57, 83, 3), dtype=np.uint8)


def test_predictor_labels_equal_the_direct_convolutions(model):
    winograd = predictor_for(model, DEMO_SCALE, winograd=True)
    direct = predictor_for(model, DEMO_SCALE, winograd=False)
    for image in _images(1):
        np.testing.assert_array_equal(winograd.predict(image), direct.predict(image))
        np.testing.assert_allclose(winograd.logits(image), direct.logits(image), atol=1e-5)


def test_saved_model_records_its_winograd_layers_and_serves_the_direct_labels(model, tmp_path):
    images = _images(2)
    labels = {}
    for winograd in (True, False):
        path = export_saved_model(model, DEMO_SCALE, str(tmp_path), winograd=winograd)
        with open(os.path.join(path, METADATA_FILE)) as handle:
            recorded = json.load(handle)["winograd_layers"]
        assert recorded == (R18_WINOGRAD_LAYERS if winograd else [])
        served = tf.saved_model.load(path).signatures["serving_default"]
        labels[winograd] = served(images=tf.constant(images))["segmentation"].numpy()
    np.testing.assert_array_equal(labels[True], labels[False])


def test_single_file_formats_refuse_winograd(model, tmp_path):
    with pytest.raises(ParameterError, match="winograd is for format=saved_model only"):
        export_model(model, DEMO_SCALE, "onnx", output=str(tmp_path / "m.onnx"), winograd=True)
