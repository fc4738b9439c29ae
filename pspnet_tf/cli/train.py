"""Trains PSPNet: `python train.py --flagfile=configs/voc_r50.cfg`.

Rerunning the same command resumes from the last checkpoint in --run_dir.

Exit status: 0 when training finished; 2 for a problem to fix in the command or the data
(one `error: ...` line says which), also when another train.py holds --run_dir's lock;
3 when training diverged (the loss or the weights became NaN or infinite, or the loss grew
over --divergence_factor times its recent median: lower --learning_rate, or leave
mixed_float16; nothing from that step is saved); 130 (SIGINT) or 143
(SIGTERM): interrupted after checkpointing the step in flight, with one line
`interrupted at step N; ...`; 4 for a fault of the machine (a full disk, a read-only or
unwritable folder, a path too long): one `error: ...` line names the path and what to do,
and the same command resumes once it is fixed.
"""

from absl import flags

from pspnet_tf.cli import app
from pspnet_tf.cli.flag_groups import define
from pspnet_tf.config import config_from_flags, define_flags
from pspnet_tf.training.trainer import train

define_flags()
# Not part of the run's config: it only decides who may hold --run_dir's lock right now.
define("runtime", flags.DEFINE_bool, "force_unlock", False,
       "Take --run_dir's lock (run_dir/train.lock) although it names a process that this host "
       "cannot check (another host) or that still exists: use only when that run is known to "
       "be gone.")


def main(argv: list[str]) -> None:
    train(config_from_flags(), force_unlock=flags.FLAGS.force_unlock)


def run() -> None:
    """The `pspnet-train` command."""
    app.run(main)

