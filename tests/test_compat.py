"""The Keras / TensorFlow internals pspnet_tf relies on still work as it uses them."""

import keras
import pytest
import tensorflow as tf

from pspnet_tf import compat


def test_internals_work_with_the_installed_keras_and_tensorflow():
    compat.check_internals()  # one RuntimeError naming the versions and what broke


def test_a_broken_internal_is_reported_with_the_versions(monkeypatch):
    owner = next(cls for cls in keras.optimizers.SGD.__mro__ if "_get_variable_index" in vars(cls))
    monkeypatch.delattr(owner, "_get_variable_index")
    monkeypatch.delattr(compat.legacy_h5_format, "save_weights_to_hdf5_group")
    with pytest.raises(RuntimeError) as raised:
        compat.check_internals()
    message = str(raised.value)
    assert f"Keras {keras.__version__} / TensorFlow {tf.__version__}" in message
    assert "Optimizer._get_variable_index" in message
    assert "legacy_h5_format.save_weights_to_hdf5_group" in message
    assert "\n" not in message
