"""Trains PSPNet: `python train.py --flagfile=configs/voc_r50.cfg`.

Rerunning the same command resumes from the last checkpoint in --run_dir.

Exit status: 0 when training finished; 2 for a problem to fix in the command or the data
(one `error: ...` line says which), also when another train.py holds --run_dir's lock;
3 when training diverged (the loss or the weights became NaN or infinite: lower
--learning_rate, or leave mixed_float16; nothing non-finite is saved); 130 (SIGINT) or 143
(SIGTERM): interrupted after checkpointing the step in flight, with one line
`interrupted at step N; ...`.
"""

import os

# TensorFlow turns its oneDNN CPU kernels on by default only on CPUs with AVX-512 VNNI/BF16 or
# AMX. On an AVX2 CPU they made the R-50-D8 training step 1.3x faster, but inference slower
# (README "Performance"), so training asks for them; a value the user set wins. This must
# run before TensorFlow is imported.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from absl import flags  # noqa: E402

from pspnet_tf import cli  # noqa: E402
from pspnet_tf.config import config_from_flags, define_flags  # noqa: E402
from pspnet_tf.training.trainer import train  # noqa: E402

define_flags()
# Not part of the run's config: it only decides who may hold --run_dir's lock right now.
flags.DEFINE_bool("force_unlock", False,
                  "Take --run_dir's lock (run_dir/train.lock) although it names a process that "
                  "this host cannot check (another host) or that still exists: use only when "
                  "that run is known to be gone.")


def main(argv: list[str]) -> None:
    train(config_from_flags(), force_unlock=flags.FLAGS.force_unlock)


if __name__ == "__main__":
    cli.run(main)
