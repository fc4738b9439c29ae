"""BatchNorm folding for inference: same outputs, fewer layers, the original untouched."""

import keras
import numpy as np
import pytest
from helpers import randomise, tiny_model

from pspnet_tf.models.folding import fold_batchnorm


@pytest.mark.parametrize("training_heads", [False, True])
def test_folded_model_gives_the_same_outputs(training_heads):
    model = tiny_model(num_classes=5, training_heads=training_heads)
    randomise(model, seed=3)
    images = np.random.default_rng(0).normal(size=(2, 45, 61, 3)).astype("float32")
    expected = keras.tree.map_structure(np.asarray, model(images, training=False))
    folded = fold_batchnorm(model)
    got = keras.tree.map_structure(np.asarray, folded(images, training=False))
    for mine, theirs in zip(keras.tree.flatten(got), keras.tree.flatten(expected)):
        scale = np.abs(theirs).max()
        np.testing.assert_allclose(mine, theirs, atol=1e-5 * scale)


def test_every_batchnorm_after_a_plain_conv_is_gone_and_the_original_is_kept():
    model = tiny_model()
    randomise(model, seed=1)
    before = [weight.numpy().copy() for weight in model.weights]
    folded = fold_batchnorm(model)
    norms = [layer.name for layer in folded.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms == ["bottleneck_bn"]  # after PyramidBottleneckConv, which has no bias
    convs = {layer.name: layer for layer in folded.layers
             if type(layer) is keras.layers.Conv2D}
    assert all(layer.use_bias for layer in convs.values())
    model_convs = [layer.name for layer in model.layers
                   if type(layer) is keras.layers.Conv2D]
    assert sorted(convs) == sorted(model_convs)  # every convolution kept, now with a bias
    assert len(folded.layers) < len(model.layers)
    for weight, value in zip(model.weights, before):
        np.testing.assert_array_equal(weight.numpy(), value)
