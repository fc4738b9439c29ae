"""PSPNet model: architecture facts from docs/architecture.md, runtime-size pooling, weight
sharing."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from pspnet_tf import build_pspnet, load_weights, save_weights
from pspnet_tf.errors import UserError
from pspnet_tf.models.backbone import conv
from pspnet_tf.models.convolution import conv2d
from pspnet_tf.models.layers import AdaptiveAveragePooling2D, Conv2D, PyramidBottleneckConv
from helpers import randomise, tiny_model


def trainable_parameters(model) -> float:
    """Millions of trainable parameters (BatchNorm moving statistics excluded, as published)."""
    return sum(int(np.prod(weight.shape)) for weight in model.trainable_weights) / 1e6


@pytest.mark.parametrize("backbone, num_classes, training_heads, expected", [
    ("resnet50_v1c", 21, True, 48.98),
    ("resnet50_v1c", 21, False, 46.61),
    ("resnet101_v1c", 19, True, 67.97),
])
def test_parameter_counts_match_published(backbone, num_classes, training_heads, expected):
    model = build_pspnet(num_classes, backbone=backbone, training_heads=training_heads)
    assert trainable_parameters(model) == pytest.approx(expected, abs=0.01)


def reference_adaptive_pool(x: np.ndarray, bins: int) -> np.ndarray:
    """PyTorch AdaptiveAvgPool2d written as loops over its documented cell bounds."""
    _, height, width, _ = x.shape
    out = np.zeros((x.shape[0], bins, bins, x.shape[3]))
    for i in range(bins):
        top, bottom = (i * height) // bins, -(-((i + 1) * height) // bins)
        for j in range(bins):
            left, right = (j * width) // bins, -(-((j + 1) * width) // bins)
            out[:, i, j] = x[:, top:bottom, left:right].mean(axis=(1, 2))
    return out


@pytest.mark.parametrize("height, width", [(65, 65), (12, 12), (7, 10), (5, 3)])
@pytest.mark.parametrize("bins", [1, 2, 3, 6])
def test_adaptive_pooling_matches_pytorch_cells(height, width, bins):
    x = np.random.default_rng(1).normal(size=(2, height, width, 3)).astype("float32")
    pooled = AdaptiveAveragePooling2D(bins)(x)
    np.testing.assert_allclose(pooled, reference_adaptive_pool(x, bins), atol=1e-5)


def test_adaptive_pooling_has_gradient():
    x = tf.random.normal((1, 9, 11, 2))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(AdaptiveAveragePooling2D(6)(x))
    assert np.all(np.isfinite(tape.gradient(y, x).numpy()))


def plain_bottleneck(kernel, features, pooled):
    """The paper's formulation: upsample each branch, concatenate, 3x3 'same' convolution."""
    size = tf.shape(features)[1:3]
    upsampled = [tf.image.resize(branch, size, method="bilinear") for branch in pooled]
    return tf.nn.conv2d(tf.concat([features, *upsampled], -1), kernel, 1, "SAME")


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("height, width", [(64, 64), (7, 10), (1, 1), (2, 5)])
def test_pyramid_bottleneck_equals_upsample_concat_conv(height, width, training):
    rng = np.random.default_rng(0)
    features = tf.constant(rng.normal(size=(2, height, width, 6)), tf.float32)
    pooled = [tf.constant(rng.normal(size=(2, bins, bins, 4)), tf.float32)
              for bins in (1, 2, 3, 6)]
    layer = PyramidBottleneckConv(5)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([features, *pooled])
        fused = layer([features, *pooled], training=training)
        plain = plain_bottleneck(layer.kernel, features, pooled)
        weights = tf.constant(rng.normal(size=fused.shape), tf.float32)
        fused_loss, plain_loss = (tf.reduce_sum(out * weights) for out in (fused, plain))
    assert layer.kernel.shape == (3, 3, 6 + 4 * 4, 5)
    np.testing.assert_allclose(fused, plain, rtol=1e-4, atol=1e-4)
    sources = [features, *pooled, layer.kernel]
    for got, expected in zip(tape.gradient(fused_loss, sources),
                             tape.gradient(plain_loss, sources)):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)


def test_pyramid_bottleneck_kernel_gradient_is_one_concatenation():
    # A gradient per kernel slice would be a full kernel-sized tensor each, summed at the end.
    features = tf.random.normal((1, 8, 8, 6))
    pooled = [tf.random.normal((1, bins, bins, 4)) for bins in (1, 2, 3, 6)]
    layer = PyramidBottleneckConv(5)
    layer([features, *pooled])

    @tf.function
    def kernel_gradient(features, pooled):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer([features, *pooled], training=True))
        return tape.gradient(loss, layer.kernel)

    graph = kernel_gradient.get_concrete_function(features, pooled).graph
    op_types = {op.type for op in graph.get_operations()}
    assert "StridedSliceGrad" not in op_types and "ConcatV2" in op_types


