"""LiteRT (TensorFlow Lite) export: one .tflite file on the builtin op set, no Flex ops."""

import keras
import tensorflow as tf

from pspnet_tf.compat import convert_variables_to_constants_v2
from pspnet_tf.atomic import write_atomically
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


def litert_bytes(model: keras.Model, scale: tuple[int, int], input_size: tuple[int, int],
                 quantize: str | None = None) -> bytes:
    """The .tflite flatbuffer of `segmentation_function(model, scale, input_size)`.

    `quantize`: None (float32), "float16" (float16 weights, dequantized at load: half the
    file) or "dynamic_int8" (int8 weights and dynamic-range int8 kernels: a quarter).
    """
    module = _frozen(segmentation_function(model, scale, input_size))
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.segment.get_concrete_function()], module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def export_litert(model: keras.Model, scale: tuple[int, int], output: str,
                  input_size: tuple[int, int], quantize: str | None = None) -> None:
    """Writes `litert_bytes(...)` to `output` atomically."""
    data = litert_bytes(model, scale, input_size, quantize)

    def write(path: str) -> None:
        with open(path, "wb") as file:
            file.write(data)

    write_atomically(output, write)
