"""The workers of a multi-worker run agree to stop at the same step (training/preemption.py),
with the cluster's all-reduce replaced by a sum with one other worker's noted signals.
tests/test_multi_worker.py preempts a real two-worker run."""

import os
import signal
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

from pspnet_tf.errors import RunInterrupted
from pspnet_tf.training.interrupts import StopRequests
from pspnet_tf.training.preemption import WorkerStopRequests, _sum_over_workers, stop_requests
from pspnet_tf.training.strategy import other_training_tasks


class OtherWorker:
    """Stands in for the all-reduce: adds the signals another worker noted (SIGTERM,
    SIGINT) and counts the collectives this worker joined."""

    def __init__(self) -> None:
        self.noted = [0, 0]
        self.collectives = 0

    def __call__(self, value: tf.Tensor) -> tf.Tensor:
        self.collectives += 1
        return value + tf.constant(self.noted, tf.float32)


def interrupted(stop: StopRequests, step: int) -> RunInterrupted:
    with pytest.raises(RunInterrupted) as caught:
        stop.raise_if_requested(step)
    assert str(caught.value) == f"interrupted at step {step}; run the same command to resume"
    return caught.value


def test_every_step_joins_one_collective_and_nothing_stops_without_a_signal():
    other = OtherWorker()
    stop = WorkerStopRequests(other)
    assert [stop.stop_after_step() for _ in range(3)] == [False] * 3
    assert other.collectives == 3
    stop.raise_if_requested(3)  # no stop


def test_another_workers_sigterm_stops_this_one_with_status_143():
    other = OtherWorker()
    stop = WorkerStopRequests(other)
    assert not stop.stop_after_step()
    other.noted = [1, 0]
    assert stop.stop_after_step()
    assert interrupted(stop, 6).exit_status == 143


def test_a_signal_stops_this_worker_only_once_the_workers_agreed():
    """Between steps (e.g. during validation) a worker noting a signal must go on: the
    others would wait for it in their next collective."""
    other, before = OtherWorker(), signal.getsignal(signal.SIGINT)
    with WorkerStopRequests(other) as stop:
        os.kill(os.getpid(), signal.SIGINT)  # noted, not a KeyboardInterrupt
        assert stop.signal_number == signal.SIGINT
        stop.raise_if_requested(4)  # not yet agreed: goes on
        other.noted = [1, 0]  # the other worker got SIGTERM at the same time
        assert stop.stop_after_step()
        assert interrupted(stop, 5).exit_status == 130  # its own signal
    assert signal.getsignal(signal.SIGINT) is before


def test_a_single_process_stops_on_its_own_signal_without_collectives():
    stop = stop_requests(tf.distribute.OneDeviceStrategy("/cpu:0"))
    assert type(stop) is StopRequests
    before = signal.getsignal(signal.SIGTERM)
    with stop:
        assert not stop.stop_after_step()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.stop_after_step()
        assert interrupted(stop, 2).exit_status == 143
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_cluster_sum_is_a_compiled_all_reduce():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    summed = _sum_over_workers(strategy)
    np.testing.assert_array_equal(summed(tf.constant([1.0, 0.0])), [1, 0])


def test_the_chiefs_wait_comes_after_the_agreement_and_before_the_interrupt():
    other, calls = OtherWorker(), []
    stop = WorkerStopRequests(other, before_stopping=lambda: calls.append(other.collectives))
    stop.stop_after_step()
    stop.raise_if_requested(1)
    assert calls == []
    other.noted = [1, 0]
    stop.stop_after_step()
    interrupted(stop, 2)
    assert calls == [2]


def test_the_other_training_tasks_are_named_as_tensorflow_names_them():
    cluster = tf.train.ClusterSpec({"chief": ["a:1"], "worker": ["b:1", "c:1"],
                                    "evaluator": ["d:1"]})
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        cluster, task_type="worker", task_id=0)
    strategy = SimpleNamespace(cluster_resolver=resolver)
    assert other_training_tasks(strategy) == ["/job:chief/replica:0/task:0",
                                              "/job:worker/replica:0/task:1"]
