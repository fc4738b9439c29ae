"""One training step of PSPNet R-50-D8 on the CPU: pspnet_tf vs a PyTorch reference, in one run.

    python benchmarks/train_step.py [--steps=3] [--rounds=2] [--threads=N] [--size=512]

A step is forward, main + 0.4 x auxiliary cross-entropy (ignore 255), backward and an SGD
update (momentum 0.9, weight decay 5e-4) on a batch of 2 random 512x512 images with 21 classes,
BatchNorm in training mode. Rows: the PyTorch reference of the same architecture
(tests/torch_reference.py, mmsegmentation's layout, Dropout2d 0.1 before both classifiers);
ours as train.py runs it (build_training_model + compile_for_training under create_strategy,
Keras fit; at 512x512 --memory_saving=auto turns the memory saving on), the same with
--memory_saving=off, and with XLA (--jit_compile). Each row runs in its own process with the
same intra-op threads (one inter-op thread), in alternating rounds; a row reports the median
step time of --steps timed steps after one warm-up step (the best round counts, as the CPU may
be shared) and the process's peak resident memory (ru_maxrss). Needs torch (the [dev] extra).
`--rows=pytorch,ours` leaves the other rows out. Last lines: `ratio=<ours / PyTorch>` (step
time) and `mem_ratio=<ours / PyTorch>` (peak resident memory), for the row as train.py runs.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo

from benchmarks.harness import (  # noqa: E402
    ROOT,
    best_rounds,
    report,
    time_calls,
    use_tensorflow_threads,
)

NUM_CLASSES, BATCH = 21, 2
ROWS = {
    "pytorch": "PyTorch reference (eager)",
    "ours": "pspnet_tf (Keras fit)",
    "ours_no_saving": "pspnet_tf, --memory_saving=off",
    "ours_xla": "pspnet_tf, XLA (--jit_compile)",
}


def _batch(size: int):
    import numpy as np

    rng = np.random.default_rng(0)
    images = rng.standard_normal((BATCH, size, size, 3)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, (BATCH, size, size)).astype(np.int32)
    labels[:, :, : size // 8] = 255  # an ignored border, as padded crops have
    return images, labels


def _pytorch_steps(size: int, steps: int, threads: int) -> list[float]:
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, os.path.join(ROOT, "tests"))  # the reference lives with the parity tests
    from torch_reference import PSPNet

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = PSPNet(50, 8, NUM_CLASSES).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    images, labels = _batch(size)
    images = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    labels = torch.from_numpy(labels).long()

    def step() -> None:
        optimizer.zero_grad()
        logits, aux_logits = model(images)
        loss = (F.cross_entropy(logits, labels, ignore_index=255)
                + 0.4 * F.cross_entropy(aux_logits, labels, ignore_index=255))
        loss.backward()
        optimizer.step()

    return time_calls(step, steps, warm_up=1)


def _our_steps(size: int, steps: int, threads: int, row: str) -> list[float]:
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # before TensorFlow, as train.py
    from pspnet_tf.config import ExperimentConfig
    from pspnet_tf.training.strategy import create_strategy
    from pspnet_tf.training.trainer import build_training_model, compile_for_training

    import keras
    import tensorflow as tf

    use_tensorflow_threads(threads)

    config = ExperimentConfig.from_fields(num_classes=NUM_CLASSES, backbone="resnet50_v1c",
                                          output_stride=8, batch_size=BATCH,
                                          crop_size=(size, size), jit_compile=row == "ours_xla",
                                          memory_saving="off" if row == "ours_no_saving"
                                          else "auto")
    with create_strategy(config.runtime.strategy).scope():
        model = build_training_model(config)
        compile_for_training(model, config, total_steps=1000)
    images, labels = _batch(size)
    data = tf.data.Dataset.from_tensors((images, {"logits": labels, "aux_logits": labels}))

    class StepTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.times: list[float] = []

        def on_train_batch_begin(self, batch, logs=None) -> None:
            self._start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None) -> None:
            self.times.append(time.perf_counter() - self._start)

    timer = StepTimer()
    model.fit(data.repeat(steps + 1), callbacks=[timer], verbose=0)
    return timer.times[1:]  # the first step builds and compiles the training function


def worker(row: str, steps: int, threads: int, size: int) -> None:
    """Times one row in this process and reports its step times and peak memory."""
    if row == "pytorch":
        report(_pytorch_steps(size, steps, threads))
    else:
        report(_our_steps(size, steps, threads, row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per row and round")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of all rows")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="intra-op threads")
    parser.add_argument("--size", type=int, default=512, help="crop height and width")
    parser.add_argument("--rows", default=",".join(ROWS),
                        help=f"comma-separated rows to run, of {', '.join(ROWS)} "
                             "(pytorch and ours are required)")
    parser.add_argument("--worker", choices=ROWS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.steps, args.threads, args.size)
        return
    rows = {row: ROWS[row] for row in ROWS if row in args.rows.split(",")}
    if not {"pytorch", "ours"} <= set(rows) or set(args.rows.split(",")) - set(ROWS):
        parser.error(f"--rows={args.rows}: give pytorch, ours and optionally "
                     "ours_no_saving, ours_xla")

    started = time.time()
    best = best_rounds(os.path.abspath(__file__), rows, args.rounds, [
        f"--steps={args.steps}", f"--threads={args.threads}", f"--size={args.size}"])
    seconds = {row: best[row]["seconds"] for row in rows}
    print(f"PSPNet R-50-D8 + aux head, {NUM_CLASSES} classes, batch {BATCH}, "
          f"{args.size}x{args.size}, one SGD training step on the CPU, {args.threads} threads; "
          f"median of {args.steps} steps, best of {args.rounds} rounds")
    print(f"{'path':<36}{'s/step':>9}{'vs torch':>10}{'peak MB':>9}")
    for row, label in rows.items():
        print(f"{label:<36}{seconds[row]:>9.2f}{seconds[row] / seconds['pytorch']:>10.3f}"
              f"{best[row]['peak_mb']:>9.0f}")
    print(f"measured in {time.time() - started:.0f} s")
    print(f"ratio={seconds['ours'] / seconds['pytorch']:.3f}")
    print(f"mem_ratio={best['ours']['peak_mb'] / best['pytorch']['peak_mb']:.3f}")


if __name__ == "__main__":
    main()
