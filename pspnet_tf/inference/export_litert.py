"""LiteRT (TensorFlow Lite) export: one .tflite file on the builtin op set, no Flex ops."""

import warnings
from collections.abc import Iterable, Iterator

import keras
import numpy as np
import tensorflow as tf

from pspnet_tf.compat import convert_variables_to_constants_v2
from pspnet_tf.atomic import write_atomically
from pspnet_tf.errors import ParameterError
from pspnet_tf.inference.segmentation_graph import segmentation_function


def _frozen(module: tf.Module) -> tf.Module:
    """`module.segment` with the weights as constants.

    TensorFlow 2.21's converter keeps Keras 3 weights as resource variables and writes no
    initial values for them: the .tflite came out at 74 KB for an 11M-parameter model and
    ran on zeros. Frozen first, the weights are stored in the file.
    """
    frozen = convert_variables_to_constants_v2(module.segment.get_concrete_function())
    wrapper = tf.Module()
    wrapper.segment = tf.function(lambda images: {"segmentation": frozen(images)[0]},
                                  input_signature=module.segment.input_signature)
    return wrapper


def _calibration_batches(images: Iterable[np.ndarray], input_size: tuple[int, int]
                         ) -> Iterator[dict[str, np.ndarray]]:
    """The converter's representative dataset: each of `images` (uint8 [H, W, 3] at
    `input_size`) as the graph's input, a batch of one; ParameterError for none or a wrong
    size (before the converter would fail on it with a message of its own)."""
    count = 0
    for image in images:
        if image.shape != (*input_size, 3) or image.dtype != np.uint8:
            raise ParameterError("{calibration_images} must be uint8 [{height}, {width}, 3] "
                                 "images (the input_size), got {dtype} {shape}",
                                 height=input_size[0], width=input_size[1],
                                 dtype=image.dtype, shape=list(image.shape))
        count += 1
        yield {"images": image[None]}
    if not count:
        raise ParameterError("{calibration_images} holds no images; quantize=int8 needs at "
                             "least one to calibrate the activations")


def litert_bytes(model: keras.Model, scale: tuple[int, int], input_size: tuple[int, int],
                 quantize: str | None = None,
                 calibration_images: Iterable[np.ndarray] | None = None) -> bytes:
    """The .tflite flatbuffer of `segmentation_function(model, scale, input_size)`.

    `quantize`: None (float32), "float16" (float16 weights, dequantized at load: half the
    file), "dynamic_int8" (int8 weights and dynamic-range int8 kernels: a quarter) or "int8"
    (full-integer post-training quantisation: int8 weights and activations, per-channel
    convolution weights, activation ranges calibrated on `calibration_images`, uint8
    [H, W, 3] images of `input_size` read once). The int8 graph keeps its uint8 input and
    int32 output: the input is cast and quantised inside, and the argmax reads the int8
    logits resized to the input size.
    """
    if (quantize == "int8") != (calibration_images is not None):
        raise ParameterError("{calibration_images} go with {quantize}=int8 and only with it")
    module = _frozen(segmentation_function(model, scale, input_size))
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.segment.get_concrete_function()], module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        # LiteRT's int8 op set only: int8 weights and activations in every op that has an
        # int8 kernel; the converter keeps the preprocessor's ROUND and MINIMUM (no int8
        # kernels) in float32 between a DEQUANTIZE and a QUANTIZE.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.representative_dataset = lambda: _calibration_batches(calibration_images,
                                                                        input_size)
    with warnings.catch_warnings():
        # The calibration runs on tf.lite.Interpreter, which warns of its own deprecation.
        warnings.filterwarnings("ignore", ".*tf.lite.Interpreter is deprecated", UserWarning)
        return converter.convert()


def export_litert(model: keras.Model, scale: tuple[int, int], output: str,
                  input_size: tuple[int, int], quantize: str | None = None,
                  calibration_images: Iterable[np.ndarray] | None = None) -> None:
    """Writes `litert_bytes(...)` to `output` atomically."""
    data = litert_bytes(model, scale, input_size, quantize, calibration_images)

    def write(path: str) -> None:
        with open(path, "wb") as file:
            file.write(data)

    write_atomically(output, write)
