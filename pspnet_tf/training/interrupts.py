"""Stopping a training run cleanly on SIGINT (Ctrl-C) and SIGTERM (schedulers, `kill`)."""

import signal
import threading
from types import FrameType

from pspnet_tf.errors import RunInterrupted

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequests:
    """While active, SIGINT and SIGTERM only note the request instead of killing the process.

    Python's default would raise KeyboardInterrupt (or die, for SIGTERM) at an arbitrary
    bytecode, possibly in the middle of a checkpoint write, and print a long traceback. The
    training loop instead calls `raise_if_requested` at points where stopping is safe (after
    a step has finished and been checkpointed, between validation images), which raises
    RunInterrupted. Signal handlers exist only in the main thread; elsewhere (train() called
    from a worker thread) this is inactive and signals keep their usual effect. The workers
    of a multi-worker run stop together instead (preemption.WorkerStopRequests).
    """

    def __init__(self) -> None:
        self.signal_number: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            self._previous = {number: signal.signal(number, self._note) for number in _STOP_SIGNALS}
        return self

    def __exit__(self, *exc_info: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}

    def _note(self, number: int, frame: FrameType | None) -> None:
        self.signal_number = number

    def stop_after_step(self) -> bool:
        """Whether the run stops after the step just finished (asked once per step)."""
        return self.signal_number is not None

    def raise_if_requested(self, step: int) -> None:
        """Raises RunInterrupted naming `step` (the checkpointed step a rerun resumes at)."""
        if self.signal_number is not None:
            self._raise(step, self.signal_number)

    @staticmethod
    def _raise(step: int, signal_number: int) -> None:
        raise RunInterrupted(f"interrupted at step {step}; run the same command to resume",
                             signal_number)
