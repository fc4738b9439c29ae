"""Gradient accumulation: one optimizer step from the gradients of several micro-batches.

`accumulated_train_step` is the train step of `PSPNetSegmenter.compile(
gradient_accumulation_steps=N)`: each batch `fit` hands it (N times the micro-batch) is cut
into N equal micro-batches along the batch axis; each runs forward and backward in turn,
their gradients are summed, and their mean goes to the optimizer once. So one Keras step is
one optimizer step: `optimizer.iterations`, the learning-rate schedule, checkpoints and
callbacks count optimizer steps, as without accumulation.

This is done in the train step rather than with the `gradient_accumulation_steps` of Keras'
optimizers: those count every micro-batch as an iteration (the schedule is evaluated at the
micro-step counter, `optimizer.iterations` becomes a derived value), and they apply or
accumulate inside a conditional, which under a `tf.distribute` strategy would all-reduce
inside a branch.

Each micro-batch's loss is its own mean over labelled pixels, so the step's gradient is the
mean of the micro-batches' gradients, as across replicas (PyTorch DDP). It equals one step
on the whole batch when every micro-batch holds as many labelled pixels and BatchNorm does
not train (it normalises each micro-batch with that micro-batch's statistics and updates
its moving statistics once per micro-batch), and dropout draws other masks.
"""

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from pspnet_tf.compat import loss_tracker, unscale_loss_for_distribution


def split_micro_batches(data: Any, steps: int) -> list[Any]:
    """`data` (a nest of tensors sharing their first axis) as `steps` nests of equal slices
    of it, in order (None: `steps` Nones); tf.errors.InvalidArgumentError when the batch
    does not divide."""
    tensors = [tensor for tensor in tf.nest.flatten(data) if tensor is not None]
    if not tensors:
        return [data] * steps
    batch = tf.shape(tensors[0])[0]
    check = tf.debugging.assert_equal(
        batch % steps, 0, message=f"gradient accumulation: a batch does not split into "
        f"{steps} equal micro-batches; give batches of a multiple of {steps} samples")
    with tf.control_dependencies([check]):
        size = batch // steps
    return [tf.nest.map_structure(
        lambda tensor, index=index: None if tensor is None else tensor[index * size:
                                                                       (index + 1) * size],
        data) for index in range(steps)]


def _add(sums: Sequence[tf.Tensor | None] | None,
         gradients: Sequence[tf.Tensor | None]) -> list[tf.Tensor | None]:
    if sums is None:
        return list(gradients)
    return [None if total is None else total + gradient
            for total, gradient in zip(sums, gradients)]


def accumulated_train_step(model: keras.Model, data: Any, steps: int) -> dict[str, Any]:
    """Keras' TensorFlow train step over `steps` micro-batches of `data` (x, y[, weights]):
    the loss and metrics are updated per micro-batch (the logged loss is their mean), the
    mean gradient is applied once. A micro-batch starts its forward pass only once the
    previous one's gradients exist, so one micro-batch's activations are live at a time."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    variables = model.trainable_weights
    sums, logs = None, {}
    for micro_x, micro_y, micro_weight in zip(*(split_micro_batches(part, steps) for part in
                                                 (x, y, sample_weight))):
        with tf.control_dependencies([total for total in sums or [] if total is not None]):
            micro_x = tf.nest.map_structure(tf.identity, micro_x)
        with tf.GradientTape() as tape:
            y_pred = model(micro_x, training=True)
            loss = model.compute_loss(micro_x, micro_y, y_pred, micro_weight, training=True)
            loss_tracker(model).update_state(
                unscale_loss_for_distribution(loss),
                sample_weight=tf.shape(tf.nest.flatten(micro_x)[0])[0])
            loss = model.optimizer.scale_loss(loss)
        sums = _add(sums, tape.gradient(loss, variables))
        logs = model.compute_metrics(micro_x, micro_y, y_pred, sample_weight=micro_weight)
    model.optimizer.apply_gradients(
        (None if total is None else total / steps, variable)
        for total, variable in zip(sums, variables))
    return logs
