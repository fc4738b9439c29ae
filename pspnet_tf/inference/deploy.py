"""Export in one of four formats: a TF Serving SavedModel folder, one LiteRT or ONNX file, or
an OpenVINO IR (.xml and .bin) (the single-file graph of inference/segmentation_graph.py), each
checked before any work.
"""

import os
from collections.abc import Iterable

import keras
import numpy as np

from pspnet_tf.atomic import check_can_create, remove_stale_temporaries
from pspnet_tf.errors import ParameterError

FORMATS = ("saved_model", "litert", "onnx", "openvino")
SUFFIXES = {"litert": ".tflite", "onnx": ".onnx", "openvino": ".xml"}
QUANTIZATIONS = ("float16", "dynamic_int8", "int8")


def check_new_file(path: str | None, parameter: str, suffix: str) -> str:
    """`path` (the argument `parameter`), refused (before any work) if missing, existing,
    with the wrong suffix, or in a folder where it cannot be created."""
    named = "{%s}" % parameter
    if not path:
        raise ParameterError(f"{named} is required: pass the file to write, e.g. "
                             f"{named}=model{{suffix}}", suffix=suffix)
    if not path.endswith(suffix):
        raise ParameterError(f"{named}={{path}} must end with {{suffix}}", path=path,
                             suffix=suffix)
    if os.path.exists(path):
        raise ParameterError(f"{named}={{path}} already exists; pass a new file name (the "
                             "existing file was left as it is)", path=path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ParameterError(f"the folder of {named}={{path}} does not exist; create it first",
                             path=path)
    remove_stale_temporaries(folder)  # of an export killed half-way
    check_can_create(path)  # read-only, no permission, name too long: before the conversion
    return path


def export_model(model: keras.Model, scale: tuple[int, int], format: str = "saved_model", *,
                 export_dir: str | None = None, version: int | None = None,
                 with_probabilities: bool = False, with_confidence: bool = False,
                 confidence_threshold: float = 0.0, jit_compile: bool = False,
                 winograd: bool | None = None,
                 output: str | None = None, input_size: tuple[int, int] | None = None,
                 quantize: str | None = None, precision: str | None = None,
                 calibration_images: Iterable[np.ndarray] | None = None) -> str:
    """Writes `model` (test scale `scale`) in `format` and returns the line export.py prints.

    saved_model: into `export_dir`/`version`/ (default: the next version), optionally with
    `probabilities`, `confidence`, labels 255 below a `confidence_threshold` and an
    XLA-compiled network (`jit_compile`), and the large 3x3 convolutions by Winograd
    (`winograd`; None: `winograd_by_default()` on this host). litert, onnx and
    openvino (whose runtimes have convolution kernels of their own): the new file `output`
    (for openvino the .xml, with its weights in the .bin beside it), for images of
    `input_size` (H, W; required for litert, any size for onnx and openvino without it);
    litert weights `quantize`d to "float16" or "dynamic_int8", or the whole network to
    "int8" with activation ranges calibrated on `calibration_images` (uint8 [H, W, 3] of
    `input_size`, e.g. inference/calibration.py's). `precision` is the one the model was
    built in ("bfloat16" exports as a SavedModel only).
    """
    if format not in FORMATS:
        raise ParameterError("unknown export {format} {value!r}; choose one of {choices}",
                             value=format, choices=", ".join(FORMATS))
    if format != "litert" and quantize:
        raise ParameterError("{quantize} is for {format}=litert only")
    if quantize not in (None, *QUANTIZATIONS):
        raise ParameterError("{quantize}={value} must be one of {choices}", value=quantize,
                             choices=", ".join(QUANTIZATIONS))
    if format == "saved_model":
        from pspnet_tf.inference.export import export_saved_model

        if not export_dir:
            raise ParameterError("{export_dir} is required for {format}=saved_model: pass "
                                 "the model folder TF Serving watches")
        path = export_saved_model(model, scale, export_dir, version=version,
                                  with_probabilities=with_probabilities,
                                  with_confidence=with_confidence,
                                  confidence_threshold=confidence_threshold,
                                  jit_compile=jit_compile, winograd=winograd)
        line = (f"SavedModel written to {path} (signatures serving_default, serve_encoded, "
                "serve_png)")
        if jit_compile:
            line += ("; its network is XLA-compiled: TF Serving runs it only if started with "
                     "--xla_cpu_compilation_enabled=true (docs/serving.md)")
        return line
    for parameter, value in (("with_probabilities", with_probabilities),
                             ("with_confidence", with_confidence),
                             ("confidence_threshold", confidence_threshold),
                             ("jit_compile", jit_compile), ("winograd", winograd)):
        if value:
            raise ParameterError(f"{{{parameter}}} is for {{format}}=saved_model only, not "
                                 "{format}={value}", value=format)
    if precision == "bfloat16" and format == "openvino":
        raise ParameterError("{precision}=bfloat16 is for {format}=saved_model only: "
                             "OpenVINO's runtime runs the float32 IR in bfloat16 when "
                             "INFERENCE_PRECISION_HINT asks (its default on CPUs with AMX)")
    if precision == "bfloat16":
        raise ParameterError("{precision}=bfloat16 is for {format}=saved_model only: the "
                             "{value} runtime has no bfloat16 kernels for this network"
                             + (" (use {quantize}=float16 for half-size weights)"
                                if format == "litert" else ""), value=format)
    output = check_new_file(output, "output", SUFFIXES[format])
    if format == "litert":
        from pspnet_tf.inference.export_litert import export_litert

        if input_size is None:
            raise ParameterError("{input_size}=(HEIGHT, WIDTH) is required for "
                                 "{format}=litert (LiteRT runs a graph of fixed size)")
        export_litert(model, scale, output, input_size, quantize, calibration_images)
    elif format == "openvino":
        from pspnet_tf.inference.export_openvino import export_openvino, weights_file

        export_openvino(model, scale, output, input_size)
        output = f"{output} and {weights_file(output)}"
    else:
        from pspnet_tf.inference.export_onnx import export_onnx

        export_onnx(model, scale, output, input_size)
    size = "x".join(map(str, input_size)) if input_size else "any HxW"
    return (f"{format} model written to {output} (input images uint8 [1, {size}, 3], "
            "output segmentation int32)")
