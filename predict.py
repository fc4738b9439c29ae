"""Segments images: `python predict.py` = `pspnet-predict` (pspnet_tf/cli/predict.py);
see --help."""

from pspnet_tf_launch import predict

if __name__ == "__main__":
    predict()
