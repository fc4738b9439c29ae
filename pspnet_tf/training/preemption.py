"""Stopping every worker of a multi-worker run at the same step when any one is signalled.

A cloud VM that is about to be preempted gets SIGTERM (or an operator presses Ctrl-C in one
worker's terminal). A checkpoint write needs every worker, so the signalled worker cannot
save on its own: after each step all workers sum, over the cluster, which stop signals
they have noted (one small all-reduce), and when any worker has one, all of them save that
same step and raise RunInterrupted. A rerun of all workers then resumes exactly there.

This is the idea of TensorFlow's `tf.distribute.experimental.PreemptionCheckpointHandler`
built on the strategy's collectives instead. That handler is not used because it probes
the GCE metadata server at start and turns itself into a no-op on GCE CPU VMs, keeps its
own step count beside the optimizer's and its own checkpoint manager beside
CheckpointKeeper's, and agrees on a step one step later through the coordination
service's key-value store with background threads; the all-reduce agrees on the step just
finished, in the training thread, at the cost of one collective per step.

Every worker exits with the interrupt line and 128 + a signal number: a signalled worker
its own signal's (143 for SIGTERM, 130 for SIGINT), every other worker the one that
stopped the run (SIGTERM when workers got different signals at once), as TensorFlow's own
GCE handling exits every worker with 143 after a preemption checkpoint.

The chief leads TensorFlow's coordination service, which the other workers' TensorFlow
still talks to while it shuts down (a worker that outlives it logs `UNAVAILABLE: Failed to
send RPC to coordination service` after the interrupt line), so the chief stops last: it
waits until the other workers have exited (a minute at most). TensorFlow offers no way to
leave the service cleanly, so a chief whose own shutdown outlasts the service's heartbeat
timeout (10 s) still logs the others' missed heartbeats after its interrupt line.

Validation runs on each worker alone, without collectives, so a signal during it takes
effect at the end of the next step (the epoch's last step was checkpointed before
validation); a signal after the last step lets the run write its results and exit 0.
"""

import signal
import time
from collections.abc import Callable

import tensorflow as tf

from pspnet_tf.compat import peer_is_up
from pspnet_tf.training.interrupts import StopRequests
from pspnet_tf.training.strategy import is_chief, num_workers, other_training_tasks

# The stop signals workers count, in the order that decides which one a worker that was not
# signalled reports when several came at once: a preemption (SIGTERM) before a Ctrl-C.
_COUNTED = (signal.SIGTERM, signal.SIGINT)

_PEERS_EXIT_TIMEOUT_S = 60.0
_PEER_PROBE_S = 0.5

SumOverWorkers = Callable[[tf.Tensor], tf.Tensor]


class WorkerStopRequests(StopRequests):
    """StopRequests of one worker of several: every worker stops at the first step end at
    which any worker has noted a signal.

    `sum_over_workers` sums a float32 vector over all workers (an all-reduce that every
    worker must join once per finished step: `stop_after_step` is asked by every worker
    after every step, also outside the main thread, where no signal is noted).
    `before_stopping` runs just before RunInterrupted is raised (the chief's wait).
    """

    def __init__(self, sum_over_workers: SumOverWorkers,
                 before_stopping: Callable[[], None] = lambda: None) -> None:
        super().__init__()
        self._sum_over_workers = sum_over_workers
        self._before_stopping = before_stopping
        self._agreed: int | None = None  # the signal that stops every worker

    def stop_after_step(self) -> bool:
        # float32: CPU all-reduces of int32 log a oneDNN fallback warning.
        noted = [float(self.signal_number == number) for number in _COUNTED]
        counts = self._sum_over_workers(tf.constant(noted, tf.float32)).numpy()
        signalled = [number for number, count in zip(_COUNTED, counts) if count > 0]
        if signalled:
            self._agreed = self.signal_number or signalled[0]
        return self._agreed is not None

    def raise_if_requested(self, step: int) -> None:
        """Raises RunInterrupted once the workers agreed to stop (never before: a worker
        that stopped alone would leave the others waiting in their next collective)."""
        if self._agreed is not None:
            self._before_stopping()
            self._raise(step, self._agreed)


def _sum_over_workers(strategy: tf.distribute.Strategy) -> SumOverWorkers:
    """An all-reduce SUM over every replica of the cluster, compiled once (eagerly the
    strategy runs it several times slower)."""

    @tf.function
    def summed(value: tf.Tensor) -> tf.Tensor:
        return strategy.reduce("SUM", strategy.run(lambda: tf.identity(value)), axis=None)

    return summed


def _wait_for_peers_to_exit(strategy: tf.distribute.Strategy) -> None:
    """Returns once every other training task has stopped answering, or after a minute."""
    deadline = time.monotonic() + _PEERS_EXIT_TIMEOUT_S
    for task in other_training_tasks(strategy):
        while time.monotonic() < deadline and peer_is_up(task, _PEER_PROBE_S):
            time.sleep(_PEER_PROBE_S)


def stop_requests(strategy: tf.distribute.Strategy) -> StopRequests:
    """The stop requests of a run under `strategy`: this process's own for a single
    process, agreed over the cluster for a multi-worker run (where the chief stops last)."""
    if num_workers(strategy) == 1:
        return StopRequests()
    wait = (lambda: _wait_for_peers_to_exit(strategy)) if is_chief(strategy) else (lambda: None)
    return WorkerStopRequests(_sum_over_workers(strategy), wait)
