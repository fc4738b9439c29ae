"""OpenVINO export through OpenVINO's TensorFlow converter: an IR of two files, the graph
(`.xml`) and its weights (`.bin` beside it, the name OpenVINO's runtime looks for)."""

import os
import shutil
import tempfile

import keras

from pspnet_tf.atomic import temporary_prefix
from pspnet_tf.errors import ParameterError, environment_faults
from pspnet_tf.inference.segmentation_graph import segmentation_function


def weights_file(output: str) -> str:
    """The `.bin` file that goes with the IR `output` (`.xml`)."""
    return output.removesuffix(".xml") + ".bin"


def export_openvino(model: keras.Model, scale: tuple[int, int], output: str,
                    input_size: tuple[int, int] | None = None) -> None:
    """Writes `segmentation_function(model, scale, input_size)` as an OpenVINO IR: `output`
    (.xml) and `weights_file(output)` (.bin), float32 weights.

    Without `input_size` the IR takes any height and width (dynamic axes). Both files are
    written into a temporary folder beside `output` and renamed, the weights first, so the
    .xml appears only with its complete .bin; a failed write leaves neither.
    """
    weights = weights_file(output)
    if os.path.exists(weights):
        raise ParameterError("the weights file {weights} of {output}={path} already exists "
                             "(left as it is, maybe by an interrupted export); pass a new "
                             "file name or remove it", weights=weights, path=output)
    try:
        import openvino
    except ImportError:
        raise ParameterError("{format}=openvino needs openvino: pip install openvino (the "
                             "project's [deploy] extra)") from None
    function = segmentation_function(model, scale, input_size).segment
    converted = openvino.convert_model(function.get_concrete_function())
    folder = os.path.dirname(os.path.abspath(output))
    with environment_faults(output):
        staging = tempfile.mkdtemp(dir=folder, prefix=temporary_prefix(output))
        try:
            staged = os.path.join(staging, os.path.basename(output))
            # save_model's default compress_to_fp16 would store float16 weights: keep the
            # SavedModel's float32 values, so that the labels are the SavedModel's.
            openvino.save_model(converted, staged, compress_to_fp16=False)
            os.rename(weights_file(staged), weights)
            try:
                os.rename(staged, output)
            except BaseException:
                os.remove(weights)
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
