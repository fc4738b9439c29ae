"""Evaluates trained weights: `python evaluate.py` = `pspnet-evaluate`
(pspnet_tf/cli/evaluate.py); see --help."""

from pspnet_tf_launch import evaluate

if __name__ == "__main__":
    evaluate()
