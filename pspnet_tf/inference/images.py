"""Inputs of predict.py: which files a --input names, and what to do about unreadable ones.

They are read by the dataset readers' `pspnet_tf.data.images.read_image` (grayscale, RGBA,
16-bit and EXIF-rotated files all become 8-bit RGB), so a prediction matches evaluation.
"""

import glob
import os

from pspnet_tf.data.images import image_extensions
from pspnet_tf.errors import ParameterError


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
        raise ParameterError("{input}={pattern} names no images ({where}); pass an image, "
                             "a folder of images or a quoted glob such as 'photos/*.jpg'",
                             pattern=pattern, where=where)
    return paths
