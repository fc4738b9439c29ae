"""The calibration images of a full-integer LiteRT export (`--quantize=int8`): images of the
configured dataset's training split, as a client sends them to the file.

They are taken evenly spaced over the split (all of them when it holds fewer), so the same
config gives the same images, read by the dataset's reader and resized to the file's fixed
input size (bilinear, as a client fits its photos to it); the graph itself then applies the
inference preprocessing (keep-ratio resize to the test scale, normalisation).
"""

from collections.abc import Iterator

import cv2
import numpy as np

from pspnet_tf.config import ExperimentConfig
from pspnet_tf.data.splits import load_split
from pspnet_tf.errors import ParameterError


def calibration_images(config: ExperimentConfig, count: int,
                       input_size: tuple[int, int]) -> Iterator[np.ndarray]:
    """`count` uint8 [H, W, 3] images of `input_size` (H, W) from `config`'s training split.

    The split is opened (and its files checked) now; the images are read one at a time as
    the iterator is consumed, so memory holds one of them.
    """
    if count < 1:
        raise ParameterError("{representative_images} must be >= 1, got {count}", count=count)
    dataset = load_split(config, config.data.train_split)
    total = len(dataset.samples)
    if not total:
        raise ParameterError("training split {split} of {path} holds no images to calibrate "
                             "with; set {train_split} to a split that has some",
                             split=config.data.train_split, path=config.data.data_root)
    indices = np.unique(np.linspace(0, total - 1, min(count, total)).round().astype(int))

    def images() -> Iterator[np.ndarray]:
        height, width = input_size
        for index in indices:
            image = dataset.read_image(dataset.samples[index].image_path)
            yield cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)

    return images()
