"""`python -m pspnet_tf.convert`: the `pspnet-convert` command (pspnet_tf/cli/convert.py)."""

from pspnet_tf.cli.convert import run

if __name__ == "__main__":
    run()
