"""Every use of private Keras / TensorFlow internals, in one place.

pyproject.toml caps Keras and TensorFlow at the releases tested; a newer release may move
or change what this module touches. `check_internals()` (run by tests/test_compat.py)
then fails with one message naming the versions and the internal, instead of an
AttributeError deep inside training or a weight file written differently.

- `legacy_h5_format`: Keras 3's by-name HDF5 weight layout. Only the legacy format keys
  weights by layer name, so that the training model (with the auxiliary head) and the
  inference model share one file; Keras 3 exposes it only as `keras.src`.
- `optimizer_variable_index`: an optimizer's slot (e.g. momentum buffer) for a variable;
  Keras' own optimizers look it up with the private `_get_variable_index`.
- `convert_variables_to_constants_v2`: a traced function with its variables frozen into
  constants; TensorFlow 2.21's LiteRT converter otherwise leaves Keras 3 weights out of the
  file, and TensorFlow has no public equivalent.
- `MultiWorkerStrategyForKerasFit`: TensorFlow's MultiWorkerMirroredStrategy with a
  `reduce` that takes what Keras 3's `fit` passes it.
- `loss_tracker`, `unscale_loss_for_distribution`: the `Mean` of the total loss that Keras'
  `fit` reports as `loss`, and the factor Keras' train step takes out of the loss it adds
  to it under a strategy (the gradient-accumulating train step, models/accumulation.py,
  does what Keras' own train step does per micro-batch).
- `onednn_enabled`: whether this process's TensorFlow runs oneDNN's kernels (on by default
  only on x86 CPUs with AVX-512 VNNI, AVX-VNNI or AMX; `TF_ENABLE_ONEDNN_OPTS` overrides),
  from `_pywrap_util_port.IsMklEnabled` (no public equivalent). Inference picks its
  convolution forms by it (models/winograd_conversion.py).
- `peer_is_up`: whether another task of the cluster still answers, with the eager context's
  `check_collective_ops_peer_health` (MultiWorkerMirroredStrategy's own health check; no
  public equivalent).
"""

from typing import Any

import keras
import tensorflow as tf
from keras.src.legacy.saving import legacy_h5_format
from keras.src.losses.loss import unscale_loss_for_distribution
from tensorflow.python.eager import context
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
from tensorflow.python.util import _pywrap_util_port

__all__ = [
    "MultiWorkerStrategyForKerasFit",
    "check_internals",
    "convert_variables_to_constants_v2",
    "legacy_h5_format",
    "loss_tracker",
    "onednn_enabled",
    "optimizer_variable_index",
    "peer_is_up",
    "unscale_loss_for_distribution",
]

_H5_FUNCTIONS = ("save_weights_to_hdf5_group", "load_attributes_from_hdf5_group",
                 "load_subset_weights_from_hdf5_group")


def optimizer_variable_index(optimizer: keras.optimizers.Optimizer, variable: Any) -> int:
    """The index of `variable`'s slots in the optimizer's slot lists (e.g. `momentums`)."""
    return optimizer._get_variable_index(variable)


def loss_tracker(model: keras.Model) -> keras.metrics.Mean:
    """The compiled `model`'s tracker of the loss `fit` logs as `loss`."""
    return model._loss_tracker


class MultiWorkerStrategyForKerasFit(tf.distribute.MultiWorkerMirroredStrategy):
    """MultiWorkerMirroredStrategy whose `reduce` takes what Keras 3 `fit` passes it.

    Keras 3.15 `fit` fails on TensorFlow's own multi-worker strategy in two places:
    it reduces a whole `(x, y)` batch in one `reduce` call (to build the model), but the
    strategy reduces single values only ("TODO: support `value` being a nest" in
    distribute_lib: "Attempt to convert a value (PerReplica...)"); and it averages the
    scalar losses of each step over axis 0 ("Invalid reduction dimension 0 for input
    with 0 dimensions"). This reduces each value of a nest in turn, and scalars over
    replicas only.
    """

    def reduce(self, reduce_op: Any, value: Any, axis: int | None = None) -> Any:
        if isinstance(value, (tuple, list, dict)):
            return tf.nest.map_structure(lambda item: self.reduce(reduce_op, item, axis), value)
        if axis is not None and self.experimental_local_results(value)[0].shape.rank == 0:
            axis = None
        return super().reduce(reduce_op, value, axis)


def onednn_enabled() -> bool:
    """Whether TensorFlow runs oneDNN's kernels in this process."""
    return bool(_pywrap_util_port.IsMklEnabled())


def peer_is_up(task: str, timeout_s: float) -> bool:
    """Whether cluster task `task` (`/job:NAME/replica:0/task:N`) answers within `timeout_s`;
    False once it is gone (or was restarted as another process)."""
    try:
        context.context().check_collective_ops_peer_health(task, max(1, int(timeout_s * 1000)))
    except (tf.errors.UnavailableError, tf.errors.FailedPreconditionError):
        return False
    except tf.errors.DeadlineExceededError:  # there, but slow to answer
        return True
    return True


def _broken_internals() -> list[str]:
    """What of the above no longer works as relied on, one phrase each."""
    broken = [f"keras.src.legacy.saving.legacy_h5_format.{name}" for name in _H5_FUNCTIONS
              if not callable(getattr(legacy_h5_format, name, None))]
    optimizer = keras.optimizers.SGD(momentum=0.9)
    variables = [keras.Variable(tf.zeros(2)), keras.Variable(tf.zeros(3))]
    optimizer.build(variables)
    try:
        if [optimizer_variable_index(optimizer, v) for v in variables] != [0, 1]:
            broken.append("Optimizer._get_variable_index no longer indexes the slot lists")
    except AttributeError:
        broken.append("Optimizer._get_variable_index")
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(loss="mse")
    if not isinstance(getattr(model, "_loss_tracker", None), keras.metrics.Mean):
        broken.append("Model._loss_tracker (the Mean of the logged loss)")
    if not callable(unscale_loss_for_distribution):
        broken.append("keras.src.losses.loss.unscale_loss_for_distribution")
    if not callable(convert_variables_to_constants_v2):
        broken.append("tensorflow.python.framework.convert_to_constants")
    if not callable(getattr(context.Context, "check_collective_ops_peer_health", None)):
        broken.append("tensorflow.python.eager.context.Context.check_collective_ops_peer_health")
    if not callable(getattr(_pywrap_util_port, "IsMklEnabled", None)):
        broken.append("tensorflow.python.util._pywrap_util_port.IsMklEnabled")
    base_reduce = tf.distribute.MultiWorkerMirroredStrategy.reduce
    if not callable(base_reduce) or "axis" not in base_reduce.__code__.co_varnames:
        broken.append("MultiWorkerMirroredStrategy.reduce(reduce_op, value, axis)")
    return broken


def check_internals() -> None:
    """Raises RuntimeError naming the Keras / TensorFlow versions and every broken internal."""
    broken = _broken_internals()
    if broken:
        raise RuntimeError(
            f"pspnet_tf.compat does not work with Keras {keras.__version__} / TensorFlow "
            f"{tf.__version__}: {'; '.join(broken)}. Install the versions pyproject.toml "
            "allows, or adapt pspnet_tf/compat.py")
