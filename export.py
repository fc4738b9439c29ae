"""Exports a SavedModel for TF Serving: `python export.py` = `pspnet-export`
(pspnet_tf/cli/export.py); see --help."""

from pspnet_tf.cli.export import run

if __name__ == "__main__":
    run()
