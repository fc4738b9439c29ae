"""Pick the tf.distribute strategy and split the global batch the way the references do."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

import tensorflow as tf

from pspnet_tf.errors import UserError

STRATEGIES = ("auto", "mirrored", "multi_worker", "one_device")


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


def create_strategy(strategy: str = "auto") -> tf.distribute.Strategy:
    """Build the strategy named on the command line.

    "auto" trains multi-worker when TF_CONFIG lists more than one training task,
    otherwise mirrors over every local GPU, or over the CPU when there is none.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if strategy == "auto":
        multi_worker = parse_tf_config(os.environ.get("TF_CONFIG")).num_workers > 1
        strategy = "multi_worker" if multi_worker else "mirrored"
    if strategy == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = [device.name for device in tf.config.list_logical_devices("GPU")]
    if strategy == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0] if gpus else "/cpu:0")
    return tf.distribute.MirroredStrategy(devices=gpus or ["/cpu:0"])


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process should write checkpoints, logs and exported models."""
    resolver = strategy.cluster_resolver
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    config = TFConfig(
        cluster=resolver.cluster_spec().as_dict(),
        task_type=resolver.task_type,
        task_id=int(resolver.task_id or 0),
    )
    return config.is_chief


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
        raise UserError(
            f"global batch size {global_batch_size} is not divisible by {replicas} "
            "replicas; pass " + " or ".join(f"--batch_size={size}" for size in choices)
        )
    return global_batch_size // replicas
