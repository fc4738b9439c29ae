"""A dataset split: its samples, read and checked the same way for every layout.

Everything a user can get wrong about the data on disk is checked here, once, so that training
and evaluation fail early with a message that names the file instead of deep inside tf.data.
What differs between datasets (classes, palette, file layout, label map) is their
`DatasetDescriptor` in descriptors.py.
"""

from __future__ import annotations

import io
import os

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from pspnet_tf.data.descriptors import (
    IDENTITY_LABEL_MAP,
    IGNORE_INDEX,
    REDUCE_ZERO_LABEL_MAP,
    get_descriptor,
    read_only_uint8,
)
from pspnet_tf.data.images import DATASET_REMEDY, read_image
from pspnet_tf.data.layouts import Sample
from pspnet_tf.errors import ParameterError, UserError

_LABEL_MODES = ("P", "L")
_MAX_LISTED_MISSING = 3


class SegmentationDataset:
    """Base: a list of samples plus how to read them.

    `label_map` is a 256-entry table from the raw label values on disk to train ids
    (IGNORE_INDEX = ignore), so every layout's id conversion is one vectorised lookup.
    """

    def __init__(
        self,
        name: str,
        split: str,
        class_names: tuple[str, ...],
        palette: np.ndarray,
        samples: list[Sample],
        label_map: np.ndarray | None = None,
    ) -> None:
        self.name = name
        self.split = split
        self.class_names = tuple(class_names)
        self.palette = read_only_uint8(palette)
        self.samples = list(samples)
        self.label_map = IDENTITY_LABEL_MAP if label_map is None else read_only_uint8(label_map)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def reduce_zero_label(self) -> None:
        """From now on reads labels shifted as mmseg's reduce_zero_label: 0 -> IGNORE_INDEX,
        k -> k-1 (after the layout's own label map)."""
        self.label_map = read_only_uint8(REDUCE_ZERO_LABEL_MAP[self.label_map])

    def read_image(self, path: str) -> np.ndarray:
        """HxWx3 uint8 RGB of the image at `path`, by the reader predict.py uses as well
        (ShardedDataset overrides this to decode the bytes it holds in memory)."""
        return read_image(path)

    def read_label(self, path: str) -> np.ndarray:
        """HxW uint8 train ids of the label file at `path`."""
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            raise ParameterError("label file {path} not found; check {data_root}",
                                 path=path) from None
        except OSError as error:
            raise ParameterError("cannot read label {path} ({reason}); check {data_root}",
                                 path=path, reason=error.strerror or error) from None
        return self.decode_label(data, path)

    def decode_label(self, data: bytes, path: str) -> np.ndarray:
        """Label file bytes -> train ids; reads palette INDICES (cv2 would expand a palette)."""
        try:
            with Image.open(io.BytesIO(data)) as label:
                label.load()
                mode = label.mode
                values = np.array(label) if mode in _LABEL_MODES else None
        except (UnidentifiedImageError, OSError, SyntaxError) as error:
            raise UserError(f"cannot decode label {path} ({error}); {DATASET_REMEDY}") from None
        if values is None:
            raise UserError(f"label {path} has image mode {mode}; labels must be 8-bit palette or "
                            "grayscale PNGs of class indices (not colour-coded RGB)")
        return cv2.LUT(values, self.label_map)  # a table lookup, faster than numpy indexing

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image and label of sample `index`, checked against each other and the class list."""
        sample = self.samples[index]
        return self.check_pair(self.read_image(sample.image_path),
                               self.read_label(sample.label_path), sample)

    def check_pair(self, image: np.ndarray, label: np.ndarray,
                   sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        """Raises a UserError naming `sample`'s files unless the label fits image and classes."""
        if label.shape != image.shape[:2]:
            raise UserError(
                f"label {sample.label_path} is {label.shape[1]}x{label.shape[0]} but image "
                f"{sample.image_path} is {image.shape[1]}x{image.shape[0]} (WxH); they must match")
        bad = np.unique(label[(label >= self.num_classes) & (label != IGNORE_INDEX)])
        if bad.size:
            raise ParameterError(
                "label {path} holds train ids {ids} but {name} has {count} classes (0..{last}, "
                "{ignore} = ignore); fix the label file or choose the matching {dataset}",
                path=sample.label_path, ids=bad.tolist()[:5], name=self.name,
                count=self.num_classes, last=self.num_classes - 1, ignore=IGNORE_INDEX)
        return image, label

    def missing_files(self) -> list[str]:
        """Listed image and label files that do not exist, in split order."""
        return [path for sample in self.samples
                for path in (sample.image_path, sample.label_path) if not os.path.isfile(path)]


def open_dataset(name: str, data_root: str, split: str) -> SegmentationDataset:
    """The named dataset's sample list, without checking that the listed files exist."""
    descriptor = get_descriptor(name)
    if not os.path.isdir(data_root):
        raise ParameterError("data root {path} does not exist; fix {data_root}", path=data_root)
    class_names, palette = descriptor.classes(data_root)
    samples, label_map = descriptor.samples(data_root, split)
    return SegmentationDataset(name, split, class_names, palette, samples, label_map)


def get_dataset(name: str, data_root: str, split: str) -> SegmentationDataset:
    """Build the named dataset and check its files exist, so training fails before it starts."""
    dataset = open_dataset(name, data_root, split)
    missing = dataset.missing_files()
    if missing:
        shown = ", ".join(missing[:_MAX_LISTED_MISSING])
        raise ParameterError("{name} split {split!r} under {root}: {count} listed image/label "
                             "files are missing (first: {shown}); check {data_root}, complete "
                             "the download, or run pspnet-verify", name=name,
                             split=split, root=data_root, count=len(missing), shown=shown)
    return dataset
