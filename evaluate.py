"""Evaluates trained weights: `python evaluate.py` = `pspnet-evaluate`
(pspnet_tf/cli/evaluate.py); see --help."""

from pspnet_tf.cli.evaluate import run

if __name__ == "__main__":
    run()
