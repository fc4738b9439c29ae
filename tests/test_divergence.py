"""The divergence guard: a non-finite loss stops fit at its step with exit status 3."""

import keras
import numpy as np
import pytest

from pspnet_tf.errors import UserError
from pspnet_tf.training.divergence import DivergenceGuard, TrainingDiverged, likely_cause


def test_fit_stops_at_the_first_non_finite_loss_before_later_callbacks_see_it():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(1e30), loss="mse")
    seen = []
    later = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: seen.append(
        logs["loss"]))
    x = np.full((64, 2), 1e3, "float32")
    with pytest.raises(TrainingDiverged, match=r"diverged at step \d+: the loss is (nan|inf)"):
        model.fit(x, x[:, :1], batch_size=1, epochs=1, verbose=0, shuffle=False,
                  callbacks=[DivergenceGuard(likely_cause(1e30, "float32")), later])
    assert seen and all(np.isfinite(seen))  # later callbacks (the checkpoint) never saw it
    assert int(model.optimizer.iterations.numpy()) == len(seen) + 1


def test_divergence_is_a_user_error_with_its_own_exit_status_and_advice():
    assert issubclass(TrainingDiverged, UserError) and TrainingDiverged.exit_status == 3
    assert "--learning_rate (now 0.01)" in likely_cause(0.01, "float32")
    assert "--mixed_precision=float32" in likely_cause(0.01, "mixed_float16")
    assert "mixed_precision" not in likely_cause(0.01, "mixed_bfloat16")
