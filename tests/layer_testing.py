"""A shared test harness for pspnet_tf's Keras layers and models, after keras-hub's TestCase.

`run_layer_test` checks what every custom layer must do for Keras users: rebuild from its
config, survive `serialize_keras_object`/`deserialize_keras_object` and a `.keras` file
(loaded without `custom_objects`, i.e. through its registration), give the expected output
shape eagerly and symbolically, have finite non-zero gradients for its inputs and weights,
and run under the mixed_float16 and mixed_bfloat16 policies with float32 variables.
`run_serialization_test` checks the config, serialisation and `.keras` round trips of a model.
"""

import copy
import inspect
import json
import os
import tempfile
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

Shape = tuple[int, ...]
MIXED_POLICIES = ("mixed_float16", "mixed_bfloat16")


def _shapes(input_shape: Shape | Sequence[Shape]) -> list[Shape]:
    """A layer's input shapes as a list: one tuple is one input, a list holds several."""
    return list(input_shape) if isinstance(input_shape, list) else [input_shape]


def _one_or_list(values: list) -> Any:
    return values if len(values) > 1 else values[0]


def _random_inputs(shapes: list[Shape], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=shape).astype("float32") for shape in shapes]


def _numpy(outputs: Any) -> list[np.ndarray]:
    return [np.asarray(output) for output in keras.tree.flatten(outputs)]


def assert_same_outputs(got: Any, expected: Any) -> None:
    """Bit-identical outputs, structure included."""
    got, expected = _numpy(got), _numpy(expected)
    assert len(got) == len(expected)
    for mine, theirs in zip(got, expected):
        np.testing.assert_array_equal(mine, theirs)


def _as_json(config: dict) -> Any:
    """A config as a .keras file stores it (tuples become lists)."""
    return json.loads(json.dumps(config))


def _saved_and_loaded(model: keras.Model) -> keras.Model:
    """The model after a trip through a .keras file, loaded without `custom_objects`."""
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.keras")
        model.save(path)
        return keras.saving.load_model(path)


def _check_config(layer_cls: type, layer: keras.layers.Layer) -> dict:
    """The config names every constructor argument and rebuilds an equal config."""
    config = layer.get_config()
    parameters = inspect.signature(layer_cls.__init__).parameters
    arguments = {name for name, parameter in parameters.items()
                 if name != "self" and parameter.kind not in (parameter.VAR_POSITIONAL,
                                                              parameter.VAR_KEYWORD)}
    assert arguments <= set(config), f"get_config lacks {sorted(arguments - set(config))}"
    assert layer_cls.from_config(copy.deepcopy(config)).get_config() == config
    return config


def _check_gradients(layer: keras.layers.Layer, inputs: list[np.ndarray],
                     constant_inputs: Sequence[int], seed: int) -> None:
    tensors = [tf.constant(value) for value in inputs]
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        outputs = layer(_one_or_list(tensors), training=True)
        weights = tf.constant(np.random.default_rng(seed).normal(size=outputs.shape), tf.float32)
        loss = tf.reduce_sum(tf.cast(outputs, tf.float32) * weights)
    sources = [t for i, t in enumerate(tensors) if i not in constant_inputs]
    gradients = tape.gradient(loss, sources + list(layer.trainable_weights))
    names = ([f"input {i}" for i in range(len(tensors)) if i not in constant_inputs]
             + [weight.path for weight in layer.trainable_weights])
    for name, gradient in zip(names, gradients):
        assert gradient is not None, f"no gradient for {name}"
        gradient = np.asarray(gradient)
        assert np.all(np.isfinite(gradient)), f"non-finite gradient for {name}"
        assert np.any(gradient != 0), f"zero gradient for {name}"


def _check_mixed_precision(layer_cls: type, init_kwargs: dict, inputs: list[np.ndarray],
                           expected: np.ndarray, weights: list[np.ndarray]) -> None:
    """Builds and runs under each mixed policy: float32 variables, outputs in the compute
    dtype and close to the float32 layer's with the same `weights`."""
    scale = float(np.abs(expected).max())
    for policy in MIXED_POLICIES:
        layer = layer_cls(**init_kwargs, dtype=policy)
        layer(_one_or_list(inputs))
        layer.set_weights(weights)
        outputs = layer(_one_or_list(inputs))
        assert all(weight.dtype == "float32" for weight in layer.weights), policy
        assert outputs.dtype == keras.mixed_precision.Policy(policy).compute_dtype, policy
        outputs = np.asarray(tf.cast(outputs, tf.float32))
        assert np.all(np.isfinite(outputs)), policy
        assert np.abs(outputs - expected).max() <= 0.05 * scale, policy


