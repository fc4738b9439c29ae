"""Trains PSPNet: `python train.py --flagfile=configs/voc_r50.cfg`.

Rerunning the same command resumes from the last checkpoint in --run_dir.
"""

import os

# TensorFlow turns its oneDNN CPU kernels on by default only on CPUs with AVX-512 VNNI/BF16 or
# AMX. On an AVX2 CPU they made the R-50-D8 training step 1.3x faster, but inference slower
# (README "Performance"), so training asks for them; a value the user set wins. This must
# run before TensorFlow is imported.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from pspnet_tf import cli  # noqa: E402
from pspnet_tf.config import config_from_flags, define_flags  # noqa: E402
from pspnet_tf.training.trainer import train  # noqa: E402

define_flags()


def main(argv: list[str]) -> None:
    train(config_from_flags())


if __name__ == "__main__":
    cli.run(main)
