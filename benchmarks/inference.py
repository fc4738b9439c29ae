"""Inference of PSPNet R-50-D8 on the CPU: pspnet_tf vs a PyTorch reference, in one run.

    python benchmarks/inference.py [--runs=5] [--rounds=2] [--threads=N] [--size=512] [--bf16]
                                   [--rows=exported,onnxruntime]

Task: one uint8 RGB image (batch 1, 512x512, 21 classes) to class ids (int32; uint8 from
the SavedModels), i.e. normalise, network, argmax. Rows: the PyTorch reference of the same architecture (tests/torch_reference.py,
mmsegmentation's module layout, eval mode, inference_mode); our exported SavedModel's
serving_default (loaded with tf.saved_model.load, as TF Serving does), also exported with
--jit_compile (the network compiled by XLA); our Predictor (what evaluate.py and predict.py
run), also with the network compiled by XLA; the reference exported to ONNX (torch.onnx dynamo
exporter) run by ONNX Runtime; our export.py --format=litert file run by ai-edge-litert
(XNNPACK), also with --quantize=float16, dynamic_int8 and int8 (full integer, calibrated on
CALIBRATION_IMAGES random images); our export.py --format=onnx file run
by ONNX Runtime (the last three groups when their packages are installed: onnx, onnxscript,
onnxruntime; ai-edge-litert; tf2onnx); and, on hosts with bfloat16 units (avx512_bf16 /
amx_bf16 in /proc/cpuinfo) or with --bf16, PyTorch under autocast(bfloat16) and our
SavedModel exported with --precision=bfloat16. Every row runs in its own process with the
same number of intra-op threads (one inter-op thread), in alternating rounds; each row
reports the median of --runs timed runs after two warm-up runs (the best round counts, as the
CPU may be shared), the process's peak resident memory and the size of the file or folder it
loaded. Achieved GFLOP/s count R-50-D8's 178.6 GMACs at 512x512 as 357.2 GFLOP, against an
estimated peak of cores x clock x FLOP/cycle. Needs torch (the [dev] extra). Prints the CPU
model and flags, then `ratio=<our slower default path (exported or Predictor) / PyTorch>`,
`ratio_ort=<our fastest float32 path (TensorFlow or LiteRT; not our ONNX file, which measures
ONNX Runtime) / ONNX Runtime>`, `ratio_int8=<our --quantize=int8 LiteRT file / ONNX Runtime
(float32)>` and, on hosts with bfloat16 units,
`ratio_bf16=<our bfloat16 SavedModel / PyTorch bfloat16>`, and
`ratio_exported_ort=<our default SavedModel / ONNX Runtime>`. `--rows` times only the named
rows (of those available here); the ratios whose rows are left out are not printed.

With openvino installed, also our export.py --format=openvino IR run by OpenVINO's CPU plugin
in float32 (INFERENCE_PRECISION_HINT=f32, INFERENCE_NUM_THREADS threads) and, on hosts with
bfloat16 units, in bfloat16 (OpenVINO's default where the CPU has AMX), and then
`ratio_openvino=<our OpenVINO IR in float32 / ONNX Runtime>`.
"""

import argparse
import importlib.util
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
    "exported_xla": "pspnet_tf SavedModel, --jit_compile",
    "predictor": "pspnet_tf Predictor",
    "predictor_xla": "pspnet_tf Predictor, XLA (--jit_compile)",
}
ORT_ROWS = {"onnxruntime": "PyTorch reference as ONNX, ONNX Runtime"}
OUR_ONNX_ROWS = {"onnx": "pspnet_tf ONNX file (--format=onnx), ONNX Runtime"}
LITERT_ROWS = {"litert": "pspnet_tf LiteRT file (XNNPACK)"}
OPENVINO_ROWS = {"openvino": "pspnet_tf OpenVINO IR (--format=openvino), f32"}
QUANTIZED_ROWS = {
    "litert_float16": "pspnet_tf LiteRT file, --quantize=float16",
    "litert_dynamic_int8": "pspnet_tf LiteRT file, --quantize=dynamic_int8",
    "litert_int8": "pspnet_tf LiteRT file, --quantize=int8",
}
# Random pixels, as the weights are random: the int8 kernels' times do not depend on values.
CALIBRATION_IMAGES = 8
BF16_ROWS = {
    "pytorch_bf16": "PyTorch reference, autocast(bfloat16)",
    "exported_bf16": "pspnet_tf SavedModel, --precision=bfloat16",
}
OPENVINO_BF16_ROWS = {"openvino_bf16": "pspnet_tf OpenVINO IR, bf16"}
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile")
SHOWN_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", *BF16_FLAGS)


