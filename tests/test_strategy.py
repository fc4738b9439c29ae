"""Strategy choice, TF_CONFIG parsing, chief detection and batch splitting."""

import types

import pytest
import tensorflow as tf
from helpers import free_ports, tf_config

from pspnet_tf.errors import UserError
from pspnet_tf.training import strategy as strategy_module
from pspnet_tf.training.strategy import (
    all_workers_ok,
    create_strategy,
    is_chief,
    num_replicas,
    num_workers,
    parse_tf_config,
    split_global_batch,
    task_name,
)
from pspnet_tf.training.trainer import _lost_workers_reported

WORKERS = ["host0:2222", "host1:2222", "host2:2222"]


def fake_strategy(replicas):
    return types.SimpleNamespace(num_replicas_in_sync=replicas)


def resolver_strategy(cluster, task_type, index):
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type=task_type, task_id=index
    )
    return types.SimpleNamespace(cluster_resolver=resolver)


@pytest.mark.parametrize("name", ["auto", "mirrored", "one_device"])
def test_local_strategies_use_every_local_gpu_or_the_cpu(name, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategy = create_strategy(name)
    gpus = len(tf.config.list_logical_devices("GPU"))
    expected = 1 if name == "one_device" else max(gpus, 1)
    assert num_replicas(strategy) == expected
    assert is_chief(strategy)


@pytest.mark.parametrize("gpus, expected", [
    ([], ("one_device", "/cpu:0")),
    (["/device:GPU:0"], ("one_device", "/device:GPU:0")),
    (["/device:GPU:0", "/device:GPU:1"], ("mirrored", ["/device:GPU:0", "/device:GPU:1"]))])
def test_auto_mirrors_only_over_several_gpus(gpus, expected, monkeypatch):
    """One device needs no mirrored variables or gradient all-reduce: auto runs on it alone."""
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.setattr(tf.config, "list_logical_devices",
                        lambda kind=None: [types.SimpleNamespace(name=name) for name in gpus]
                        if kind == "GPU" else [])
    monkeypatch.setattr(tf.distribute, "OneDeviceStrategy", lambda device: ("one_device", device))
    monkeypatch.setattr(tf.distribute, "MirroredStrategy",
                        lambda devices: ("mirrored", devices))
    assert create_strategy("auto") == expected


def test_unknown_strategy_lists_choices():
    with pytest.raises(ValueError, match="auto, mirrored, multi_worker, one_device, tpu"):
        create_strategy("gpu")


def test_tpu_strategy_without_a_tpu_is_a_user_error(monkeypatch):
    monkeypatch.delenv("TPU_NAME", raising=False)
    with pytest.raises(UserError, match=r"found no TPU on this machine .*pass tpu=NAME"):
        create_strategy("tpu")
    [closed_port] = free_ports(1)
    with pytest.raises(UserError, match=f"at tpu=grpc://127.0.0.1:{closed_port} "):
        create_strategy("tpu", f"grpc://127.0.0.1:{closed_port}")


def test_single_process_strategies_have_one_worker(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategy = create_strategy("mirrored")
    assert (num_workers(strategy), task_name(strategy)) == (1, "chief_0")
    assert all_workers_ok(strategy, True) and not all_workers_ok(strategy, False)
    assert task_name(resolver_strategy({"worker": WORKERS}, "worker", 2)) == "worker_2"


def test_auto_goes_multi_worker_only_for_several_workers(monkeypatch):
    created = []
    monkeypatch.setattr(
        strategy_module, "_MultiWorkerStrategy",
        lambda: created.append("multi_worker") or "multi_worker-strategy",
    )
    monkeypatch.setenv("TF_CONFIG", tf_config({"worker": WORKERS[:1]}, "worker", 0))
    assert isinstance(create_strategy("auto"), tf.distribute.OneDeviceStrategy)
    monkeypatch.setenv("TF_CONFIG", tf_config({"worker": WORKERS}, "worker", 1))
    assert create_strategy("auto") == "multi_worker-strategy"
    assert created == ["multi_worker"]


def test_parse_tf_config():
    single = parse_tf_config(None)
    assert (single.num_workers, single.task_type, single.is_chief) == (0, None, True)
    assert parse_tf_config("") == single

    config = parse_tf_config(
        tf_config({"chief": ["c:1"], "worker": WORKERS, "evaluator": ["e:1"]}, "worker", 2)
    )
    assert (config.num_workers, config.task_type, config.task_id) == (4, "worker", 2)
    assert not config.is_chief

    with pytest.raises(UserError, match="TF_CONFIG is not valid JSON"):
        parse_tf_config("{cluster:")
    with pytest.raises(UserError, match="JSON object"):
        parse_tf_config("[1, 2]")


@pytest.mark.parametrize(
    "cluster, task_type, index, chief",
    [
        ({"worker": WORKERS}, "worker", 0, True),
        ({"worker": WORKERS}, "worker", 1, False),
        ({"chief": ["c:1"], "worker": WORKERS}, "worker", 0, False),
        ({"chief": ["c:1"], "worker": WORKERS}, "chief", 0, True),
        ({"worker": WORKERS, "evaluator": ["e:1"]}, "evaluator", 0, False),
    ],
)
def test_chief_rules_from_tf_config_and_cluster_resolver(cluster, task_type, index, chief):
    assert parse_tf_config(tf_config(cluster, task_type, index)).is_chief is chief
    assert is_chief(resolver_strategy(cluster, task_type, index)) is chief


def test_split_global_batch():
    assert split_global_batch(16, create_strategy("mirrored")) == 16 // max(
        len(tf.config.list_logical_devices("GPU")), 1
    )
    assert split_global_batch(16, fake_strategy(2)) == 8
    assert split_global_batch(8, fake_strategy(8)) == 1
    with pytest.raises(UserError) as error:
        split_global_batch(16, fake_strategy(3))
    assert str(error.value) == (
        "global batch size 16 is not divisible by 3 replicas; "
        "pass batch_size=15 or batch_size=18"
    )
    with pytest.raises(UserError, match="pass batch_size=4$"):
        split_global_batch(2, fake_strategy(4))
    with pytest.raises(UserError, match="at least 1"):
        split_global_batch(0, fake_strategy(1))


def test_a_lost_worker_error_is_left_as_is_on_one_worker():
    with pytest.raises(tf.errors.UnavailableError):
        with _lost_workers_reported(tf.distribute.get_strategy(), "runs/x"):
            raise tf.errors.UnavailableError(None, None, "connection refused")
