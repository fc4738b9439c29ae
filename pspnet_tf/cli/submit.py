"""Writes a test split without labels in its benchmark server's format, plus a zip.

`pspnet-submit --flagfile=configs/cityscapes_r50.cfg --weights=runs/cityscapes_r50/final_weights.h5
--output=submissions/cityscapes` predicts leftImg8bit/test/ into submissions/cityscapes/
(<city>/<city>_<seq>_<frame>_labelIds.png) and submissions/cityscapes.zip; --dataset=ade20k
writes <stem>.png with class index + 1, --dataset=voc palette PNGs in
results/VOC2012/Segmentation/comp6_test_cls/ (docs/inference.md). --mode picks the protocol.

Exit status: 0 when every image was written; 2 for a problem to fix in the command, the model
or the data (one `error: ...` line); 4 for a fault of the machine.
"""

from absl import flags

from pspnet_tf.cli import app
from pspnet_tf.cli.flag_groups import define
from pspnet_tf.cli.inference_flags import (
    define_prediction_command_flags,
    model_from_flags,
    predictor_from_flags,
)
from pspnet_tf.config import config_from_flags
from pspnet_tf.data.descriptors import get_descriptor
from pspnet_tf.errors import UserError
from pspnet_tf.inference.submission import check_submission_folder, write_submission

define_prediction_command_flags()
define("data", flags.DEFINE_string, "split", "test", "The split to predict (its images only; "
       "ADE20K's test images go into <data_root>/images/testing/).")
define("output", flags.DEFINE_string, "output", None, "New or empty folder for the "
       "submission; the zip goes beside it as <output>.zip.")
flags.mark_flags_as_required(["output"])


def main(argv: list[str]) -> None:
    values = flags.FLAGS
    loaded = model_from_flags(config_from_flags())
    config = loaded.config
    descriptor = get_descriptor(config.data.dataset)
    if len(loaded.classes()[0]) != len(descriptor.classes(config.data.data_root)[0]):
        raise UserError(f"the model has {len(loaded.classes()[0])} classes, not the "
                        f"{config.data.dataset} server's; pass a model of that dataset")
    images = [sample.image_path
              for sample in descriptor.list_samples(config.data.data_root, values.split)]
    check_submission_folder(values.output, config.data.dataset, images)
    predictor = predictor_from_flags(loaded.model, config.data.scale, config.runtime)
    written, archive = write_submission(predictor, config.data.dataset, images, values.output)
    print(f"{len(written)} {config.data.dataset} test predictions written to {values.output}, "
          f"zipped as {archive}")


def run() -> None:
    """The `pspnet-submit` command."""
    app.run(main)

