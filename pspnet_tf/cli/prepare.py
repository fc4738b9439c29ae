"""One-time conversions of downloaded datasets into the layouts the readers use.

`pspnet-prepare voc_aug --voc_root=... --sbd_root=...` writes the VOC "trainaug" labels and split; `... cityscapes
--data_root=...` writes trainId labels; `... tfrecord --flagfile=configs/X.cfg --output=DIR`
writes TFRecord shards of the splits; `... folder_masks --data_root=my_data --output=NEW
--mask_fix=binary|colours|reduce_zero_label` writes a copy of a folder dataset with fixed
masks into a new folder. They only add files: originals are never touched, label files
already written are kept (so an interrupted run can simply be repeated; folder_masks instead
refuses a non-empty --output), and a different existing split file or shard index is an
error.
"""

import functools
import sys

from absl import flags

from pspnet_tf.cli import app
from pspnet_tf.cli.flag_groups import define
from pspnet_tf.config import config_from_flags, define_flags
from pspnet_tf.data.datasets import get_dataset
from pspnet_tf.data.preparation import (
    MASK_FIXES,
    prepare_cityscapes,
    prepare_folder_masks,
    prepare_voc_aug,
)
from pspnet_tf.data.tfrecord import DEFAULT_SAMPLES_PER_SHARD, write_shards
from pspnet_tf.errors import UserError

COMMANDS = ("voc_aug", "cityscapes", "tfrecord", "folder_masks")


def _define_flags() -> None:
    define_flags()  # --dataset, --data_root, the splits, as in the training flagfiles
    define("data", flags.DEFINE_string, "voc_root", None,
           "voc_aug: the VOCdevkit/VOC2012 folder.")
    define("data", flags.DEFINE_string, "sbd_root", None,
           "voc_aug: the extracted SBD benchmark_RELEASE folder.")
    define("data", flags.DEFINE_list, "splits", [],
           "tfrecord: splits to write (default: --train_split and --val_split).")
    define("output", flags.DEFINE_string, "output", None, "tfrecord: folder for the shards "
           "(then pass it to train.py as --tfrecord_dir); folder_masks: the NEW folder for the "
           "fixed dataset.")
    define("data", flags.DEFINE_enum, "mask_fix", None, list(MASK_FIXES),
           "folder_masks: binary (255 -> 1 for 0/255 binary masks), colours (RGB colours -> "
           "ids through classes.txt's colours) or reduce_zero_label (0 -> 255, k -> k-1).")
    define("output", flags.DEFINE_integer, "samples_per_shard", DEFAULT_SAMPLES_PER_SHARD,
           "tfrecord: samples per shard file.", lower_bound=1)


def _required(name: str, command: str) -> str:
    value = getattr(flags.FLAGS, name)
    if not value:
        raise UserError(f"{command} needs --{name}; see pspnet-prepare --help")
    return value


def _write_tfrecords(output: str) -> None:
    data = config_from_flags().data
    splits = flags.FLAGS.splits or list(dict.fromkeys([data.train_split, data.val_split]))
    for split in splits:  # check every split before writing any
        get_dataset(data.dataset, data.data_root, split)
    for split in splits:
        shards = write_shards(get_dataset(data.dataset, data.data_root, split), output,
                              flags.FLAGS.samples_per_shard)
        print(f"tfrecord: split {split} written to {len(shards)} shards in {output}")


def _main(command: str | None, argv: list[str]) -> None:
    if command == "tfrecord":
        _write_tfrecords(_required("output", command))
        return
    if command == "voc_aug":
        counts = prepare_voc_aug(_required("voc_root", command), _required("sbd_root", command))
    elif command == "folder_masks":
        counts = prepare_folder_masks(flags.FLAGS.data_root, _required("output", command),
                                      _required("mask_fix", command))
    elif command == "cityscapes":
        counts = prepare_cityscapes(flags.FLAGS.data_root)
    else:
        raise UserError(f"name a command first: pspnet-prepare "
                        f"{{{','.join(COMMANDS)}}} --flags (got {command or 'none'})")
    print(f"{command}: {counts['images']} images, {counts['written']} label files written, "
          f"{counts['kept']} already there")


def run() -> None:
    """The `pspnet-prepare` command."""
    _define_flags()
    # The command is the first argument; absl only sees the flags after it.
    chosen = sys.argv.pop(1) if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else None
    app.run(functools.partial(_main, chosen))

