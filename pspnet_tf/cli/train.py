"""Trains PSPNet: `python train.py --flagfile=configs/voc_r50.cfg`.

Rerunning the same command resumes from the last checkpoint in --run_dir.
"""

from pspnet_tf import cli
from pspnet_tf.config import config_from_flags, define_flags
from pspnet_tf.training.trainer import train

define_flags()


def main(argv: list[str]) -> None:
    train(config_from_flags())


def run() -> None:
    """The `pspnet-train` command."""
    cli.run(main)


if __name__ == "__main__":
    run()
