"""Where each dataset layout keeps a split's images and labels: one listing function per
layout, each raising a UserError that names the folder or file a user got wrong."""

from __future__ import annotations

import dataclasses
import glob
import os

from pspnet_tf.data.images import image_extensions
from pspnet_tf.errors import ParameterError, UserError

CITYSCAPES_LABEL_ID_SUFFIX = "_gtFine_labelIds.png"
# What `prepare cityscapes` writes beside each labelIds file.
CITYSCAPES_TRAIN_ID_SUFFIX = "_gtFine_labelTrainIds.png"


@dataclasses.dataclass(frozen=True)
class Sample:
    """One image and its label map file."""

    image_path: str
    label_path: str


def voc_samples(data_root: str, split: str) -> list[Sample]:
    """VOC2012 layout; "trainaug" takes its labels from the converted SBD folder."""
    split_file = os.path.join(data_root, "ImageSets", "Segmentation", f"{split}.txt")
    if not os.path.isfile(split_file):
        raise ParameterError("split file {path} not found; check {data_root} (the VOC2012 "
                             "folder) and the split name", path=split_file)
    with open(split_file) as handle:
        ids = [line.strip() for line in handle if line.strip()]
    if not ids:
        raise UserError(f"split file {split_file} is empty; list one image id per line")
    label_dir = "SegmentationClassAug" if split == "trainaug" else "SegmentationClass"
    return [Sample(os.path.join(data_root, "JPEGImages", f"{image_id}.jpg"),
                   os.path.join(data_root, label_dir, f"{image_id}.png")) for image_id in ids]


def ade20k_samples(data_root: str, split: str) -> list[Sample]:
    """ADEChallengeData2016 layout; "train"/"val"/"test" are accepted for "training"/
    "validation"/"testing" (the test release's images go into images/testing/)."""
    split = {"train": "training", "val": "validation", "test": "testing"}.get(split, split)
    image_dir = os.path.join(data_root, "images", split)
    if not os.path.isdir(image_dir):
        raise ParameterError("split folder {path} not found; {data_root} must be the "
                             "ADEChallengeData2016 folder and the split training or "
                             "validation", path=image_dir)
    images = sorted(glob.glob(os.path.join(image_dir, "*.jpg")))
    if not images:
        raise UserError(f"split folder {image_dir} holds no .jpg images; complete the download")
    label_dir = os.path.join(data_root, "annotations", split)
    return [Sample(path, os.path.join(label_dir, os.path.basename(path)[:-4] + ".png"))
            for path in images]


def cityscapes_samples(data_root: str, split: str) -> list[Sample]:
    """leftImg8bit/{split}/{city}/*_leftImg8bit.png with the downloaded gtFine labelIds."""
    image_dir = os.path.join(data_root, "leftImg8bit", split)
    if not os.path.isdir(image_dir):
        raise ParameterError("split folder {path} not found; {data_root} must be the "
                             "Cityscapes folder holding leftImg8bit/ and gtFine/",
                             path=image_dir)
    images = sorted(glob.glob(os.path.join(image_dir, "*", "*_leftImg8bit.png")))
    if not images:
        raise UserError(f"split folder {image_dir} holds no */*_leftImg8bit.png images; "
                        "complete the download")
    return [Sample(path, os.path.join(data_root, "gtFine", split,
                                      os.path.basename(os.path.dirname(path)),
                                      os.path.basename(path).removesuffix("_leftImg8bit.png"))
                   + CITYSCAPES_LABEL_ID_SUFFIX) for path in images]


def folder_samples(data_root: str, split: str) -> list[Sample]:
    """images/{split}/<stem>.<any image type> with masks/{split}/<stem>.png."""
    image_dir = os.path.join(data_root, "images", split)
    if not os.path.isdir(image_dir):
        raise ParameterError("split folder {path} not found; {data_root} must hold "
                             "images/<split>/, masks/<split>/ and classes.txt", path=image_dir)
    images = sorted(name for name in os.listdir(image_dir)
                    if os.path.splitext(name)[1].lower() in image_extensions())
    if not images:
        raise UserError(f"split folder {image_dir} holds no images "
                        f"({', '.join(image_extensions())})")
    stems = [os.path.splitext(name)[0] for name in images]
    duplicated = sorted({stem for stem in stems if stems.count(stem) > 1})
    if duplicated:
        raise UserError(f"{image_dir} holds several images named {duplicated[0]}.*; masks are "
                        "matched by file stem, so keep one image per stem")
    mask_dir = os.path.join(data_root, "masks", split)
    return [Sample(os.path.join(image_dir, name), os.path.join(mask_dir, f"{stem}.png"))
            for name, stem in zip(images, stems)]
