"""Poly learning-rate schedule and the PyTorch-style SGD the PSPNet references train with."""

from __future__ import annotations

from typing import Any

import keras

from pspnet_tf.compat import optimizer_variable_index


def poly_learning_rate(
    base_lr: float, total_steps: int, end_lr: float = 1e-4, power: float = 0.9
) -> keras.optimizers.schedules.PolynomialDecay:
    """Per-iteration poly decay: lr = (base - end) * (1 - step / total)^power + end."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be at least 1, got {total_steps}")
    return keras.optimizers.schedules.PolynomialDecay(
        initial_learning_rate=base_lr,
        decay_steps=total_steps,
        end_learning_rate=end_lr,
        power=power,
        cycle=False,
    )


@keras.saving.register_keras_serializable(package="pspnet_tf")
class TorchSGD(keras.optimizers.SGD):
    """SGD with exactly PyTorch's `torch.optim.SGD(momentum, weight_decay)` update.

    PyTorch adds the L2 term to the gradient before momentum and scales the momentum
    buffer by the CURRENT learning rate:
        g' = g + weight_decay * w;  buf = momentum * buf + g';  w -= lr * buf
    Keras' SGD differs on both counts: its `weight_decay` is decoupled
    (w -= lr * wd * w outside momentum) and its buffer accumulates lr * g, which
    diverges from PyTorch as soon as the poly schedule changes lr.
    Nesterov follows PyTorch too: w -= lr * (g' + momentum * buf).
    """

    def __init__(
        self,
        learning_rate: Any = 0.01,
        momentum: float = 0.9,
        l2_weight_decay: float = 0.0,
        nesterov: bool = False,
        name: str = "torch_sgd",
        **kwargs: Any,
    ) -> None:
        if kwargs.get("weight_decay") is not None:
            raise ValueError(
                "TorchSGD applies coupled L2 decay via l2_weight_decay; "
                "Keras' decoupled weight_decay would apply it a second time"
            )
        kwargs.pop("weight_decay", None)
        super().__init__(
            learning_rate=learning_rate,
            momentum=float(momentum),
            nesterov=nesterov,
            name=name,
            **kwargs,
        )
        self.l2_weight_decay = float(l2_weight_decay)

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        """Apply one PyTorch SGD step to `variable`."""
        learning_rate = keras.ops.cast(learning_rate, variable.dtype)
        gradient = keras.ops.cast(gradient, variable.dtype)
        if self.l2_weight_decay:
            decay = keras.ops.cast(self.l2_weight_decay, variable.dtype)
            gradient = keras.ops.add(gradient, keras.ops.multiply(decay, variable))
        step = gradient
        if self.momentum != 0:
            buffer = self.momentums[optimizer_variable_index(self, variable)]
            momentum = keras.ops.cast(self.momentum, variable.dtype)
            self.assign(buffer, keras.ops.add(keras.ops.multiply(buffer, momentum), gradient))
            if self.nesterov:
                step = keras.ops.add(gradient, keras.ops.multiply(buffer, momentum))
            else:
                step = buffer
        self.assign_sub(variable, keras.ops.multiply(step, learning_rate))

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments, so the optimizer saves and reloads."""
        config = super().get_config()
        config["l2_weight_decay"] = self.l2_weight_decay
        return config


def make_optimizer(
    base_lr: float,
    total_steps: int,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    end_lr: float = 1e-4,
) -> keras.optimizers.SGD:
    """The references' optimiser: PyTorch-style SGD on a per-iteration poly schedule."""
    return TorchSGD(
        learning_rate=poly_learning_rate(base_lr, total_steps, end_lr=end_lr),
        momentum=momentum,
        l2_weight_decay=weight_decay,
    )
