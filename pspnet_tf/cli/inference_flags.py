"""The flags of evaluate.py, predict.py and export.py and what the library gets from them.

--model / --weights and --precision give `load_inference_model`'s arguments, --mode and its
--crop, --stride, --ratios, --flip `predictor_for`'s, and --format with its --output,
--input_size, --quantize (and --representative_images, the calibration images' count)
`export_model`'s. Malformed values become one UserError naming the flag.
"""

from collections.abc import Sequence
from typing import Any

import keras
from absl import flags

from pspnet_tf.cli.flag_groups import define
from pspnet_tf.config import ExperimentConfig, RuntimeConfig, define_flags, parse_numbers
from pspnet_tf.inference.calibration import calibration_images
from pspnet_tf.inference.deploy import FORMATS, QUANTIZATIONS, export_model
from pspnet_tf.inference.loading import LoadedModel, load_inference_model
from pspnet_tf.inference.modes import (
    DEFAULT_CROP,
    DEFAULT_RATIOS,
    DEFAULT_STRIDE,
    MODES,
    predictor_for,
)
from pspnet_tf.inference.precision import POLICIES
from pspnet_tf.inference.predictor import Predictor

FLAGS = flags.FLAGS


def _texts(values: Sequence[Any]) -> list[str]:
    return [str(value) for value in values]


def define_model_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines --model and --weights (call once, from an entry point)."""
    define("model", flags.DEFINE_string, "model", None, "A .keras model written by train.py "
           "(run_dir/final_model.keras) or model.save, or a published checkpoint name from "
           "pspnet_tf.list_presets() (downloaded and converted once). It brings its "
           "dataset, classes and --scale; flags given override them.", flag_values=flag_values)
    define("model", flags.DEFINE_string, "weights", None, "Instead of --model: a weights file "
           "(.h5) written by train.py or the converter, with the --flagfile that built it.",
           flag_values=flag_values)


def define_precision_flag(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines --precision (call once, from an entry point)."""
    define("runtime", flags.DEFINE_enum, "precision", None, list(POLICIES), "Arithmetic of "
           "the network: float32 or bfloat16 (Keras mixed_bfloat16; float32 logits; emulated "
           "and slower on CPUs without bfloat16 units). Default: that of --mixed_precision.",
           flag_values=flag_values)


def define_mode_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines --mode, --crop, --stride, --ratios and --flip (call once, from an entry point)."""
    group = "evaluation/inference"
    define(group, flags.DEFINE_enum, "mode", "whole", MODES,
           "Inference protocol: whole image at the test scale, slide (windows of --crop every "
           "--stride pixels), or multiscale (--ratios, --flip).", flag_values=flag_values)
    define(group, flags.DEFINE_list, "crop", _texts(DEFAULT_CROP), "Sliding-window size as "
           "HEIGHT,WIDTH (--mode=slide; published: 512,512, Cityscapes 769,769).",
           flag_values=flag_values)
    define(group, flags.DEFINE_list, "stride", _texts(DEFAULT_STRIDE), "Sliding-window step "
           "as HEIGHT,WIDTH (--mode=slide; about 2/3 of --crop, Cityscapes 513,513).",
           flag_values=flag_values)
    define(group, flags.DEFINE_list, "ratios", _texts(DEFAULT_RATIOS), "Multiples of --scale "
           "whose logits are averaged (--mode=multiscale).", flag_values=flag_values)
    define(group, flags.DEFINE_boolean, "flip", True, "Also average horizontally flipped "
           "views (--mode=multiscale).", flag_values=flag_values)


def define_confidence_threshold_flag(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines --confidence_threshold (call once, from an entry point)."""
    define("evaluation/inference", flags.DEFINE_float, "confidence_threshold", 0.0, "Label "
           "pixels whose top class's probability (the softmax of the mean logits at the "
           "image's size) is below this 255, unknown: black in predict.py's pictures, in the "
           "segmentation export.py's SavedModel serves; 0 = off.",
           lower_bound=0.0, upper_bound=1.0, flag_values=flag_values)


def define_prediction_command_flags() -> None:
    """The flags of a command that runs a model over images (evaluate, predict, submit): the
    experiment flags, --mode and its settings, the model and --precision (call once)."""
    define_flags()
    define_mode_flags()
    define_model_flags()
    define_precision_flag()


