"""Evaluates trained weights on the validation split (whole image, slide or multi-scale).

`python evaluate.py --flagfile=configs/voc_r50.cfg --weights=runs/voc_r50/final_weights.h5`
prints the per-class IoU table, mIoU, aAcc and mAcc, and writes them as JSON (with
per-class precision, recall, F1, Dice and the confusion matrix); beside it a report folder
(<metrics>.report/: confusion-matrix CSVs, per_class.csv, a confusion-matrix heatmap and a
per-class IoU bar chart, report.md with the --worst_images images of lowest mIoU);
`--mode=slide|multiscale` picks another protocol and `--save_predictions=DIR` keeps the
predicted label maps.

Exit status: 0 when the split was evaluated; 2 for a problem to fix in the command, the
model or the data (one `error: ...` line says which); 4 for a fault of the machine (a full
disk, a read-only or unwritable folder, a path too long), with one `error: ...` line naming
the path and what to do.
"""

import os

from absl import flags

from pspnet_tf.cli import app
from pspnet_tf.cli.flag_groups import define
from pspnet_tf.cli.inference_flags import (
    define_prediction_command_flags,
    model_from_flags,
    predictor_from_flags,
)
from pspnet_tf.config import config_from_flags
from pspnet_tf.data.splits import load_split
from pspnet_tf.errors import UserError
from pspnet_tf.atomic import check_can_create, prepare_folder
from pspnet_tf.evaluation.evaluator import evaluate
from pspnet_tf.evaluation.report import REPORT_MD, WorstImages, write_report
from pspnet_tf.evaluation.tables import format_table, write_json
from pspnet_tf.inference.outputs import PredictionWriter

define_prediction_command_flags()
define("output", flags.DEFINE_string, "output", None, "Where to write the metrics JSON "
       "(default: next to --weights or --model as <weights>.<val_split>.metrics.json, or "
       "<weights>.<val_split>.<mode>.metrics.json for --mode=slide|multiscale).")
define("output", flags.DEFINE_string, "save_predictions", None, "New or empty folder for the "
       "predicted label maps as palette PNGs (Cityscapes: also labelIds PNGs for the official "
       "scripts, in <folder>/cityscapes_labelIds).")
define("output", flags.DEFINE_string, "report_dir", None, "New or empty folder for the "
       "evaluation report: confusion_matrix.csv (counts), confusion_matrix_normalized.csv, "
       "per_class.csv, confusion_matrix.png, per_class_iou.png (the plots need "
       "`pip install 'pspnet-tf[report]'`), report.md and worst/ (default: the --output "
       "path with .report instead of .metrics.json; '' writes no report).")
define("output", flags.DEFINE_integer, "worst_images", 8, "How many images of lowest mIoU "
       "report.md shows as image | ground truth | prediction.", lower_bound=0)


def _writable_output(path: str) -> str:
    """`path`, once its folder exists (created if need be) and can be written: checked before
    the evaluation, which may take hours, rather than when the metrics are written."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create the folder of --output={path} "
                        f"({error.strerror or error}); pass another --output") from None
    if os.path.isdir(path) or not os.access(folder, os.W_OK):
        reason = "it is a folder" if os.path.isdir(path) else f"{folder} is not writable"
        raise UserError(f"the metrics cannot be written to {path} ({reason}); pass a "
                        "writable file path as --output")
    return path


def _report_folder(folder: str) -> str:
    """`folder`, created if need be, once it is known to hold nothing (an earlier report is
    never replaced) and to be writable: checked before the evaluation."""
    if os.path.isdir(folder) and os.listdir(folder):
        raise UserError(f"--report_dir={folder} is not empty (an earlier report?); pass a new "
                        "or empty --report_dir, or --report_dir='' for no report (nothing was "
                        "written)")
    prepare_folder(folder, f"--report_dir={folder}")
    check_can_create(os.path.join(folder, REPORT_MD))
    return folder


def main(argv: list[str]) -> None:
    loaded = model_from_flags(config_from_flags())
    config = loaded.config
    mode = "" if flags.FLAGS.mode == "whole" else f".{flags.FLAGS.mode}"
    source = flags.FLAGS.weights or flags.FLAGS.model
    output = _writable_output(flags.FLAGS.output
                              or f"{source}.{config.data.val_split}{mode}.metrics.json")
    report_dir = flags.FLAGS.report_dir
    if report_dir is None:
        report_dir = output.removesuffix(".json").removesuffix(".metrics") + ".report"
    report_dir = _report_folder(report_dir) if report_dir else ""
    dataset = load_split(config, config.data.val_split)
    save = flags.FLAGS.save_predictions
    worst = WorstImages(flags.FLAGS.worst_images if report_dir else 0, dataset.num_classes)
    callbacks = [worst, *([PredictionWriter(dataset, save)] if save else [])]

    def on_sample(*sample) -> None:
        for callback in callbacks:
            callback(*sample)

    predictor = predictor_from_flags(loaded.model, config.data.scale, config.runtime)
    summary = evaluate(predictor, dataset, on_sample=on_sample)
    print(format_table(summary))
    write_json(summary, output)
    print(f"metrics written to {output}")
    if report_dir:
        title = f"{os.path.basename(source)} on {config.data.val_split} ({flags.FLAGS.mode})"
        write_report(summary, report_dir, title, exclusive=True, worst=worst.worst(),
                     num_worst=flags.FLAGS.worst_images,
                     image_names=[sample.image_path for sample in dataset.samples],
                     palette=dataset.palette)
        print(f"report written to {os.path.join(report_dir, REPORT_MD)}")


def run() -> None:
    """The `pspnet-evaluate` command."""
    app.run(main)

