"""Pick the tf.distribute strategy and split the global batch the way the references do."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from typing import Any, Mapping

import tensorflow as tf

from pspnet_tf.compat import MultiWorkerStrategyForKerasFit as _MultiWorkerStrategy
from pspnet_tf.config import STRATEGIES  # the --strategy choices, declared once there
from pspnet_tf.errors import ParameterError, UserError, describe_error

_TPU_PROBE_TIMEOUT_S = 10


@dataclasses.dataclass(frozen=True)
class TFConfig:
    """The parts of the TF_CONFIG environment variable this project reads."""

    cluster: Mapping[str, list[str]]
    task_type: str | None
    task_id: int

    @property
    def num_workers(self) -> int:
        """Training tasks in the cluster (the chief trains too; evaluators do not)."""
        return len(self.cluster.get("chief", [])) + len(self.cluster.get("worker", []))

    @property
    def is_chief(self) -> bool:
        """True for the task that writes checkpoints and logs (TF multi-worker docs)."""
        if self.task_type is None or self.task_type == "chief":
            return True
        return self.task_type == "worker" and self.task_id == 0 and "chief" not in self.cluster


def parse_tf_config(value: str | None) -> TFConfig:
    """Parse a TF_CONFIG JSON string; unset or empty means a single local task."""
    if not value:
        return TFConfig(cluster={}, task_type=None, task_id=0)
    try:
        config = json.loads(value)
    except json.JSONDecodeError as error:
        raise UserError(f"TF_CONFIG is not valid JSON ({error}); fix or unset it") from error
    if not isinstance(config, dict):
        raise UserError("TF_CONFIG must be a JSON object with 'cluster' and 'task' keys")
    task = config.get("task") or {}
    return TFConfig(
        cluster=dict(config.get("cluster") or {}),
        task_type=task.get("type"),
        task_id=int(task.get("index", 0)),
    )


def _tpu_strategy(tpu: str) -> tf.distribute.Strategy:
    """TPUStrategy on the TPU `tpu`: a name, grpc://HOST:PORT or "local" (a TPU VM's own);
    "" lets TPUClusterResolver use TPU_NAME or Cloud TPU discovery.

    Follows the TensorFlow TPU guide; untested here, as no TPU was available. A remote
    address is probed first because TensorFlow waits without end for one that never answers.
    """
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or None)
        master = resolver.master()  # grpc://HOST:PORT for a remote TPU, "" on a TPU VM
        if master.startswith("grpc://"):
            host, port = master[len("grpc://"):].rsplit(":", 1)
            socket.create_connection((host, int(port)), timeout=_TPU_PROBE_TIMEOUT_S).close()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, OSError, tf.errors.OpError) as error:
        named = tpu or os.environ.get("TPU_NAME")
        where = ("at {tpu}={given}" if tpu else "at TPU_NAME={given}" if named
                 else "on this machine (no {tpu} or TPU_NAME given)")
        reason = describe_error(error, limit=160).split(". ")[0]
        raise ParameterError("{strategy}=tpu found no TPU " + where + " ({reason}); pass "
                             "{tpu}=NAME, {tpu}=grpc://HOST:8470 or {tpu}=local (on a TPU VM), "
                             "or choose another {strategy}", given=named,
                             reason=reason) from error
    return tf.distribute.TPUStrategy(resolver)


def create_strategy(strategy: str = "auto", tpu: str = "") -> tf.distribute.Strategy:
    """Build the strategy named on the command line.

    "auto" trains multi-worker when TF_CONFIG lists more than one training task,
    otherwise mirrors over the local GPUs when there are several, and runs on the one
    device there is (the GPU, or the CPU) otherwise: a one-replica MirroredStrategy
    all-reduces every gradient and routes every variable update through its mirrored
    variables for nothing, which slowed small training steps measurably
    (docs/performance.md). `tpu` names the TPU for "tpu" (see `_tpu_strategy`).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if strategy == "auto" and parse_tf_config(os.environ.get("TF_CONFIG")).num_workers > 1:
        strategy = "multi_worker"
    # Before listing devices: that starts TensorFlow's runtime, after which collective ops
    # can no longer be configured.
    if strategy == "multi_worker":
        return _MultiWorkerStrategy()
    if strategy == "tpu":
        return _tpu_strategy(tpu)
    gpus = [device.name for device in tf.config.list_logical_devices("GPU")]
    if strategy == "auto":
        strategy = "mirrored" if len(gpus) > 1 else "one_device"
    if strategy == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0] if gpus else "/cpu:0")
    return tf.distribute.MirroredStrategy(devices=gpus or ["/cpu:0"])


def _task(strategy: tf.distribute.Strategy) -> TFConfig:
    """The cluster and this process's task as the strategy's cluster resolver sees them."""
    resolver = strategy.cluster_resolver
    if resolver is None or not resolver.cluster_spec().as_dict():
        return TFConfig(cluster={}, task_type=None, task_id=0)
    return TFConfig(
        cluster=resolver.cluster_spec().as_dict(),
        task_type=resolver.task_type,
        task_id=int(resolver.task_id or 0),
    )


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process should write checkpoints, logs and exported models."""
    return _task(strategy).is_chief


def task_name(strategy: tf.distribute.Strategy) -> str:
    """This process's TF_CONFIG task as "TYPE_INDEX", e.g. "worker_1" ("chief_0" if alone)."""
    task = _task(strategy)
    return f"{task.task_type or 'chief'}_{task.task_id}"


def other_training_tasks(strategy: tf.distribute.Strategy) -> list[str]:
    """The cluster's other training tasks as TensorFlow names them
    (`/job:worker/replica:0/task:1`); none for a single process."""
    task = _task(strategy)
    names = [f"/job:{job}/replica:0/task:{index}" for job in ("chief", "worker")
             for index in range(len(task.cluster.get(job, [])))]
    return [name for name in names
            if name != f"/job:{task.task_type}/replica:0/task:{task.task_id}"]


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """Processes that each run the training loop: the cluster's training tasks under
    MultiWorkerMirroredStrategy, else 1 (a TPU pod has one controlling process)."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return 1
    return max(_task(strategy).num_workers, 1)


def all_workers_ok(strategy: tf.distribute.Strategy, ok: bool) -> bool:
    """True when every worker passed ok=True; a barrier that every worker must reach.

    A worker that hit a UserError tells the others this way before it exits, instead of
    leaving them blocked in the next collective op.
    """
    if num_workers(strategy) == 1:
        return ok
    failed = tf.constant(0.0 if ok else 1.0)
    total = strategy.reduce("SUM", strategy.run(lambda: tf.identity(failed)), axis=None)
    return float(total) == 0.0


def num_replicas(strategy: tf.distribute.Strategy) -> int:
    """Replicas that share each global batch (across all workers)."""
    return int(strategy.num_replicas_in_sync)


def split_global_batch(global_batch_size: int, strategy: Any) -> int:
    """Per-replica batch size; the global batch must split evenly, as in the references."""
    replicas = num_replicas(strategy)
    if global_batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {global_batch_size}")
    if global_batch_size % replicas:
        lower = global_batch_size // replicas * replicas
        upper = lower + replicas
        choices = [size for size in (lower, upper) if size]
        raise ParameterError(
            "global batch size {size} is not divisible by {replicas} replicas; pass "
            + " or ".join(f"{{batch_size}}={size}" for size in choices),
            size=global_batch_size, replicas=replicas)
    return global_batch_size // replicas
