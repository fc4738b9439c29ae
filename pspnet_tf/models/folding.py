"""BatchNorm folded into the convolution before it, for inference."""

import keras
import numpy as np


def _foldable_pairs(model: keras.Model) -> dict[str, keras.layers.BatchNormalization]:
    """{conv name: its BatchNorm} for plain Conv2D layers whose only consumer is a BatchNorm."""
    consumers: dict[int, list[keras.layers.Layer]] = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        for tensor in keras.tree.flatten(layer.input):
            consumers.setdefault(id(tensor), []).append(layer)
    pairs = {}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.Conv2D):  # PyramidBottleneckConv computes more
            continue
        users = consumers.get(id(layer.output), [])
        if len(users) == 1 and isinstance(users[0], keras.layers.BatchNormalization):
            pairs[layer.name] = users[0]
    return pairs


def _folded_weights(conv: keras.layers.Conv2D,
                    norm: keras.layers.BatchNormalization) -> list[np.ndarray]:
    """Kernel and bias of conv followed by norm with its moving statistics."""
    channels = conv.filters
    gamma = norm.gamma.numpy() if norm.scale else np.ones(channels, np.float32)
    beta = norm.beta.numpy() if norm.center else np.zeros(channels, np.float32)
    scale = gamma / np.sqrt(norm.moving_variance.numpy() + norm.epsilon)
    bias = beta - norm.moving_mean.numpy() * scale
    if conv.use_bias:
        bias = bias + conv.bias.numpy() * scale
    return [conv.kernel.numpy() * scale, bias]


def fold_batchnorm(model: keras.Model) -> keras.Model:
    """A copy of `model` in which each BatchNorm that follows a convolution is folded into it.

    Inference only: the moving statistics become the convolution's kernel and bias, so the
    copy (a plain functional model) gives the same outputs up to float rounding while
    skipping one pass over each of those activations. `model` itself is left unchanged and
    can go on training.
    """
    pairs = _foldable_pairs(model)
    folded = {norm.name for norm in pairs.values()}

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        if layer.name in pairs:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    def call(layer: keras.layers.Layer, *args, **kwargs):
        return args[0] if layer.name in folded else layer(*args, **kwargs)

    copy = keras.models.clone_model(model, clone_function=clone, call_function=call)
    for layer in model.layers:
        if layer.name in folded or not layer.weights:
            continue
        weights = (_folded_weights(layer, pairs[layer.name]) if layer.name in pairs
                   else layer.get_weights())
        copy.get_layer(layer.name).set_weights(weights)
    return copy