def run_layer_test(layer_cls: type, init_kwargs: dict, input_shape: Shape | list[Shape],
                   expected_output_shape: Shape, constant_inputs: Sequence[int] = (),
                   expected_num_trainable_weights: int = 0, seed: int = 0) -> None:
    """Every check of the module docstring for `layer_cls(**init_kwargs)`.

    `input_shape` is one shape, or a list of shapes for a layer called on a list of inputs;
    `constant_inputs` lists the inputs the output does not depend on through a gradient
    (e.g. a reference only read for its size).
    """
    shapes = _shapes(input_shape)
    inputs = _random_inputs(shapes, seed)
    layer = layer_cls(**init_kwargs)
    outputs = layer(_one_or_list(inputs))
    assert tuple(outputs.shape) == tuple(expected_output_shape)
    assert len(layer.trainable_weights) == expected_num_trainable_weights
    # Weights that are not the initializer's (e.g. zeros) make the comparisons below count.
    rng = np.random.default_rng(seed + 1)
    layer.set_weights([rng.normal(size=w.shape).astype("float32") for w in layer.weights])
    expected = np.asarray(layer(_one_or_list(inputs)))

    symbolic = [keras.Input(batch_shape=shape) for shape in shapes]
    assert tuple(layer_cls(**init_kwargs)(_one_or_list(symbolic)).shape) == tuple(
        expected_output_shape)

    config = _check_config(layer_cls, layer)
    serialized = keras.saving.serialize_keras_object(layer)
    assert keras.saving.get_registered_object(serialized["registered_name"]) is layer_cls, (
        f"{layer_cls.__name__} is not registered with keras.saving")
    revived = keras.saving.deserialize_keras_object(serialized)
    assert type(revived) is layer_cls and revived.get_config() == config
    revived(_one_or_list(inputs))
    revived.set_weights(layer.get_weights())
    assert_same_outputs(revived(_one_or_list(inputs)), expected)

    symbolic = [keras.Input(batch_shape=shape) for shape in shapes]
    model = keras.Model(_one_or_list(symbolic), layer(_one_or_list(symbolic)))
    assert_same_outputs(_saved_and_loaded(model)(_one_or_list(inputs)), expected)

    weights = layer.get_weights()  # before a training call moves state such as BN statistics
    _check_gradients(layer, inputs, constant_inputs, seed)
    _check_mixed_precision(layer_cls, init_kwargs, inputs, expected, weights)


def run_serialization_test(model: keras.Model, inputs: Any) -> keras.Model:
    """Config, serialisation and `.keras` round trips of `model` give the same config, weights
    and (inference) outputs, bit for bit; returns the model loaded from the `.keras` file."""
    config = model.get_config()
    # from_config consumes its argument (Keras pops the functional keys).
    assert type(model).from_config(copy.deepcopy(config)).get_config() == config
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
    assert revived.get_config() == config
    revived.set_weights(model.get_weights())
    expected = model(inputs, training=False)
    assert_same_outputs(revived(inputs, training=False), expected)

    loaded = _saved_and_loaded(model)
    assert _as_json(loaded.get_config()) == _as_json(config)
    assert [w.path for w in loaded.weights] == [w.path for w in model.weights]
    for mine, theirs in zip(loaded.weights, model.weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    assert_same_outputs(loaded(inputs, training=False), expected)
    return loaded


def run_task_test(make_task: Any, images: np.ndarray, masks: np.ndarray,
                  jit_compile: Sequence[bool] = (False, True)) -> None:
    """A segmenter as a keras-hub task: `make_task(preprocessor)` builds one with or without
    a preprocessor (None); `images` are uint8 [B, H, W, 3] (B >= 3), `masks` int [B, H, W].

    With the preprocessor, `compile()` with its defaults and `fit` on a dataset of uint8
    (image, mask) pairs train (finite loss, weights change); `predict` on batches of 1 and 3
    equals `__call__` on the preprocessed images, resized back, and keeps the input size;
    each of `jit_compile` compiles and fits. Without it, `fit` and `predict` take normalised
    images and `predict` equals `__call__`.
    """
    from pspnet_tf.models.preprocessing import PSPNetPreprocessor
    from pspnet_tf.models.prediction import logits_at_size, network_logits

    height, width = images.shape[1:3]
    for jit in jit_compile:
        task = make_task(PSPNetPreprocessor(task_scale(height, width)))
        task.compile(jit_compile=jit)
        before = [weight.numpy().copy() for weight in task.trainable_weights]
        pairs = tf.data.Dataset.from_tensor_slices((images, masks)).batch(3)
        loss = task.fit(pairs, epochs=1, verbose=0).history["loss"][-1]
        assert np.isfinite(loss), jit
        assert any(np.any(weight.numpy() != old)
                   for weight, old in zip(task.trainable_weights, before)), jit
    for batch in (1, 3):
        predicted = task.predict(images[:batch], verbose=0)
        assert predicted.shape == (batch, height, width, task.num_classes)
        called = logits_at_size(network_logits(task, task.preprocessor(images[:batch])),
                                (height, width))
        np.testing.assert_allclose(predicted, called.numpy(), atol=1e-4)

    bare = make_task(None)
    bare.compile()
    normalised = PSPNetPreprocessor(task_scale(height, width))(images)
    targets = tf.image.resize(masks[..., None], normalised.shape[1:3], "nearest")
    if bare.auxiliary_head:
        targets = {"logits": targets, "aux_logits": targets}
    loss = bare.fit(normalised, targets, batch_size=3, epochs=1, verbose=0).history["loss"]
    assert np.isfinite(loss[-1])
    np.testing.assert_allclose(
        keras.tree.flatten(bare.predict(normalised[:1], verbose=0))[0],
        np.asarray(keras.tree.flatten(bare(normalised[:1], training=False))[0]), atol=1e-4)


def task_scale(height: int, width: int) -> tuple[int, int]:
    """A test scale that keeps (height, width) as they are."""
    return (max(height, width), min(height, width))
