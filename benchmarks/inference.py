"""Inference of PSPNet R-50-D8 on the CPU: pspnet_tf vs a PyTorch reference, in one run.

    python benchmarks/inference.py [--runs=5] [--rounds=2] [--threads=N] [--size=512]

Task: one uint8 RGB image (batch 1, 512x512, 21 classes) to int32 class ids, i.e. normalise,
network, argmax. Rows: the PyTorch reference of the same architecture (tests/torch_reference.py,
mmsegmentation's module layout, eval mode, inference_mode); our exported SavedModel's
serving_default (loaded with tf.saved_model.load, as TF Serving does); our Predictor (what
evaluate.py and predict.py run), also with the network compiled by XLA. Every row runs in its
own process with the same number of intra-op threads (one inter-op thread), in alternating
rounds; each row reports the median of --runs timed runs after two warm-up runs (the best round
counts, as the CPU may be shared) and the process's peak resident memory. Achieved GFLOP/s
count R-50-D8's 178.6 GMACs at 512x512 as 357.2 GFLOP, against an estimated peak of
cores x clock x FLOP/cycle. Needs torch (the [dev] extra). Last line:
`ratio=<our slower default path (exported or Predictor) / PyTorch>`.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo

from benchmarks.harness import (  # noqa: E402
    ROOT,
    best_rounds,
    report,
    run_worker,
    time_calls,
    use_tensorflow_threads,
)

NUM_CLASSES = 21
GFLOP_AT_512 = 2 * 178.6  # published GMACs of R-50-D8 at 512x512, two FLOPs per MAC
ROWS = {
    "pytorch": "PyTorch reference (eager, inference_mode)",
    "exported": "pspnet_tf SavedModel serving_default",
    "predictor": "pspnet_tf Predictor",
    "predictor_xla": "pspnet_tf Predictor, XLA (--jit_compile)",
}


def _pytorch_runner(image, threads: int):
    import numpy as np
    import torch

    sys.path.insert(0, os.path.join(ROOT, "tests"))  # the reference lives with the parity tests
    from torch_reference import IMAGE_MEAN, IMAGE_STD, PSPNet, randomise

    torch.set_num_threads(threads)
    model = randomise(PSPNet(50, 8, NUM_CLASSES, aux=False))
    mean = torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(1, 3, 1, 1)
    pixels = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)[None]))

    def run():
        with torch.inference_mode():
            logits, _ = model((pixels.float() - mean) / std)
            return logits.argmax(1).to(torch.int32).numpy()

    return run


def _tensorflow_runner(image, threads: int, row: str, export_dir: str):
    if row == "exported":  # plain TensorFlow, as TF Serving runs it
        use_tensorflow_threads(threads)
        import tensorflow as tf

        serve = tf.saved_model.load(export_dir).signatures["serving_default"]
        images = tf.constant(image[None])
        return lambda: serve(images=images)["segmentation"].numpy()
    from pspnet_tf import build_pspnet
    from pspnet_tf.inference.predictor import Predictor
    from pspnet_tf.models.folding import fold_batchnorm

    use_tensorflow_threads(threads)

    model = fold_batchnorm(build_pspnet(NUM_CLASSES, "resnet50_v1c", 8))  # as evaluate.py
    predictor = Predictor(model, image.shape[:2], jit_compile=row == "predictor_xla")
    return lambda: predictor.predict(image)


def worker(row: str, runs: int, threads: int, size: int, export_dir: str) -> None:
    """Times one row in this process and reports its times and peak memory."""
    import numpy as np

    image = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    if row == "pytorch":
        run = _pytorch_runner(image, threads)
    else:
        run = _tensorflow_runner(image, threads, row, export_dir)
    report(time_calls(run, runs, warm_up=2))


def export(export_dir: str, size: int) -> None:
    """Exports a randomly initialised R-50-D8 as version 1, the way export.py does."""
    from pspnet_tf import build_pspnet
    from pspnet_tf.inference.export import export_saved_model

    export_saved_model(build_pspnet(NUM_CLASSES, "resnet50_v1c", 8), (size, size), export_dir,
                       version=1)


def peak_gflops(threads: int) -> tuple[float, str]:
    """Peak FP32 GFLOP/s estimate: threads x max clock x FLOP per cycle from the CPU flags."""
    text = open("/proc/cpuinfo").read()
    flags = set(re.search(r"^flags\s*:(.*)$", text, re.M).group(1).split())
    clocks = [float(mhz) for mhz in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", text, re.M)]
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        clocks += [float(mhz) for mhz in re.findall(r"CPU max MHz:\s*([\d.]+)", lscpu)]
    except OSError:
        pass
    ghz = max(clocks) / 1000
    # Two FMA units per core: 2 x lanes x 2 FLOPs.
    per_cycle = 64 if "avx512f" in flags else 32 if "fma" in flags else 8
    return threads * ghz * per_cycle, f"{threads} cores x {ghz:.2f} GHz x {per_cycle} FLOP/cycle"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per row and round")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of all rows")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="intra-op threads")
    parser.add_argument("--size", type=int, default=512, help="image height and width")
    parser.add_argument("--worker", choices=[*ROWS, "export"], help=argparse.SUPPRESS)
    parser.add_argument("--export_dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "export":
        export(args.export_dir, args.size)
        return
    if args.worker:
        worker(args.worker, args.runs, args.threads, args.size, args.export_dir)
        return

    started = time.time()
    script = os.path.abspath(__file__)
    with tempfile.TemporaryDirectory() as scratch:
        run_worker(script, ["--worker=export", f"--export_dir={scratch}", f"--size={args.size}"])
        best = best_rounds(script, ROWS, args.rounds, [
            f"--runs={args.runs}", f"--threads={args.threads}", f"--size={args.size}",
            f"--export_dir={os.path.join(scratch, '1')}"])
    seconds = {row: best[row]["seconds"] for row in ROWS}
    peak, how = peak_gflops(args.threads)
    gflop = GFLOP_AT_512 * (args.size / 512) ** 2
    print(f"PSPNet R-50-D8, {NUM_CLASSES} classes, batch 1, {args.size}x{args.size}, CPU, "
          f"{args.threads} threads; median of {args.runs} runs, best of {args.rounds} rounds")
    print(f"{'path':<44}{'s/image':>9}{'vs torch':>10}{'GFLOP/s':>9}{'% peak':>8}"
          f"{'peak MB':>9}")
    for row, label in ROWS.items():
        rate = gflop / seconds[row]
        print(f"{label:<44}{seconds[row]:>9.3f}{seconds[row] / seconds['pytorch']:>10.3f}"
              f"{rate:>9.1f}{100 * rate / peak:>7.1f}%{best[row]['peak_mb']:>9.0f}")
    print(f"peak FP32 estimate {peak:.0f} GFLOP/s ({how}); "
          f"measured in {time.time() - started:.0f} s")
    ours = max(seconds["exported"], seconds["predictor"])
    print(f"ratio={ours / seconds['pytorch']:.3f}")


if __name__ == "__main__":
    main()
