"""Exports trained weights as a SavedModel that TF Serving runs as is.

`python export.py --flagfile=configs/voc_r50.cfg --weights=runs/voc_r50/final_weights.h5
--export_dir=exported/voc_r50` writes exported/voc_r50/<version>/ with the signatures
`serving_default` (uint8 pixels) and `serve_encoded` (JPEG/PNG bytes); see README
"Export and serving".
"""

from absl import flags, logging

from pspnet_tf import cli
from pspnet_tf.config import config_from_flags, define_flags
from pspnet_tf.inference.export import export_saved_model
from pspnet_tf.inference.loading import define_model_flags, model_from_flags

define_flags()
define_model_flags()
flags.DEFINE_string("export_dir", None, "Model folder that TF Serving watches; the SavedModel "
                    "goes into its <version>/ subfolder.")
flags.DEFINE_integer("version", None, "Version subfolder to write (default: one more than the "
                     "largest existing version, 1 for a new folder); never overwritten.")
flags.DEFINE_boolean("with_probabilities", False, "Also output `probabilities`, the per-class "
                     "softmax at the input size (float32 [batch, H, W, num_classes]).")
flags.mark_flag_as_required("export_dir")


def main(argv: list[str]) -> None:
    # Keeps the dozen INFO lines TensorFlow's SavedModel writer logs per export off the screen.
    logging.set_verbosity(logging.WARNING)
    loaded = model_from_flags(config_from_flags())
    path = export_saved_model(loaded.model, loaded.config.scale, flags.FLAGS.export_dir,
                              version=flags.FLAGS.version,
                              with_probabilities=flags.FLAGS.with_probabilities)
    print(f"SavedModel written to {path} (signatures serving_default, serve_encoded)")


def run() -> None:
    """The `pspnet-export` command."""
    cli.run(main)


if __name__ == "__main__":
    run()
