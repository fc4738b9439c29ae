"""Exports trained weights as a SavedModel that TF Serving runs as is, or as one LiteRT or
ONNX file or an OpenVINO IR.

`python export.py --flagfile=configs/voc_r50.cfg --weights=runs/voc_r50/final_weights.h5
--export_dir=exported/voc_r50` writes exported/voc_r50/<version>/ with the signatures
`serving_default` (uint8 pixels), `serve_encoded` (JPEG/PNG bytes) and `serve_png` (PNG
label maps) and TF Serving warm-up requests; `--format=litert
--input_size=512,512 --output=voc_r50.tflite` or `--format=onnx --output=voc_r50.onnx` write
one file with serving_default's contract (`--format=openvino --output=voc_r50.xml`: the
.xml and its weights voc_r50.bin); see docs/deployment.md (the formats) and
docs/serving.md (TF Serving).

Exit status: 0 when the export was written; 2 for a problem to fix in the command or the
model (one `error: ...` line says which); 4 for a fault of the machine (a full disk, a
read-only or unwritable destination, a path too long), with one `error: ...` line naming
the path and what to do; the destination is checked before the conversion starts, and a
failed export leaves no partial files.
"""

from absl import flags, logging

from absl import flags, logging

from pspnet_tf.cli import app
from pspnet_tf.cli.flag_groups import define
from pspnet_tf.cli.inference_flags import (
    define_confidence_threshold_flag,
    define_export_flags,
    define_model_flags,
    define_precision_flag,
    export_from_flags,
    model_from_flags,
)
from pspnet_tf.config import config_from_flags, define_flags

define_flags()
define_model_flags()
define_export_flags()
define_precision_flag()
define_confidence_threshold_flag()
define("output", flags.DEFINE_string, "export_dir", None, "Model folder that TF Serving "
       "watches; the SavedModel goes into its <version>/ subfolder (--format=saved_model).")
define("output", flags.DEFINE_integer, "version", None, "Version subfolder to write (default: "
       "one more than the largest existing version, 1 for a new folder); never overwritten.")
define("output", flags.DEFINE_boolean, "with_probabilities", False, "Also output "
       "`probabilities`, the per-class softmax at the input size (float32 [batch, H, W, "
       "num_classes]).")
define("output", flags.DEFINE_boolean, "with_confidence", False, "Also output `confidence`, "
       "the top class's probability at the input size (float32 [batch, H, W]).")


def main(argv: list[str]) -> None:
    # Keeps the dozen INFO lines TensorFlow's SavedModel writer logs per export off the screen.
    logging.set_verbosity(logging.WARNING)
    print(export_from_flags(model_from_flags(config_from_flags())))


def run() -> None:
    """The `pspnet-export` command."""
    app.run(main)

