"""ONNX export through tf2onnx: one .onnx file for ONNX Runtime and other ONNX runtimes."""

import keras

from pspnet_tf.errors import ParameterError
from pspnet_tf.atomic import write_atomically
from pspnet_tf.inference.segmentation_graph import segmentation_function

OPSET = 17  # ONNX Runtime >= 1.13; Resize with half-pixel coordinates, ArgMax int64


def export_onnx(model: keras.Model, scale: tuple[int, int], output: str,
                input_size: tuple[int, int] | None = None) -> None:
    """Writes `segmentation_function(model, scale, input_size)` as ONNX to `output`.

    Without `input_size` the file takes any height and width (dynamic axes).
    """
    try:
        import tf2onnx
    except ImportError:
        raise ParameterError("{format}=onnx needs tf2onnx and onnx: pip install tf2onnx "
                             "onnx (the project's [deploy] extra)") from None
    function = segmentation_function(model, scale, input_size).segment
    proto, _ = tf2onnx.convert.from_function(function, input_signature=function.input_signature,
                                            opset=OPSET)

    def write(path: str) -> None:
        with open(path, "wb") as file:
            file.write(proto.SerializeToString())

    write_atomically(output, write)
