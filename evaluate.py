"""Evaluates trained weights on the validation split with the whole-image protocol.

`python evaluate.py --flagfile=configs/voc_r50.cfg --weights=runs/voc_r50/final_weights.h5`
prints the per-class IoU table, mIoU, aAcc and mAcc, and writes them as JSON.
"""

from absl import flags

from pspnet_tf import cli
from pspnet_tf.config import config_from_flags, define_flags
from pspnet_tf.inference.predictor import Predictor
from pspnet_tf.models import load_weights
from pspnet_tf.training.callbacks import write_json
from pspnet_tf.training.evaluator import evaluate
from pspnet_tf.training.metrics import format_table
from pspnet_tf.training.trainer import build_model, load_split

define_flags()
flags.DEFINE_string("weights", None, "Weights file (.h5) written by train.py or the converter.")
flags.DEFINE_string("output", None, "Where to write the metrics JSON (default: next to "
                    "--weights as <weights>.<val_split>.metrics.json).")
flags.mark_flag_as_required("weights")


def main(argv: list[str]) -> None:
    config = config_from_flags()
    dataset = load_split(config, config.val_split)
    model = build_model(config, training_heads=False)
    load_weights(model, flags.FLAGS.weights)
    summary = evaluate(Predictor(model, config.scale), dataset)
    print(format_table(summary))
    output = flags.FLAGS.output or f"{flags.FLAGS.weights}.{config.val_split}.metrics.json"
    write_json(summary, output)
    print(f"metrics written to {output}")


if __name__ == "__main__":
    cli.run(main)
