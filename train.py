"""Trains PSPNet: `python train.py` = `pspnet-train` (pspnet_tf/cli/train.py); see --help."""

from pspnet_tf.cli.train import run

if __name__ == "__main__":
    run()
