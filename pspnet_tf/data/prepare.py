"""`python -m pspnet_tf.data.prepare`: the `pspnet-prepare` command (pspnet_tf/cli/prepare.py),
under the name its users, error messages and flag help know."""

from pspnet_tf.cli.prepare import run

if __name__ == "__main__":
    run()
