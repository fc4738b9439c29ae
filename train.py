"""Trains PSPNet: `python train.py` = `pspnet-train` (pspnet_tf/cli/train.py); see --help."""

from pspnet_tf_launch import train

if __name__ == "__main__":
    train()