def _installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(module) is not None for module in modules)


def _served_reference(threads: int):
    """The reference as served: uint8 NHWC pixels -> normalise -> network -> int32 argmax."""
    import torch

    sys.path.insert(0, os.path.join(ROOT, "tests"))  # the reference lives with the parity tests
    from torch_reference import IMAGE_MEAN, IMAGE_STD, PSPNet, randomise

    torch.set_num_threads(threads)

    class Served(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = randomise(PSPNet(50, 8, NUM_CLASSES, aux=False))
            self.register_buffer("mean", torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(IMAGE_STD).view(1, 3, 1, 1))

        def forward(self, images):
            logits, _ = self.net((images.permute(0, 3, 1, 2).float() - self.mean) / self.std)
            return logits.argmax(1).to(torch.int32)

    return Served().eval()


def _pytorch_runner(image, threads: int, bf16: bool):
    import contextlib

    import torch

    model = _served_reference(threads)
    pixels = torch.from_numpy(image[None])

    def run():
        precision = (torch.autocast("cpu", dtype=torch.bfloat16) if bf16
                     else contextlib.nullcontext())
        with torch.inference_mode(), precision:
            return model(pixels).numpy()

    return run


def _onnxruntime_runner(image, threads: int, path: str):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return lambda: session.run(["segmentation"], {"images": image[None]})[0]


def _litert_runner(image, threads: int, path: str):
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=path, num_threads=threads).get_signature_runner()
    return lambda: runner(images=image[None])["segmentation"]


def _openvino_runner(image, threads: int, path: str, precision: str):
    import openvino

    compiled = openvino.Core().compile_model(path, "CPU", {
        "INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads})
    assert compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == precision
    return lambda: compiled(image[None])["segmentation"]


def _tensorflow_runner(image, threads: int, row: str, export_dir: str):
    if row.startswith("exported"):  # plain TensorFlow, as TF Serving runs it
        use_tensorflow_threads(threads)
        import tensorflow as tf

        folder = os.path.join(artifact_path(export_dir, row), "1")
        serve = tf.saved_model.load(folder).signatures["serving_default"]
        images = tf.constant(image[None])
        return lambda: serve(images=images)["segmentation"].numpy()
    from pspnet_tf import build_pspnet
    from pspnet_tf.inference.modes import predictor_for

    use_tensorflow_threads(threads)

    model = build_pspnet(NUM_CLASSES, "resnet50_v1c", 8)
    # As evaluate.py builds it: BatchNorms folded, Winograd as `winograd_by_default()` says.
    predictor = predictor_for(model, image.shape[:2], jit_compile=row == "predictor_xla")
    return lambda: predictor.predict(image)


def worker(row: str, runs: int, threads: int, size: int, export_dir: str) -> None:
    """Times one row in this process and reports its times and peak memory."""
    import numpy as np

    image = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    if row in ("pytorch", "pytorch_bf16"):
        run = _pytorch_runner(image, threads, bf16=row == "pytorch_bf16")
    elif row in ("onnxruntime", "onnx"):
        run = _onnxruntime_runner(image, threads, artifact_path(export_dir, row))
    elif row.startswith("litert"):
        run = _litert_runner(image, threads, artifact_path(export_dir, row))
    elif row.startswith("openvino"):
        run = _openvino_runner(image, threads, artifact_path(export_dir, row),
                               "bf16" if row == "openvino_bf16" else "f32")
    else:
        run = _tensorflow_runner(image, threads, row, export_dir)
    report(time_calls(run, runs, warm_up=2))


def artifact_path(export_dir: str, row: str) -> str:
    """Where the export step writes what `row` loads: a SavedModel folder or one file."""
    files = {"onnxruntime": "reference.onnx", "onnx": "pspnet.onnx"}
    if row in files:
        return os.path.join(export_dir, files[row])
    if row.startswith("litert"):
        return os.path.join(export_dir, f"{row}.tflite")
    if row.startswith("openvino"):  # both precisions run the one float32 IR
        return os.path.join(export_dir, "pspnet.xml")
    return os.path.join(export_dir, row)


def export(export_dir: str, size: int, rows: list[str]) -> None:
    """Exports a randomly initialised R-50-D8 the way export.py does, for each row that
    needs a file: SavedModels (float32, XLA, bfloat16), LiteRT files (float32, quantized),
    our ONNX file, our OpenVINO IR, the reference as ONNX."""
    if "onnxruntime" in rows:
        import torch

        image = torch.zeros((1, size, size, 3), dtype=torch.uint8)
        torch.onnx.export(_served_reference(os.cpu_count()), (image,),
                          artifact_path(export_dir, "onnxruntime"), input_names=["images"],
                          output_names=["segmentation"], dynamo=True, verbose=False)
    import keras

    from pspnet_tf import build_pspnet
    from pspnet_tf.inference.export import export_saved_model
    from pspnet_tf.inference.export_litert import export_litert
    from pspnet_tf.inference.export_onnx import export_onnx

    for row, policy, jit_compile in (("exported", "float32", False),
                                     ("exported_xla", "float32", True),
                                     ("exported_bf16", "mixed_bfloat16", False)):
        if row in rows:
            keras.mixed_precision.set_global_policy(policy)
            model = build_pspnet(NUM_CLASSES, "resnet50_v1c", 8)
            export_saved_model(model, (size, size), artifact_path(export_dir, row), version=1,
                               jit_compile=jit_compile)
    keras.mixed_precision.set_global_policy("float32")
    import numpy as np

    rng = np.random.default_rng(0)
    calibration = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                   for _ in range(CALIBRATION_IMAGES)]
    for row, quantize in (("litert", None), ("litert_float16", "float16"),
                          ("litert_dynamic_int8", "dynamic_int8"), ("litert_int8", "int8")):
        if row in rows:
            export_litert(build_pspnet(NUM_CLASSES, "resnet50_v1c", 8), (size, size),
                          artifact_path(export_dir, row), (size, size), quantize,
                          calibration if quantize == "int8" else None)
    if "onnx" in rows:
        export_onnx(build_pspnet(NUM_CLASSES, "resnet50_v1c", 8), (size, size),
                    artifact_path(export_dir, "onnx"), (size, size))
    if "openvino" in rows:
        from pspnet_tf.inference.export_openvino import export_openvino

        export_openvino(build_pspnet(NUM_CLASSES, "resnet50_v1c", 8), (size, size),
                        artifact_path(export_dir, "openvino"), (size, size))


def artifact_mb(export_dir: str, row: str) -> float | None:
    """The size of what `row` loads (a SavedModel folder, or a file with the weights file that
    torch.onnx's dynamo exporter or OpenVINO writes beside it), None for in-process rows
    (PyTorch, Predictor)."""
    path = artifact_path(export_dir, row)
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(parent, name))
                   for parent, _, names in os.walk(path) for name in names) / 2**20
    files = [name for name in (path, path + ".data", path.removesuffix(".xml") + ".bin")
             if os.path.isfile(name)]
    return sum(os.path.getsize(name) for name in files) / 2**20 if files else None


