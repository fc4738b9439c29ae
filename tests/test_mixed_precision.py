"""Mixed precision and XLA: numerically sane on the CPU, logits and loss kept in float32."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from pspnet_tf.config import ExperimentConfig
from pspnet_tf.models.factory import build_model
from pspnet_tf.training.trainer import build_training_model, compile_for_training

TINY = ExperimentConfig.from_fields(num_classes=4, backbone="resnet18_v1c", psp_channels=16,
                                    aux_channels=8, dropout=0.0)


@pytest.fixture(autouse=True)
def restore_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


def data(batch: int = 2, size: int = 32):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(batch, size, size, 3)).astype("float32")
    labels = rng.integers(0, 4, size=(batch, size, size)).astype("int32")
    labels[:, :4] = 255
    return images, labels


def test_bfloat16_logits_are_float32_and_close_to_float32():
    reference = build_model(TINY, training_heads=False)
    mixed = build_model(TINY.replace(mixed_precision="mixed_bfloat16"),
                        training_heads=False)
    mixed.set_weights(reference.get_weights())
    images, _ = data()
    expected, got = reference(images, training=False), mixed(images, training=False)
    assert got.dtype == tf.float32
    assert mixed.get_layer("layer1_0_conv1").compute_dtype == "bfloat16"
    scale = float(np.abs(expected).max())
    assert float(np.abs(got - expected).max()) < 0.05 * scale
    agreement = np.mean(np.argmax(got, -1) == np.argmax(expected, -1))
    assert agreement > 0.9


@pytest.mark.parametrize("changes", [
    # mixed_float16 is for GPUs (emulated here, 29 s on 2 idle cores)
    pytest.param({"mixed_precision": "mixed_float16"}, marks=pytest.mark.slow),
    {"mixed_precision": "mixed_bfloat16"},
    pytest.param({"jit_compile": True}, marks=pytest.mark.slow),  # over 30 s on 2 cores
])
def test_training_steps_give_finite_losses(changes):
    config = TINY.replace(**changes)
    model = build_training_model(config)  # as train.py: the tap gradient on CPU hosts
    compile_for_training(model, config, total_steps=10)
    if config.runtime.mixed_precision == "mixed_float16":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    images, labels = data()
    before = model.get_layer("conv_seg").kernel.numpy().copy()
    history = model.fit(images, {"logits": labels, "aux_logits": labels}, batch_size=2,
                        epochs=3, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert int(model.optimizer.iterations.numpy()) == 3
    assert not np.allclose(model.get_layer("conv_seg").kernel.numpy(), before)
