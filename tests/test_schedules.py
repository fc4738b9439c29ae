"""Poly schedule against the published formula (docs/recipe.md); TorchSGD against a numpy
torch.optim.SGD."""

import keras
import numpy as np
import pytest

from pspnet_tf.models.schedules import TorchSGD, make_optimizer, poly_learning_rate


def spec_poly(step, base, total, end=1e-4, power=0.9):
    """docs/recipe.md: lr = (base - min) * (1 - it / max_it)^0.9 + min."""
    return (base - end) * (1 - step / total) ** power + end


def torch_sgd_reference(weights, gradients, lrs, momentum, weight_decay, nesterov=False):
    """torch.optim.SGD(momentum, weight_decay, dampening=0) written out in numpy."""
    weights = [w.astype(np.float64) for w in weights]
    buffers = [None] * len(weights)
    for step_gradients, lr in zip(gradients, lrs):
        for i, g in enumerate(step_gradients):
            d = g + weight_decay * weights[i]
            buffers[i] = d if buffers[i] is None else momentum * buffers[i] + d
            step = d + momentum * buffers[i] if nesterov else buffers[i]
            weights[i] = weights[i] - lr * step
    return weights


def run_optimizer(optimizer, weights, gradients):
    variables = [keras.Variable(w) for w in weights]
    for step_gradients in gradients:
        tensors = [keras.ops.convert_to_tensor(g) for g in step_gradients]
        optimizer.apply_gradients(zip(tensors, variables))
    return [v.numpy() for v in variables]


def random_problem(seed, steps):
    rng = np.random.default_rng(seed)
    weights = [rng.normal(size=shape).astype(np.float32) for shape in [(3, 2), (2,)]]
    gradients = [
        [rng.normal(size=w.shape).astype(np.float32) for w in weights] for _ in range(steps)
    ]
    return weights, gradients


@pytest.mark.parametrize("base, total", [(0.01, 100), (0.1, 7)])
def test_poly_schedule_follows_spec_formula(base, total):
    schedule = poly_learning_rate(base, total)
    for step in sorted({0, 1, total // 3, total // 2, total - 1}):
        assert float(schedule(step)) == pytest.approx(spec_poly(step, base, total), rel=1e-6)
    assert float(schedule(total)) == pytest.approx(1e-4, rel=1e-6)
    assert float(schedule(total + 5)) == pytest.approx(1e-4, rel=1e-6)


def test_poly_schedule_explicit_end_and_power():
    schedule = poly_learning_rate(0.02, 50, end_lr=0.0, power=2.0)
    assert float(schedule(10)) == pytest.approx(0.02 * 0.8**2, rel=1e-6)
    config = schedule.get_config()
    assert (config["power"], config["end_learning_rate"], config["cycle"]) == (2.0, 0.0, False)
    with pytest.raises(ValueError, match="total_steps"):
        poly_learning_rate(0.01, 0)


def test_make_optimizer_matches_torch_sgd_with_weight_decay_on_poly_schedule():
    steps, base, wd, momentum = 5, 0.1, 5e-4 * 50, 0.9  # large decay so a wrong form shows
    weights, gradients = random_problem(0, steps)
    optimizer = make_optimizer(base, total_steps=steps, momentum=momentum, weight_decay=wd)
    assert isinstance(optimizer, keras.optimizers.SGD)
    lrs = [spec_poly(t, base, steps) for t in range(steps)]
    expected = torch_sgd_reference(weights, gradients, lrs, momentum, wd)
    actual = run_optimizer(optimizer, weights, gradients)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6)

    keras_sgd = keras.optimizers.SGD(
        poly_learning_rate(base, steps), momentum=momentum, weight_decay=wd
    )
    decoupled = run_optimizer(keras_sgd, weights, gradients)
    assert not np.allclose(decoupled[0], expected[0], rtol=1e-5, atol=1e-6)


def test_nesterov_and_no_momentum_match_torch():
    weights, gradients = random_problem(1, 4)
    for momentum, nesterov in [(0.9, True), (0.0, False)]:
        optimizer = TorchSGD(0.05, momentum=momentum, l2_weight_decay=1e-2, nesterov=nesterov)
        expected = torch_sgd_reference(weights, gradients, [0.05] * 4, momentum, 1e-2, nesterov)
        for a, e in zip(run_optimizer(optimizer, weights, gradients), expected):
            np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6)


def test_optimizer_config_round_trip_and_rejects_decoupled_decay():
    optimizer = make_optimizer(0.01, total_steps=1000, weight_decay=1e-4)
    clone = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(clone, TorchSGD)
    assert clone.l2_weight_decay == pytest.approx(1e-4)
    assert clone.momentum == pytest.approx(0.9)
    assert float(clone.learning_rate) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="l2_weight_decay"):
        TorchSGD(0.01, weight_decay=1e-4)