def cpu_description() -> tuple[str, bool]:
    """The CPU model and its flags that matter here, and whether it has bfloat16 units."""
    text = open("/proc/cpuinfo").read()
    flags = set(re.search(r"^flags\s*:(.*)$", text, re.M).group(1).split())
    model = re.search(r"^model name\s*:\s*(.*)$", text, re.M)
    shown = " ".join(flag for flag in SHOWN_FLAGS if flag in flags) or "none of them"
    has_bf16 = bool(flags & {"avx512_bf16", "amx_bf16"})
    return (f"{model.group(1) if model else 'unknown CPU'}; flags: {shown} (of "
            f"{' '.join(SHOWN_FLAGS)}); bfloat16 units: {'yes' if has_bf16 else 'no'}"), has_bf16


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
    parser.add_argument("--bf16", action="store_true", help="also run the bfloat16 rows on "
                        "hosts without bfloat16 units (emulated: slow, and no ratio_bf16)")
    parser.add_argument("--worker", choices=[*ROWS, *ORT_ROWS, *OUR_ONNX_ROWS, *LITERT_ROWS,
                                             *QUANTIZED_ROWS, *BF16_ROWS, *OPENVINO_ROWS,
                                             *OPENVINO_BF16_ROWS, "export"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--export_dir", help=argparse.SUPPRESS)
    parser.add_argument("--rows", help="comma-separated rows to time (default: every row "
                        "available on this host), e.g. exported,onnxruntime")
    args = parser.parse_args()
    if args.worker == "export":
        export(args.export_dir, args.size, args.rows.split(","))
        return
    if args.worker:
        worker(args.worker, args.runs, args.threads, args.size, args.export_dir)
        return

    started = time.time()
    cpu, has_bf16 = cpu_description()
    rows = dict(ROWS)
    if _installed("onnx", "onnxscript", "onnxruntime"):
        rows.update(ORT_ROWS)
    if _installed("onnx", "tf2onnx", "onnxruntime"):
        rows.update(OUR_ONNX_ROWS)
    if _installed("ai_edge_litert"):
        rows.update(LITERT_ROWS)
        rows.update(QUANTIZED_ROWS)
    if _installed("openvino"):
        rows.update(OPENVINO_ROWS)
    if has_bf16 or args.bf16:
        rows.update({row: label if has_bf16 else f"{label} (emulated)"
                     for row, label in BF16_ROWS.items()})
    if has_bf16 and _installed("openvino"):
        rows.update(OPENVINO_BF16_ROWS)
    available = set(rows)
    if args.rows:
        chosen = args.rows.split(",")
        if set(chosen) - set(rows):
            parser.error(f"--rows={args.rows}: choose from {','.join(rows)}")
        rows = {row: label for row, label in rows.items() if row in chosen}
    script = os.path.abspath(__file__)
    with tempfile.TemporaryDirectory() as scratch:
        run_worker(script, ["--worker=export", f"--export_dir={scratch}", f"--size={args.size}",
                            f"--rows={','.join(rows)}"])
        best = best_rounds(script, rows, args.rounds, [
            f"--runs={args.runs}", f"--threads={args.threads}", f"--size={args.size}",
            f"--export_dir={scratch}"])
        sizes = {row: artifact_mb(scratch, row) for row in rows}
    seconds = {row: best[row]["seconds"] for row in rows}
    peak, how = peak_gflops(args.threads)
    gflop = GFLOP_AT_512 * (args.size / 512) ** 2
    print(f"PSPNet R-50-D8, {NUM_CLASSES} classes, batch 1, {args.size}x{args.size}, CPU, "
          f"{args.threads} threads; median of {args.runs} runs, best of {args.rounds} rounds")
    width = max(len(label) for label in rows.values()) + 1
    print(f"{'path':<{width}}{'s/image':>9}{'vs torch':>10}{'GFLOP/s':>9}{'% peak':>8}"
          f"{'peak MB':>9}{'file MB':>9}")
    for row, label in rows.items():
        rate = gflop / seconds[row]
        torch = f"{seconds[row] / seconds['pytorch']:.3f}" if "pytorch" in seconds else "-"
        print(f"{label:<{width}}{seconds[row]:>9.3f}{torch:>10}"
              f"{rate:>9.1f}{100 * rate / peak:>7.1f}%{best[row]['peak_mb']:>9.0f}"
              f"{'-' if sizes[row] is None else f'{sizes[row]:.1f}':>9}")
    print(f"peak FP32 estimate {peak:.0f} GFLOP/s ({how}); "
          f"measured in {time.time() - started:.0f} s")
    print(f"CPU: {cpu}")
    missing = [name for name, group in (("ONNX Runtime (onnx, onnxscript, onnxruntime)", ORT_ROWS),
                                        ("our ONNX file (onnx, tf2onnx, onnxruntime)",
                                         OUR_ONNX_ROWS),
                                        ("LiteRT (ai-edge-litert)",
                                         {**LITERT_ROWS, **QUANTIZED_ROWS}),
                                        ("OpenVINO (openvino)", OPENVINO_ROWS),
                                        ("bfloat16 (no bfloat16 units; --bf16 forces)", BF16_ROWS))
               if not set(group) <= available]
    if missing:
        print(f"rows left out: {'; '.join(missing)}")
    if {"exported", "predictor", "pytorch"} <= set(seconds):
        ours = max(seconds["exported"], seconds["predictor"])
        print(f"ratio={ours / seconds['pytorch']:.3f}")
    if "onnxruntime" in seconds and set(seconds) & {*ROWS, *LITERT_ROWS} - {"pytorch"}:
        fastest = min(seconds[row] for row in (*ROWS, *LITERT_ROWS)
                      if row in seconds and row != "pytorch")
        print(f"ratio_ort={fastest / seconds['onnxruntime']:.3f}")
    if {"openvino", "onnxruntime"} <= set(seconds):
        print(f"ratio_openvino={seconds['openvino'] / seconds['onnxruntime']:.3f}")
    if {"litert_int8", "onnxruntime"} <= set(seconds):
        print(f"ratio_int8={seconds['litert_int8'] / seconds['onnxruntime']:.3f}")
    if {"exported_bf16", "pytorch_bf16"} <= set(seconds):
        print(f"ratio_bf16={seconds['exported_bf16'] / seconds['pytorch_bf16']:.3f}")
    if {"exported", "onnxruntime"} <= set(seconds):
        print(f"ratio_exported_ort={seconds['exported'] / seconds['onnxruntime']:.3f}")


if __name__ == "__main__":
    main()
