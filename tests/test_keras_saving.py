"""PSPNets saved with `model.save("x.keras")` load with `import pspnet_tf` alone (no
custom_objects) in a fresh process and give the same logits, bit for bit; the training
choices are config fields that a saved model keeps."""

import os
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from layer_testing import assert_same_outputs, run_serialization_test
from helpers import ROOT, randomise, run_python

from pspnet_tf import build_pspnet
from pspnet_tf.models import PSPNetSegmenter, ResNetV1cBackbone

NUM_CLASSES = 4
# name: (backbone, output stride, training heads); small heads keep files and builds small.
VARIANTS = {
    "r18_d8_inference": ("resnet18_v1c", 8, False),
    "r18_d8_training": ("resnet18_v1c", 8, True),
    "r18_d16_training": ("resnet18_v1c", 16, True),
    "r50_d16_inference": ("resnet50_v1c", 16, False),
}
SLOW_VARIANTS = {  # files are 92/165 MB and take seconds to write and read
    "r50_d8_training": ("resnet50_v1c", 8, True),
    "r101_d8_training": ("resnet101_v1c", 8, True),
    "r101_d16_inference": ("resnet101_v1c", 16, False),
}
LOAD_IN_FRESH_PROCESS = """
import sys
import keras
import numpy as np
import pspnet_tf.models  # registers the model classes with Keras

directory = sys.argv[1]
images = np.load(f"{directory}/images.npy")
for name in sys.argv[2:]:
    outputs = keras.saving.load_model(f"{directory}/{name}.keras")(images, training=False)
    outputs = outputs if isinstance(outputs, dict) else {"logits": outputs}
    np.savez(f"{directory}/{name}.npz", **{key: np.asarray(v) for key, v in outputs.items()})
"""


def images(batch: int = 2, size: int = 32) -> np.ndarray:
    return np.random.default_rng(5).normal(size=(batch, size, size, 3)).astype("float32")


def tiny(backbone: str, output_stride: int, training_heads: bool, **options) -> keras.Model:
    return build_pspnet(NUM_CLASSES, backbone=backbone, output_stride=output_stride,
                        psp_channels=16, aux_channels=8, training_heads=training_heads,
                        **options)


def _as_dict(outputs) -> dict[str, np.ndarray]:
    outputs = outputs if isinstance(outputs, dict) else {"logits": outputs}
    return {key: np.asarray(value) for key, value in outputs.items()}


def round_trip_in_fresh_process(variants: dict, directory: Path) -> dict:
    """{name: (outputs before saving, outputs after loading in one fresh process)}."""
    inputs = images()
    np.save(directory / "images.npy", inputs)
    expected = {}
    for seed, (name, (backbone, output_stride, training_heads)) in enumerate(variants.items()):
        model = tiny(backbone, output_stride, training_heads)
        randomise(model, seed)
        expected[name] = _as_dict(model(inputs, training=False))
        model.save(directory / f"{name}.keras")
    result = run_python("-c", LOAD_IN_FRESH_PROCESS, str(directory), *variants,
                        env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 0, result.stderr[-3000:]
    return {name: (expected[name], dict(np.load(directory / f"{name}.npz")))
            for name in variants}


@pytest.fixture(scope="module")
def fresh_process_results(tmp_path_factory) -> dict:
    return round_trip_in_fresh_process(VARIANTS, tmp_path_factory.mktemp("keras_files"))


@pytest.mark.parametrize("name", VARIANTS)
def test_saved_model_loads_in_a_fresh_process_with_the_same_logits(name,
                                                                   fresh_process_results):
    expected, loaded = fresh_process_results[name]
    assert set(loaded) == set(expected)
    for key in expected:
        np.testing.assert_array_equal(loaded[key], expected[key])


@pytest.mark.slow
def test_larger_saved_models_load_in_a_fresh_process_with_the_same_logits(tmp_path):
    for name, (expected, loaded) in round_trip_in_fresh_process(SLOW_VARIANTS,
                                                                tmp_path).items():
        assert set(loaded) == set(expected), name
        for key in expected:
            np.testing.assert_array_equal(loaded[key], expected[key], err_msg=name)


@pytest.mark.parametrize("training_heads", [False, True])
def test_model_config_serialisation_and_keras_file_round_trips(training_heads):
    model = tiny("resnet18_v1c", 8, training_heads)
    randomise(model, seed=7)
    run_serialization_test(model, images())


def _kernel_gradient_ops(model: keras.Model) -> int:
    """Conv2DBackpropFilter ops in the graph of the gradient of a training step's loss."""
    inputs = images(batch=1)

    @tf.function
    def gradient(x):
        with tf.GradientTape() as tape:
            outputs = model(x, training=True)
            loss = sum(tf.reduce_sum(o) for o in keras.tree.flatten(outputs))
        return tape.gradient(loss, model.trainable_variables)

    graph = gradient.get_concrete_function(inputs).graph
    return sum(op.type == "Conv2DBackpropFilter" for op in graph.get_operations())


def test_the_training_choices_are_config_fields_a_saved_model_keeps(tmp_path):
    model = tiny("resnet18_v1c", 8, True, tap_gradients=True, recompute="layer2")
    randomise(model)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    strided = [layer for layer in convs if layer.strides != (1, 1)]
    assert _kernel_gradient_ops(model) == len(strided) > 0  # the rest are tap products
    before = _as_dict(model(images(), training=False))
    model.save(tmp_path / "trained.keras")
    loaded = keras.saving.load_model(tmp_path / "trained.keras")
    assert (loaded.tap_gradients, loaded.recompute) == (True, "layer2")
    assert _kernel_gradient_ops(loaded) == len(strided)
    assert_same_outputs(_as_dict(loaded(images(), training=False)), before)
    plain = model.variant(tap_gradients=False, recompute=None)  # what final_model.keras gets
    assert _kernel_gradient_ops(plain) == len(convs) + 1  # + the PPM bottleneck's
    assert_same_outputs(_as_dict(plain(images(), training=False)), before)


def test_the_segmenter_round_trips_with_its_description():
    """PSPNetSegmenter with classes, palette, scale and dataset, and its backbone, through
    the harness: config, serialisation and .keras file."""
    model = tiny("resnet18_v1c", 16, training_heads=True, dropout=0.0,
                 class_names=[f"class{i}" for i in range(NUM_CLASSES)],
                 palette=[[i, 2 * i, 3 * i] for i in range(NUM_CLASSES)], scale=(48, 40),
                 dataset="folder", data_root="data/mine")
    randomise(model, seed=5)
    loaded = run_serialization_test(model, images())
    assert type(loaded) is PSPNetSegmenter and type(loaded.backbone) is ResNetV1cBackbone
    assert loaded.class_names == model.class_names and loaded.palette == model.palette
    assert (loaded.scale, loaded.dataset, loaded.data_root) == ((48, 40), "folder", "data/mine")
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    assert loaded.get_layer("stem_0") is loaded.backbone.get_layer("stem_0")  # flat, shared


def test_the_backbone_round_trips_with_its_stage_outputs():
    backbone = ResNetV1cBackbone(18, 16)
    randomise(backbone, seed=2)
    loaded = run_serialization_test(backbone, images())
    assert list(loaded.stage_outputs) == ["stem", "layer1", "layer2", "layer3", "layer4"]
    assert loaded.stage_outputs is loaded.pyramid_outputs
    assert loaded.output is loaded.stage_outputs["layer4"]


