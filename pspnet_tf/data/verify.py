"""`python -m pspnet_tf.data.verify`: the `pspnet-verify` command (pspnet_tf/cli/verify.py),
under the name its users, error messages and flag help know."""

from pspnet_tf.cli.verify import run

if __name__ == "__main__":
    run()