@pytest.mark.parametrize("training", [False, True])
def test_pyramid_bottleneck_convolves_features_by_one_matrix_product_in_inference(training):
    # On CPUs the convolution op ran this layer's 2048-channel features at about half the
    # speed of a matrix product (docs/performance.md); training keeps the op and its gradient.
    features = tf.random.normal((1, 8, 8, 6))
    pooled = [tf.random.normal((1, bins, bins, 4)) for bins in (1, 2, 3, 6)]
    layer = PyramidBottleneckConv(5)
    graph = tf.function(lambda *inputs: layer(list(inputs), training=training)
                        ).get_concrete_function(features, *pooled).graph
    op_types = [op.type for op in graph.get_operations()]
    assert ("Conv2D" in op_types) == training
    assert ("MatMul" in op_types) != training


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("kernel_size, dilation", [
    ((3, 3), (1, 1)), ((3, 3), (2, 3)), ((1, 1), (1, 1)), ((2, 2), (1, 1)), ((3, 1), (4, 1)),
])
def test_conv2d_equals_tensorflows_convolution_and_gradients(padding, kernel_size, dilation):
    rng = np.random.default_rng(len(padding) + sum(kernel_size) + sum(dilation))
    inputs = tf.constant(rng.normal(size=(2, 13, 10, 5)), tf.float32)
    kernel = tf.constant(rng.normal(size=(*kernel_size, 5, 7)), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([inputs, kernel])
        ours = conv2d(inputs, kernel, padding, dilation)
        reference = tf.nn.convolution(inputs, kernel, padding=padding, dilations=dilation)
        weights = tf.constant(rng.normal(size=ours.shape), tf.float32)
        losses = [tf.reduce_sum(out * weights) for out in (ours, reference)]
    np.testing.assert_array_equal(ours, reference)  # the same forward op
    for got, expected in zip(tape.gradient(losses[0], [inputs, kernel]),
                             tape.gradient(losses[1], [inputs, kernel])):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_tap_gradient_cuts_one_input_window_at_a_time():
    # Each window is a copy of the input: in a traced step all nine would otherwise be cut
    # at once and held until their products ran (600 MB for the R-50-D8 PPM bottleneck).
    inputs, kernel = tf.random.normal((1, 9, 9, 4)), tf.random.normal((3, 3, 4, 2))

    @tf.function
    def kernel_gradient(x, k):
        with tf.GradientTape() as tape:
            tape.watch(k)
            loss = tf.reduce_sum(conv2d(x, k, "SAME"))
        return tape.gradient(loss, k)

    graph = kernel_gradient.get_concrete_function(inputs, kernel).graph
    windows = [op for op in graph.get_operations()
               if op.type == "StridedSlice" and op.inputs[0].op.type == "Pad"]
    products = [op for op in graph.get_operations() if op.type == "MatMul"]
    assert len(windows) == len(products) == 9
    for count, window in enumerate(windows):  # window k waits for the k products before it
        assert {op for op in _ancestors(window) if op.type == "MatMul"} == set(products[:count])


def _ancestors(op: tf.Operation) -> set[tf.Operation]:
    """The ops `op` waits for, through data inputs and control dependencies."""
    seen, pending = set(), [op]
    while pending:
        current = pending.pop()
        for before in [tensor.op for tensor in current.inputs] + list(current.control_inputs):
            if before not in seen:
                seen.add(before)
                pending.append(before)
    return seen


def _gradient_op_types(layer: keras.layers.Layer, inputs: tf.Tensor) -> set[str]:
    @tf.function
    def kernel_gradient(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x))
        return tape.gradient(loss, layer.kernel)

    graph = kernel_gradient.get_concrete_function(inputs).graph
    return {op.type for op in graph.get_operations()}


@pytest.mark.parametrize("strides, uses_taps", [(1, True), (2, False)])
def test_the_tap_gradient_replaces_the_kernel_gradient_op_when_chosen(strides, uses_taps):
    inputs = tf.random.normal((1, 9, 9, 4))
    layer = Conv2D(3, 3, strides=strides, padding="same", name="probe")
    expected = layer(inputs)
    assert "MatMul" not in _gradient_op_types(layer, inputs)
    chosen = Conv2D.from_config({**layer.get_config(), "tap_gradient": True})
    chosen.build(inputs.shape)
    chosen.set_weights(layer.get_weights())
    np.testing.assert_array_equal(chosen(inputs), expected)
    op_types = _gradient_op_types(chosen, inputs)
    assert ("Conv2DBackpropFilter" not in op_types) == uses_taps
    assert ("MatMul" in op_types) == uses_taps


def test_the_segmenter_sets_the_tap_gradient_of_every_convolution():
    convolutions = [layer for layer in tiny_model(tap_gradients=True).layers
                    if isinstance(layer, (keras.layers.Conv2D, PyramidBottleneckConv))]
    assert len(convolutions) == 28 and all(layer.tap_gradient for layer in convolutions)
    assert not any(layer.tap_gradient for layer in tiny_model().layers
                   if hasattr(layer, "tap_gradient"))


