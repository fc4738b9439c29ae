"""Converts PyTorch checkpoints into pspnet_tf weights (.h5, by layer name).

  pspnet-convert --source=mmseg --checkpoint=CKPT.pth \\
      --flagfile=configs/cityscapes_r50.cfg --output=OUT.h5
  pspnet-convert --source=resnet_v1c --checkpoint=resnet50_v1c.pth \\
      --backbone=resnet50_v1c --output=resnet50_v1c.h5

--checkpoint may be a URL (downloaded once into $PSPNET_TF_CACHE, default
$KERAS_HOME/pspnet_tf or ~/.keras/pspnet_tf; reads time out after
$PSPNET_TF_DOWNLOAD_TIMEOUT seconds, default 60, and are retried, resuming).
PyTorch is not needed (pspnet_tf.torch_io reads the file). Also
`python -m pspnet_tf.convert`.
"""

import time

from absl import flags

from pspnet_tf.cli import app
from pspnet_tf.cli.flag_groups import define
from pspnet_tf.config import config_from_flags, define_flags
from pspnet_tf.convert.converter import convert_checkpoint
from pspnet_tf.models.torch_weights import SOURCES
from pspnet_tf.models.factory import build_model

define_flags()
define("model", flags.DEFINE_enum, "source", None, SOURCES, "mmseg: a full mmsegmentation "
       "PSPNet checkpoint; resnet_v1c: an open-mmlab ImageNet ResNetV1c checkpoint (backbone "
       "only).")
define("model", flags.DEFINE_string, "checkpoint", None,
       "PyTorch checkpoint (.pth): a path or a URL.")
define("output", flags.DEFINE_string, "output", None,
       "Weights file to write (.h5); an existing file is refused.")
define("model", flags.DEFINE_bool, "allow_missing_classifier", False, "Leave out the "
       "classifiers (conv_seg, aux_conv_seg) when the checkpoint lacks them or has another "
       "class count, to fine-tune with train.py --pretrained.")
flags.mark_flags_as_required(["source", "checkpoint", "output"])


def main(argv: list[str]) -> None:
    values = flags.FLAGS
    start = time.perf_counter()
    model = build_model(config_from_flags(), training_heads=True)
    layers = convert_checkpoint(model, values.checkpoint, values.source, values.output,
                                values.allow_missing_classifier)
    print(f"converted {len(layers)} layers of {model.name} in "
          f"{time.perf_counter() - start:.1f} s: {values.output}")


def run() -> None:
    """The `pspnet-convert` command."""
    app.run(main)

