"""The single-file deployment graph (LiteRT, ONNX) and the export flags' dispatch.

The graph keeps the serving contract of `serving_default`: input `images`, uint8
[1, H, W, 3] RGB; output `segmentation`, int32 [1, H, W]; keep-ratio resize to the test
scale, normalisation, the network (BatchNorms folded), logits resized back to the input size
and argmax inside. For a fixed input size every size is computed here in Python, so the
graph holds no float64 size arithmetic (which LiteRT has no builtin kernels for) and every
shape in it is static; the LiteRT converter then turns the einsums of the pyramid layers into
fully-connected and batch-matmul ops. (Frozen, the network alone also converts with unknown
H, W and ran within 6.6e-7 of Keras on the tiny test model, so the layers need no second
formulation.)
"""

import os
from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf
from absl import flags

from pspnet_tf.atomic import check_can_create, remove_stale_temporaries
from pspnet_tf.data.transforms import keep_ratio_size
from pspnet_tf.errors import UserError
from pspnet_tf.inference.predictor import (
    logits_at_size,
    network_logits,
    normalized_at_size,
    preprocess,
)
from pspnet_tf.models.folding import fold_batchnorm

FORMATS = ("saved_model", "litert", "onnx")
SUFFIXES = {"litert": ".tflite", "onnx": ".onnx"}


def _static_network_size(input_size: tuple[int, int], scale: tuple[int, int]) -> tuple[int, int]:
    """The keep-ratio size `preprocess` computes for `input_size`, as Python ints."""
    height, width = keep_ratio_size(input_size[0], input_size[1], tuple(scale))
    return int(height), int(width)


def segmentation_function(model: keras.Model, scale: tuple[int, int],
                          input_size: tuple[int, int] | None = None) -> tf.Module:
    """A module whose tf.function `segment` maps `images` uint8 [1, H, W, 3] to
    {"segmentation": int32 [1, H, W]}.

    With `input_size` (H, W) the graph is built for that size only, with static shapes;
    without it H and W are dynamic. The pixels are cast to float32 before the resize (the
    same values the uint8 kernel gives; converters have no uint8 bilinear resize), and the
    labels come from one resize of the logits to the input size (the LiteRT and ONNX op sets
    have no TensorArray loop for `labels_at_size`'s bands, so memory grows with
    H * W * classes as in evaluate.py's `logits`).
    """
    network = fold_batchnorm(model)
    height, width = input_size if input_size else (None, None)
    # Computed here, eagerly: the graph gets Python ints, not float64 size arithmetic.
    network_size = _static_network_size(input_size, scale) if input_size else None
    spec = tf.TensorSpec([1, height, width, 3], tf.uint8, name="images")

    @tf.function(input_signature=[spec])
    def segment(images: tf.Tensor) -> dict[str, tf.Tensor]:
        pixels = tf.cast(images, tf.float32)
        if input_size:
            inputs = normalized_at_size(pixels, network_size)
            size = tf.constant(input_size, tf.int32)
        else:
            inputs = preprocess(pixels, tuple(scale))
            size = tf.shape(images)[1:3]
        logits = logits_at_size(network_logits(network, inputs), size)
        return {"segmentation": tf.argmax(logits, axis=-1, output_type=tf.int32)}

    module = tf.Module()
    module.network, module.segment = network, segment  # the converters find the weights here
    return module


def check_new_file(path: str | None, flag: str, suffix: str) -> str:
    """`path`, refused (before any work) if missing, existing, with the wrong suffix, or in a
    folder where it cannot be created."""
    if not path:
        raise UserError(f"{flag} is required: pass the file to write, e.g. {flag}=model{suffix}")
    if not path.endswith(suffix):
        raise UserError(f"{flag}={path} must end with {suffix}")
    if os.path.exists(path):
        raise UserError(f"{flag}={path} already exists; pass a new file name (the existing "
                        "file was left as it is)")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UserError(f"the folder of {flag}={path} does not exist; create it first")
    remove_stale_temporaries(folder)  # of an export killed half-way
    check_can_create(path)  # read-only, no permission, name too long: before the conversion
    return path


def parse_input_size(values: Sequence[str] | None) -> tuple[int, int] | None:
    """--input_size=H,W as (H, W) of positive ints, or None when not given."""
    if not values:
        return None
    try:
        size = tuple(int(value) for value in values)
    except ValueError:
        size = ()
    if len(size) != 2 or min(size) < 1:
        raise UserError(f"--input_size={','.join(values)} must be two positive integers "
                        "HEIGHT,WIDTH, e.g. --input_size=512,512")
    return size


def define_export_flags() -> None:
    """The flags export.py adds for formats beyond the SavedModel."""
    flags.DEFINE_enum("format", "saved_model", FORMATS, "saved_model: a TF Serving model "
                      "folder (--export_dir); litert: one .tflite file (--output, "
                      "--input_size); onnx: one .onnx file (--output).")
    flags.DEFINE_string("output", None, "The .tflite or .onnx file to write (--format=litert "
                        "or onnx); never overwritten.")
    flags.DEFINE_list("input_size", None, "HEIGHT,WIDTH of the images the file accepts "
                      "(required for litert; onnx accepts any size without it).")
    flags.DEFINE_enum("quantize", None, ["float16", "dynamic_int8"], "LiteRT weight "
                      "quantization: float16 weights, or int8 weights with dynamic-range "
                      "int8 kernels (default: float32).")


def export_from_flags(model: keras.Model, scale: tuple[int, int], values: Any) -> str:
    """Writes the model in `values.format` and returns the line export.py prints."""
    if values.format != "litert" and values.quantize:
        raise UserError("--quantize is for --format=litert only")
    if values.format == "saved_model":
        from pspnet_tf.inference.export import export_saved_model

        if not values.export_dir:
            raise UserError("--export_dir is required for --format=saved_model: pass the "
                            "model folder TF Serving watches")
        path = export_saved_model(model, scale, values.export_dir, version=values.version,
                                  with_probabilities=values.with_probabilities,
                                  jit_compile=getattr(values, "jit_compile", False))
        return f"SavedModel written to {path} (signatures serving_default, serve_encoded)"
    for flag in ("with_probabilities", "jit_compile"):
        if getattr(values, flag, False):
            raise UserError(f"--{flag} is for --format=saved_model only, not "
                            f"--format={values.format}")
    if getattr(values, "precision", None) == "bfloat16":
        raise UserError(f"--precision=bfloat16 is for --format=saved_model only: the "
                        f"{values.format} runtime has no bfloat16 kernels for this network"
                        + (" (use --quantize=float16 for half-size weights)"
                           if values.format == "litert" else ""))
    output = check_new_file(values.output, "--output", SUFFIXES[values.format])
    input_size = parse_input_size(values.input_size)
    if values.format == "litert":
        from pspnet_tf.inference.export_litert import export_litert

        if input_size is None:
            raise UserError("--input_size=HEIGHT,WIDTH is required for --format=litert "
                            "(LiteRT runs a graph of fixed size)")
        export_litert(model, scale, output, input_size, values.quantize)
    else:
        from pspnet_tf.inference.export_onnx import export_onnx

        export_onnx(model, scale, output, input_size)
    size = "x".join(map(str, input_size)) if input_size else "any HxW"
    return (f"{values.format} model written to {output} (input images uint8 [1, {size}, 3], "
            "output segmentation int32)")
