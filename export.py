"""Exports a SavedModel for TF Serving: `python export.py` = `pspnet-export`
(pspnet_tf/cli/export.py); see --help."""

from pspnet_tf_launch import export

if __name__ == "__main__":
    export()
