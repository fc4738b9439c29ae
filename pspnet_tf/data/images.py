"""Reading image files: the one reader that datasets, verify, TFRecord shards and predict.py
share, so an image decodes to the same pixels in training, evaluation and prediction."""

from __future__ import annotations

import functools

import cv2
import numpy as np

from pspnet_tf.errors import UserError

DATASET_REMEDY = "re-download it or remove it from the split"
# Every extension OpenCV's imread documentation names; `image_extensions` keeps the ones this
# OpenCV build decodes.
_OPENCV_EXTENSIONS = (".bmp", ".dib", ".jpeg", ".jpg", ".jpe", ".jp2", ".png", ".webp", ".avif",
                      ".pbm", ".pgm", ".ppm", ".pxm", ".pnm", ".pfm", ".sr", ".ras", ".tiff",
                      ".tif", ".exr", ".hdr", ".pic", ".gif", ".jxl")


def read_image(path: str, remedy: str = DATASET_REMEDY) -> np.ndarray:
    """HxWx3 uint8 RGB of the image file at `path`, whatever it holds (gray, RGBA, 16-bit,
    EXIF-rotated JPEG); a UserError naming the file when it cannot be read or decoded.

    `remedy` says what to do about such a file; the default suits a dataset split, predict.py
    passes its own.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise UserError(f"cannot read image {path} ({error.strerror or error}); "
                        f"{remedy}") from None
    return decode_image(data, path, remedy)


def decode_image(data: bytes, path: str, remedy: str = DATASET_REMEDY) -> np.ndarray:
    """Image file bytes -> HxWx3 uint8 RGB; `path` names the file and `remedy` says what to do
    about it in the error."""
    array = np.frombuffer(data, np.uint8)
    image = cv2.imdecode(array, cv2.IMREAD_COLOR) if array.size else None
    if image is None:
        raise UserError(f"cannot decode image {path}: the file is corrupt or not an image; "
                        f"{remedy}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@functools.cache
def image_extensions() -> tuple[str, ...]:
    """The file extensions `decode_image` reads, for listing the images of a folder.

    Found by encoding a small picture in each format OpenCV documents (in colour, else in
    gray) and decoding it with `decode_image`, so the list is what this OpenCV build actually
    reads: 21 extensions with OpenCV 5.0, GIF, AVIF and JPEG 2000 among them.
    """
    logging = cv2.utils.logging
    level = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)  # failed probes would log OpenCV errors
    readable = []
    try:
        for extension in _OPENCV_EXTENSIONS:
            for picture in (np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64), np.uint8)):
                try:
                    encoded, data = cv2.imencode(extension, picture)
                    if encoded and decode_image(data.tobytes(), extension) is not None:
                        readable.append(extension)
                        break
                except (cv2.error, UserError):
                    continue
    finally:
        logging.setLogLevel(level)
    return tuple(readable)
