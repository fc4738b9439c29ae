"""What the PyTorch comparison benchmarks share: each row times itself in a fresh process
(its own peak memory, threads set before the framework starts), rows alternate over rounds,
and the best round of each row counts, as the CPU may be shared."""

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def time_calls(call: Callable[[], object], count: int, warm_up: int) -> list[float]:
    """Seconds of each of `count` calls after `warm_up` untimed ones."""
    for _ in range(warm_up):
        call()
    times = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def use_tensorflow_threads(threads: int) -> None:
    """`threads` intra-op threads and one inter-op thread, as the entry points run on CPUs."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def report(times: list[float]) -> None:
    """A worker's last line: its times and this process's peak resident memory."""
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"times": times, "peak_mb": peak_mb}))


def run_worker(script: str, arguments: list[str]) -> str:
    """Runs `script arguments` on the CPU; its stdout, or exit with its stderr's tail."""
    environment = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2",
                   "PYTHONPATH": ROOT}
    result = subprocess.run([sys.executable, script, *arguments], capture_output=True,
                            text=True, env=environment)
    if result.returncode:
        raise SystemExit(f"{os.path.basename(script)} {' '.join(arguments)} failed:\n"
                         f"{result.stderr[-3000:]}")
    return result.stdout


def best_rounds(script: str, rows: Iterable[str], rounds: int,
                arguments: list[str]) -> dict[str, dict]:
    """Per row, the round with the lowest median: {"times", "peak_mb", "seconds"}."""
    rows = list(rows)
    results: dict[str, list[dict]] = {row: [] for row in rows}
    for _ in range(rounds):
        for row in rows:
            output = run_worker(script, [f"--worker={row}", *arguments])
            result = json.loads(output.strip().splitlines()[-1])
            results[row].append({**result, "seconds": statistics.median(result["times"])})
    return {row: min(measured, key=lambda r: r["seconds"]) for row, measured in results.items()}