def define_export_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """The flags export.py adds for formats beyond the SavedModel."""
    define("output", flags.DEFINE_enum, "format", "saved_model", FORMATS, "saved_model: a TF "
           "Serving model folder (--export_dir); litert: one .tflite file (--output, "
           "--input_size); onnx: one .onnx file (--output); openvino: an OpenVINO IR, the .xml "
           "file --output and its .bin beside it.", flag_values=flag_values)
    define("output", flags.DEFINE_string, "output", None, "The .tflite, .onnx or .xml file to "
           "write (--format=litert, onnx or openvino); never overwritten.",
           flag_values=flag_values)
    define("output", flags.DEFINE_list, "input_size", None, "HEIGHT,WIDTH of the images the "
           "file accepts (required for litert; onnx and openvino accept any size without it).",
           flag_values=flag_values)
    define("output", flags.DEFINE_enum, "quantize", None, list(QUANTIZATIONS), "LiteRT "
           "quantization: float16 weights; int8 weights with dynamic-range int8 kernels "
           "(dynamic_int8); or int8 weights and activations, full integer, calibrated on "
           "--representative_images training images (int8). Default: float32.",
           flag_values=flag_values)
    define("output", flags.DEFINE_integer, "representative_images", 100, "--quantize=int8: "
           "how many images of --train_split (evenly spaced over it, resized to "
           "--input_size) calibrate the int8 activation ranges.", lower_bound=1,
           flag_values=flag_values)


def model_from_flags(config: ExperimentConfig, values: flags.FlagValues = FLAGS
                     ) -> LoadedModel:
    """The inference model that --model or --weights names (exactly one of them), at
    --precision where the command defines it; flags given override a model's own settings."""
    precision = values["precision"].value if "precision" in values else None
    given = frozenset(name for name in values if values[name].present)
    return load_inference_model(config, model=values["model"].value,
                                weights=values["weights"].value, precision=precision,
                                overridden=given)


def winograd_choice(runtime: RuntimeConfig) -> bool | None:
    """--winograd as `inference_network` takes it: None for auto."""
    return {"auto": None, "on": True, "off": False}[runtime.winograd]


def predictor_from_flags(model: keras.Model, scale: tuple[int, int], runtime: RuntimeConfig,
                         values: flags.FlagValues = FLAGS) -> Predictor:
    """The Predictor of the parsed --mode and its flags, `runtime`'s --jit_compile and
    --winograd, and --confidence_threshold where the command defines it (UserError for
    malformed values)."""
    mode = values["mode"].value
    options: dict[str, Any] = {}
    if "confidence_threshold" in values:
        options["confidence_threshold"] = values["confidence_threshold"].value
    if mode == "slide":
        options.update(crop=parse_numbers("crop", values["crop"].value, int, 2, DEFAULT_CROP),
                       stride=parse_numbers("stride", values["stride"].value, int, 2,
                                            DEFAULT_STRIDE))
    elif mode == "multiscale":
        options.update(ratios=parse_numbers("ratios", values["ratios"].value, float, None,
                                            (0.5, 1.0, 1.5)),
                       flip=values["flip"].value)
    return predictor_for(model, scale, mode, jit_compile=runtime.jit_compile,
                         winograd=winograd_choice(runtime), **options)


def parse_input_size(values: Sequence[str] | None) -> tuple[int, int] | None:
    """--input_size=H,W as (H, W) of positive ints, or None when not given."""
    return parse_numbers("input_size", values, int, 2, (512, 512)) if values else None


def export_from_flags(loaded: LoadedModel, values: flags.FlagValues = FLAGS) -> str:
    """Writes the loaded model as --format asks and returns the line export.py prints."""
    input_size = parse_input_size(values["input_size"].value)
    calibration = None
    if values["quantize"].value == "int8" and values["format"].value == "litert" and input_size:
        calibration = calibration_images(loaded.config, values["representative_images"].value,
                                         input_size)
    return export_model(loaded.model, loaded.config.data.scale, values["format"].value,
                        export_dir=values["export_dir"].value, version=values["version"].value,
                        with_probabilities=values["with_probabilities"].value,
                        with_confidence=values["with_confidence"].value,
                        confidence_threshold=values["confidence_threshold"].value,
                        jit_compile=loaded.config.runtime.jit_compile,
                        winograd=winograd_choice(loaded.config.runtime),
                        output=values["output"].value,
                        input_size=input_size, quantize=values["quantize"].value,
                        precision=values["precision"].value, calibration_images=calibration)
