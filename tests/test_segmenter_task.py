"""PSPNetSegmenter as a keras-hub-style task: its preprocessor, dtype policies, compile/fit/
predict and the keyword arguments it refuses (tests/layer_testing.py run_task_test)."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from pspnet_tf.models.backbone import ResNetV1cBackbone
from pspnet_tf.models.losses import SegmentationCrossEntropy
from pspnet_tf.models.preprocessing import PSPNetPreprocessor
from pspnet_tf.models.schedules import TorchSGD
from pspnet_tf.models.segmenter import PSPNetSegmenter
from layer_testing import run_serialization_test, run_task_test

NUM_CLASSES = 3


def segmenter(preprocessor=None, auxiliary_head=False, **kwargs):
    return PSPNetSegmenter(ResNetV1cBackbone(18, dtype=kwargs.pop("backbone_dtype", None)),
                           NUM_CLASSES, psp_channels=8, aux_channels=8,
                           auxiliary_head=auxiliary_head, preprocessor=preprocessor, **kwargs)


def samples(count=3, height=24, width=32, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, height, width, 3)).astype("uint8")
    masks = rng.integers(0, NUM_CLASSES, (count, height, width)).astype("int32")
    return images, masks


def test_task_contract():
    run_task_test(lambda preprocessor: segmenter(preprocessor, auxiliary_head=True),
                  *samples(), jit_compile=(False,))


@pytest.mark.slow
def test_task_contract_with_xla_and_the_inference_heads():
    run_task_test(segmenter, *samples())


def test_preprocessor_is_saved_with_the_model(tmp_path):
    model = segmenter(PSPNetPreprocessor((40, 20)))
    assert model.preprocessor is model.preprocessor
    loaded = run_serialization_test(model, PSPNetPreprocessor((40, 20))(samples()[0]))
    assert isinstance(loaded.preprocessor, PSPNetPreprocessor)
    assert loaded.preprocessor.scale == (40, 20)
    assert segmenter().get_config()["preprocessor"] is None


@pytest.mark.parametrize("size", [(24, 32), (17, 9)])
def test_predict_keeps_any_input_size(size):
    images, _ = samples(1, *size)
    model = segmenter(PSPNetPreprocessor((32, 16)))
    assert model.predict(images, verbose=0).shape == (1, *size, NUM_CLASSES)


def test_dtype_is_honoured_saved_and_restored(tmp_path):
    model = segmenter(PSPNetPreprocessor((32, 24)), backbone_dtype="mixed_bfloat16")
    assert keras.config.dtype_policy().name == "float32"
    assert model.dtype_policy.name == "mixed_bfloat16"
    assert model.backbone.get_config()["dtype"]["config"]["name"] == "mixed_bfloat16"
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert {layer.dtype_policy.name for layer in convs} == {"mixed_bfloat16"}
    assert all(weight.dtype == "float32" for weight in model.weights)
    assert model.get_layer("logits").dtype_policy.name == "float32"
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_config()["dtype"]["config"]["name"] == "mixed_bfloat16"
    assert {layer.dtype_policy.name for layer in loaded.layers
            if isinstance(layer, keras.layers.Conv2D)} == {"mixed_bfloat16"}
    images = samples()[0]
    np.testing.assert_array_equal(loaded.predict(images, verbose=0),
                                  model.predict(images, verbose=0))
    heads_only = segmenter(dtype="mixed_bfloat16")
    assert heads_only.backbone.dtype_policy.name == "float32"
    assert heads_only.get_layer("bottleneck_conv").dtype_policy.name == "mixed_bfloat16"


def test_unknown_keyword_arguments_raise():
    with pytest.raises(TypeError, match="compile"):
        segmenter(compile=False)
    with pytest.raises(TypeError, match="compile"):
        ResNetV1cBackbone(18, compile=False)


def test_compile_defaults_are_the_recipe():
    model = segmenter(auxiliary_head=True)
    model.compile()
    assert isinstance(model.optimizer, TorchSGD)
    assert model.optimizer.momentum == 0.9 and model.optimizer.l2_weight_decay == 5e-4
    assert float(model.optimizer.learning_rate) == pytest.approx(0.01)
    config = model.get_compile_config()
    for head in ("logits", "aux_logits"):
        loss = keras.saving.deserialize_keras_object(config["loss"][head])
        assert isinstance(loss, SegmentationCrossEntropy) and loss.ignore_index == 255
    assert config["loss_weights"] == {"logits": 1.0, "aux_logits": 0.4}
    model.compile(total_steps=100)
    schedule = model.optimizer._learning_rate
    assert isinstance(schedule, keras.optimizers.schedules.PolynomialDecay)
    assert float(schedule(0)) == pytest.approx(0.01)
    assert float(schedule(100)) == pytest.approx(1e-4)
    model.compile(optimizer="adam", loss_weights={"logits": 1.0, "aux_logits": 1.0})
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert model.get_compile_config()["loss_weights"] == {"logits": 1.0, "aux_logits": 1.0}
    with pytest.raises(ValueError, match="total_steps"):
        model.compile(optimizer="adam", total_steps=10)
    plain = segmenter()
    plain.compile()
    assert plain.get_compile_config()["loss_weights"] is None


def test_masks_follow_the_images_by_nearest_neighbour():
    model = segmenter(PSPNetPreprocessor((48, 32)), auxiliary_head=True)
    image = np.zeros((24, 16, 3), np.uint8)
    mask = np.zeros((24, 16), np.int32)
    mask[:, 8:] = 255
    mask[12:, :8] = 2
    inputs, targets = model.preprocess_samples(image, mask)
    assert inputs.shape == (48, 32, 3)
    assert set(targets) == {"logits", "aux_logits"}
    resized = targets["logits"].numpy()
    assert resized.shape == (48, 32) and set(np.unique(resized)) == {0, 2, 255}
    np.testing.assert_array_equal(resized, np.kron(mask, np.ones((2, 2), np.int32)))


def test_preprocessor_takes_one_image_or_a_batch():
    layer = PSPNetPreprocessor((40, 20))
    image = np.random.default_rng(0).integers(0, 256, (32, 24, 3)).astype("uint8")
    one = layer(image)
    assert one.shape == (27, 20, 3)
    np.testing.assert_array_equal(one.numpy(), layer(image[np.newaxis])[0].numpy())
    assert layer.compute_output_shape((32, 24, 3)) == (27, 20, 3)
    assert layer.compute_output_shape((2, 32, 24, 3)) == (2, 27, 20, 3)
    assert layer.compute_output_shape((None, None, None, 3)) == (None, None, None, 3)
    symbolic = layer(keras.Input(batch_shape=(2, 32, 24, 3), dtype="uint8"))
    assert tuple(symbolic.shape) == (2, 27, 20, 3)
    with pytest.raises(ValueError, match="rank 2"):
        layer(image[..., 0])
    assert PSPNetPreprocessor((40, 20), dtype="mixed_bfloat16")(image).dtype == tf.bfloat16
    assert one.dtype == tf.float32


def test_a_compiled_segmenter_loads_compiled_without_a_warning(tmp_path):
    import warnings

    model = segmenter(PSPNetPreprocessor((48, 40)), auxiliary_head=True)
    model.compile(total_steps=10)
    model.fit(tf.data.Dataset.from_tensor_slices(samples(2)).batch(2), verbose=0)
    model.save(tmp_path / "m.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert type(loaded.optimizer) is TorchSGD and int(loaded.optimizer.iterations) == 1
    assert float(loaded.optimizer.learning_rate) == float(model.optimizer.learning_rate)
    loaded.fit(tf.data.Dataset.from_tensor_slices(samples(2)).batch(2), verbose=0)  # resumes


def test_a_variant_keeps_the_preprocessor_unless_given_another():
    model = segmenter(PSPNetPreprocessor((40, 20)))
    assert model.variant(auxiliary_head=True).preprocessor.scale == (40, 20)
    replaced = model.variant(preprocessor=PSPNetPreprocessor((64, 32)))
    assert replaced.preprocessor.scale == (64, 32)
    assert segmenter().variant(preprocessor=PSPNetPreprocessor((64, 32))).preprocessor.scale \
        == (64, 32)
