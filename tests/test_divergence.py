"""The divergence guard: a non-finite loss stops fit at its step with exit status 3."""

import keras
import numpy as np
import pytest

from helpers import run_command
from pspnet_tf.config import OptimizerConfig
from pspnet_tf.errors import UserError
from pspnet_tf.training.divergence import DivergenceGuard, TrainingDiverged, likely_cause

SHIPPED_FACTOR = OptimizerConfig().divergence_factor


def test_fit_stops_at_the_first_non_finite_loss_before_later_callbacks_see_it():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(1e30), loss="mse")
    seen = []
    later = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: seen.append(
        logs["loss"]))
    x = np.full((64, 2), 1e3, "float32")
    with pytest.raises(TrainingDiverged, match=r"diverged at step \d+: the loss is (nan|inf)"):
        model.fit(x, x[:, :1], batch_size=1, epochs=1, verbose=0, shuffle=False,
                  callbacks=[DivergenceGuard(likely_cause(1e30, "float32"), SHIPPED_FACTOR),
                             later])
    assert seen and all(np.isfinite(seen))  # later callbacks (the checkpoint) never saw it
    assert int(model.optimizer.iterations.numpy()) == len(seen) + 1


def test_divergence_is_a_user_error_with_its_own_exit_status_and_advice():
    assert issubclass(TrainingDiverged, UserError) and TrainingDiverged.exit_status == 3
    assert "--learning_rate (now 0.01)" in likely_cause(0.01, "float32")
    assert "--mixed_precision=float32" in likely_cause(0.01, "mixed_float16")
    assert "mixed_precision" not in likely_cause(0.01, "mixed_bfloat16")


class _Model:
    """What the guard reads of the model: the optimizer's step counter."""

    def __init__(self) -> None:
        self.optimizer = keras.optimizers.SGD()


def _guard(factor: float = SHIPPED_FACTOR) -> DivergenceGuard:
    guard = DivergenceGuard("lower --learning_rate", factor)
    guard.set_model(_Model())
    return guard


def _feed(guard: DivergenceGuard, losses: list[float]) -> None:
    for batch, loss in enumerate(losses):
        guard.on_train_batch_end(batch, {"loss": loss})


def test_a_finite_loss_grown_by_orders_of_magnitude_stops_the_run():
    with pytest.raises(TrainingDiverged, match=r"the loss grew to 1\.97e\+16, over 1000 times "
                       r"the median 2\.3 of its last 3 values \(--divergence_factor\)"):
        _feed(_guard(), [2.4, 2.3, 2.2, 1.97e16])


def test_growth_below_the_factor_and_the_off_switch_let_it_run():
    _feed(_guard(), [2.4, 2.3, 2.2, 2000.0, 5.0])  # 2000 < 1000 x 2.3
    _feed(_guard(0), [2.4, 2.3, 1.97e16])
    with pytest.raises(TrainingDiverged, match="the loss is nan"):
        _feed(_guard(0), [2.4, float("nan")])  # the off switch keeps the NaN check


@pytest.mark.slow
def test_the_demo_never_trips_the_shipped_guard(tmp_path, monkeypatch):
    """configs/demo.cfg as shipped (its 400 generated images, 100 steps) runs to the end
    with the guard on: every reported loss stays far below the shipped factor."""
    seen = []
    check = DivergenceGuard.on_train_batch_end

    def recording(self, batch, logs=None):
        seen.append(logs["loss"])
        check(self, batch, logs)

    monkeypatch.setattr(DivergenceGuard, "on_train_batch_end", recording)
    result = run_command("pspnet-train", "--flagfile=configs/demo.cfg",
                         f"--data_root={tmp_path / 'demo'}", f"--run_dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr
    assert len(seen) == 100
    assert max(seen) < SHIPPED_FACTOR / 100 * min(seen)  # 100x headroom over the whole run
