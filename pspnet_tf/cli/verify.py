"""Checks a dataset on disk before anyone spends GPU hours on it; never modifies the data.

`pspnet-verify --flagfile=configs/voc_r50.cfg` (or --dataset/--data_root) decodes every listed image and label of the train and
val splits, lists EVERY problem with its file name, prints per-split counts and per-class
pixel frequencies, and exits with status 2 when it found any problem.
"""

from absl import flags

from pspnet_tf.cli import app
from pspnet_tf.cli.flag_groups import define
from pspnet_tf.config import config_from_flags, define_flags
from pspnet_tf.data.verification import format_report, verify
from pspnet_tf.errors import UserError

def _main(argv: list[str]) -> None:
    config = config_from_flags()
    data = config.data
    splits = flags.FLAGS.splits or list(dict.fromkeys([data.train_split, data.val_split]))
    reports = verify(data.dataset, data.data_root, splits, config.model.num_classes,
                     data.reduce_zero_label)
    for report in reports:
        print(format_report(report))
    problems = sum(len(report.problems) for report in reports)
    if problems:
        raise UserError(f"{problems} problems found in {data.dataset} under "
                        f"{data.data_root} (listed above); fix or remove those files")
    print(f"{data.dataset} under {data.data_root}: no problems found")


def run() -> None:
    """The `pspnet-verify` command."""
    define_flags()
    define("data", flags.DEFINE_list, "splits", [],
           "Splits to check (default: --train_split and --val_split).")
    app.run(_main)

