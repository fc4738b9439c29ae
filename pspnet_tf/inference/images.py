"""Inputs of predict.py: which files a --input names, how they decode, and the class colours.

Images decode exactly as the dataset readers decode them (`decode_image`: grayscale, RGBA,
16-bit and EXIF-rotated files all become 8-bit RGB), so a prediction matches evaluation.
"""

import glob
import os

import numpy as np

from pspnet_tf.data import datasets
from pspnet_tf.data.datasets import decode_image, image_extensions
from pspnet_tf.errors import UserError


def find_inputs(pattern: str) -> list[str]:
    """The files `pattern` names: one file, the images directly in a folder, or a glob."""
    if os.path.isfile(pattern):
        return [pattern]
    if os.path.isdir(pattern):
        paths = sorted(os.path.join(pattern, name) for name in os.listdir(pattern)
                       if os.path.splitext(name)[1].lower() in image_extensions())
        where = f"the folder holds no {', '.join(image_extensions())} files"
    else:
        paths = sorted(path for path in glob.glob(pattern, recursive=True)
                       if os.path.isfile(path))
        where = "no file exists there or matches it as a glob"
    if not paths:
        raise UserError(f"--input={pattern} names no images ({where}); pass an image, a "
                        "folder of images or a quoted glob such as 'photos/*.jpg'")
    return paths


PREDICT_REMEDY = "replace the file or leave it out of --input"


def read_image(path: str) -> np.ndarray:
    """HxWx3 uint8 RGB of the image file at `path` (UserError naming it when unreadable)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise UserError(f"cannot read image {path} ({error.strerror or error})") from None
    return decode_image(data, path, remedy=PREDICT_REMEDY)


def dataset_classes(name: str, data_root: str,
                    num_classes: int) -> tuple[tuple[str, ...], np.ndarray]:
    """Class names and palette for predict.py, checked against --num_classes.

    Needs no images on disk; only the `folder` layout reads its data root (classes.txt).
    """
    names, palette = datasets.dataset_classes(name, data_root)
    if len(names) != num_classes:
        raise UserError(f"--num_classes={num_classes} but dataset {name} has {len(names)} "
                        f"classes; set --num_classes={len(names)} or the matching --dataset")
    return names, palette