def _one_training_step(recompute: bool) -> tuple[dict, list, list, list, int]:
    """Outputs, gradients, the variables a step changes besides weights (BatchNorm moving
    statistics, dropout seed states) before and after one step, and the Conv2D ops in its
    graph."""
    keras.utils.set_random_seed(0)  # the same dropout seeds in both models
    model = tiny_model(training_heads=True, tap_gradients=True,  # the shipped dropout 0.1
                       recompute="layer2" if recompute else None)
    randomise(model)
    images = tf.random.stateless_normal((2, 64, 64, 3), seed=(1, 2))
    before = _states(model)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            outputs = model(x, training=True)
            loss = tf.reduce_sum(outputs["logits"] ** 2) + tf.reduce_sum(outputs["aux_logits"])
        return outputs, tape.gradient(loss, model.trainable_variables)

    outputs, gradients = step(images)
    convolutions = sum(op.type == "Conv2D" for op in
                       step.get_concrete_function(images).graph.get_operations())
    return outputs, gradients, before, _states(model), convolutions


def test_recomputed_early_stages_give_the_plain_step():
    # Stem, layer1 and layer2 (3 + 4 + 5 convolutions in ResNet-18) run again in the
    # backward pass, and BatchNorm's moving statistics and the heads' dropout still advance
    # once.
    outputs, gradients, _, states, convolutions = _one_training_step(recompute=False)
    got_outputs, got_gradients, before, got_states, got_convolutions = _one_training_step(True)
    assert got_convolutions == convolutions + 12
    for key in outputs:
        np.testing.assert_array_equal(got_outputs[key], outputs[key])
    for got, expected in zip(got_gradients, gradients, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    for got, expected in zip(got_states, states, strict=True):
        np.testing.assert_array_equal(got, expected)
    assert not any(np.array_equal(got, state) for got, state in zip(got_states, before))


def _states(model: keras.Model) -> list:
    return [variable.numpy() for variable in model.variables if not variable.trainable]


def test_strided_conv_pads_symmetrically_like_pytorch():
    x = tf.random.normal((1, 8, 10, 2))
    images = keras.Input((None, None, 2))
    model = keras.Model(images, conv(images, 3, 3, "probe", stride=2))
    kernel = model.get_layer("probe").kernel
    expected = tf.nn.conv2d(x, kernel, strides=2, padding=[[0, 0], [1, 1], [1, 1], [0, 0]])
    np.testing.assert_allclose(model(x), expected, atol=1e-5)


@pytest.mark.parametrize("output_stride", [8, 16])
def test_any_input_size_gives_logits_at_input_size(output_stride):
    model = tiny_model(output_stride=output_stride)
    for height, width in [(97, 129), (64, 64), (33, 50)]:
        logits = model(np.zeros((2, height, width, 3), "float32"))
        assert logits.shape == (2, height, width, 4)


@pytest.mark.parametrize("output_stride, feature_size", [(8, 13), (16, 7)])
def test_output_stride_sets_stage4_resolution(output_stride, feature_size):
    model = tiny_model(output_stride=output_stride)
    stage4 = model.get_layer("layer4_1_relu").output
    probe = keras.Model(model.input, stage4)
    assert probe(np.zeros((1, 97, 97, 3), "float32")).shape[1:3] == (feature_size, feature_size)


def test_inference_is_deterministic_for_a_given_size():
    model = tiny_model()
    randomise(model)
    x = np.random.default_rng(2).normal(size=(1, 65, 81, 3)).astype("float32")
    first = model(x, training=False).numpy()
    model(np.zeros((1, 40, 40, 3), "float32"))
    np.testing.assert_array_equal(first, model(x, training=False).numpy())


def test_training_model_outputs_main_and_aux_logits():
    model = tiny_model(training_heads=True)
    outputs = model(np.zeros((1, 50, 70, 3), "float32"))
    assert set(outputs) == {"logits", "aux_logits"}
    assert outputs["logits"].shape == outputs["aux_logits"].shape == (1, 50, 70, 4)


def test_weights_move_between_training_and_inference_variants(tmp_path):
    trained = tiny_model(training_heads=True)
    randomise(trained)
    x = np.random.default_rng(3).normal(size=(1, 41, 57, 3)).astype("float32")
    save_weights(trained, str(tmp_path / "train.h5"))
    inference = tiny_model()
    load_weights(inference, str(tmp_path / "train.h5"))
    np.testing.assert_allclose(inference(x), trained(x)["logits"], atol=1e-6)

    save_weights(inference, str(tmp_path / "inference.h5"))
    again = tiny_model(training_heads=True)
    load_weights(again, str(tmp_path / "inference.h5"))
    np.testing.assert_allclose(again(x)["logits"], trained(x)["logits"], atol=1e-6)


def test_loading_weights_of_another_architecture_is_a_clear_error(tmp_path):
    save_weights(tiny_model(), str(tmp_path / "w.h5"))
    with pytest.raises(UserError, match="num_classes"):
        load_weights(tiny_model(num_classes=5), str(tmp_path / "w.h5"))
    with pytest.raises(UserError, match="does not exist"):
        load_weights(tiny_model(), str(tmp_path / "missing.h5"))
