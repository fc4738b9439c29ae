"""Dataset layouts (VOC, demo, ADE20K, Cityscapes, user folders): file lists and readers.

Everything a user can get wrong about the data on disk is checked here, once, so that training
and evaluation fail early with a message that names the file instead of deep inside tf.data.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import io
import os
import re

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from pspnet_tf.data import demo
from pspnet_tf.errors import UserError

DATASET_NAMES = ("voc", "demo", "ade20k", "cityscapes", "folder")
IGNORE_INDEX = 255

VOC_CLASS_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)

ADE20K_CLASS_NAMES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane",
    "grass", "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant",
    "curtain", "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror",
    "rug", "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter",
    "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs",
    "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track",
    "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer",
    "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag",
    "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave",
    "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate",
    "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)

CITYSCAPES_CLASS_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)

# Cityscapes labelIds -> trainIds (SPEC.md "Datasets"); every other id is ignored.
CITYSCAPES_LABEL_TO_TRAIN_ID = (
    (7, 0), (8, 1), (11, 2), (12, 3), (13, 4), (17, 5), (19, 6), (20, 7), (21, 8), (22, 9),
    (23, 10), (24, 11), (25, 12), (26, 13), (27, 14), (28, 15), (31, 16), (32, 17), (33, 18),
)

_ADE20K_PALETTE = (
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3), (120, 120, 80),
    (140, 140, 140), (204, 5, 255), (230, 230, 230), (4, 250, 7), (224, 5, 255), (235, 255, 7),
    (150, 5, 61), (120, 120, 70), (8, 255, 51), (255, 6, 82), (143, 255, 140), (204, 255, 4),
    (255, 51, 7), (204, 70, 3), (0, 102, 200), (61, 230, 250), (255, 6, 51), (11, 102, 255),
    (255, 7, 71), (255, 9, 224), (9, 7, 230), (220, 220, 220), (255, 9, 92), (112, 9, 255),
    (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10), (7, 255, 255),
    (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7), (255, 122, 8), (0, 255, 20),
    (255, 8, 41), (255, 5, 153), (6, 51, 255), (235, 12, 255), (160, 150, 20), (0, 163, 255),
    (140, 140, 140), (250, 10, 15), (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0),
    (153, 255, 0), (0, 0, 255), (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255),
    (11, 200, 200), (255, 82, 0), (0, 255, 245), (0, 61, 255), (0, 255, 112), (0, 255, 133),
    (255, 0, 0), (255, 163, 0), (255, 102, 0), (194, 255, 0), (0, 143, 255), (51, 255, 0),
    (0, 82, 255), (0, 255, 41), (0, 255, 173), (10, 0, 255), (173, 255, 0), (0, 255, 153),
    (255, 92, 0), (255, 0, 255), (255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20),
    (255, 184, 184), (0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204), (0, 255, 194),
    (0, 255, 82), (0, 10, 255), (0, 112, 255), (51, 0, 255), (0, 194, 255), (0, 122, 255),
    (0, 255, 163), (255, 153, 0), (0, 255, 10), (255, 112, 0), (143, 255, 0), (82, 0, 255),
    (163, 255, 0), (255, 235, 0), (8, 184, 170), (133, 0, 255), (0, 255, 92), (184, 0, 255),
    (255, 0, 31), (0, 184, 255), (0, 214, 255), (255, 0, 112), (92, 255, 0), (0, 224, 255),
    (112, 224, 255), (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0), (255, 0, 163),
    (255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0), (255, 0, 235), (245, 0, 255),
    (255, 0, 122), (255, 245, 0), (10, 190, 212), (214, 255, 0), (0, 204, 255), (20, 0, 255),
    (255, 255, 0), (0, 153, 255), (0, 41, 255), (0, 255, 204), (41, 0, 255), (41, 255, 0),
    (173, 0, 255), (0, 245, 255), (71, 0, 255), (122, 0, 255), (0, 255, 184), (0, 92, 255),
    (184, 255, 0), (0, 133, 255), (255, 214, 0), (25, 194, 194), (102, 255, 0), (92, 0, 255),
)

_CITYSCAPES_PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
)

_LABEL_MODES = ("P", "L")
CITYSCAPES_LABEL_ID_SUFFIX = "_gtFine_labelIds.png"
CITYSCAPES_TRAIN_ID_SUFFIX = "_gtFine_labelTrainIds.png"
FOLDER_CLASS_FILE = "classes.txt"
# Every extension OpenCV's imread documentation names; `image_extensions` keeps the ones this
# OpenCV build decodes.
_OPENCV_EXTENSIONS = (".bmp", ".dib", ".jpeg", ".jpg", ".jpe", ".jp2", ".png", ".webp", ".avif",
                      ".pbm", ".pgm", ".ppm", ".pxm", ".pnm", ".pfm", ".sr", ".ras", ".tiff",
                      ".tif", ".exr", ".hdr", ".pic", ".gif", ".jxl")
DATASET_REMEDY = "re-download it or remove it from the split"
# "name", "name<TAB>r,g,b" or "name,r,g,b" (spaces allowed around the numbers).
_CLASS_LINE = re.compile(r"(.+?)(?:\t|,)\s*(\d+\s*,\s*\d+\s*,\s*\d+)")
_MAX_LISTED_MISSING = 3


def voc_palette(num_classes: int) -> np.ndarray:
    """The PASCAL VOC colour map (bits of the class index spread over R, G, B)."""
    palette = np.zeros((num_classes, 3), np.uint8)
    for index in range(num_classes):
        value, colour = index, [0, 0, 0]
        for shift in range(7, -1, -1):
            for channel in range(3):
                colour[channel] |= ((value >> channel) & 1) << shift
            value >>= 3
        palette[index] = colour
    return palette


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, np.uint8)
    array.setflags(write=False)
    return array


def _lookup_table(pairs: dict[int, int] | None = None, default: int | None = None) -> np.ndarray:
    """A 256-entry raw-value -> train-id table; identity unless `default` is given."""
    table = np.arange(256, dtype=np.uint8) if default is None else np.full(256, default, np.uint8)
    for raw, train_id in (pairs or {}).items():
        table[raw] = train_id
    return _frozen(table)


@dataclasses.dataclass(frozen=True)
class Sample:
    """One image and its label map file."""

    image_path: str
    label_path: str


class SegmentationDataset:
    """Base: a list of samples plus how to read them.

    `label_map` is a 256-entry table from the raw label values on disk to train ids
    (255 = ignore), so every layout's id conversion is one vectorised lookup.
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
        self.palette = _frozen(palette)
        self.samples = list(samples)
        self.label_map = _lookup_table() if label_map is None else _frozen(label_map)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def read_image(self, path: str) -> np.ndarray:
        """HxWx3 uint8 RGB whatever the file holds (gray, RGBA, 16-bit, EXIF-rotated JPEG)."""
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as error:
            reason = error.strerror or error
            raise UserError(f"cannot read image {path} ({reason}); check --data_root") from None
        return decode_image(data, path)

    def read_label(self, path: str) -> np.ndarray:
        """HxW uint8 train ids of the label file at `path`."""
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            raise UserError(f"label file {path} not found; check --data_root") from None
        except OSError as error:
            raise UserError(f"cannot read label {path} ({error.strerror or error}); "
                            "check --data_root") from None
        return self.decode_label(data, path)

    def decode_label(self, data: bytes, path: str) -> np.ndarray:
        """Label file bytes -> train ids; reads palette INDICES (cv2 would expand a palette)."""
        try:
            with Image.open(io.BytesIO(data)) as label:
                label.load()
                mode = label.mode
                values = np.array(label) if mode in _LABEL_MODES else None
        except (UnidentifiedImageError, OSError, SyntaxError) as error:
            raise UserError(f"cannot decode label {path} ({error}); re-download it "
                            "or remove it from the split") from None
        if values is None:
            raise UserError(f"label {path} has image mode {mode}; labels must be 8-bit palette or "
                            "grayscale PNGs of class indices (not colour-coded RGB)")
        return cv2.LUT(values, self.label_map)  # a table lookup 4x faster than numpy indexing

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
            raise UserError(
                f"label {sample.label_path} holds train ids {bad.tolist()[:5]} but {self.name} has "
                f"{self.num_classes} classes (0..{self.num_classes - 1}, 255 = ignore); "
                "fix the label file or choose the matching --dataset")
        return image, label

    def missing_files(self) -> list[str]:
        """Listed image and label files that do not exist, in split order."""
        return [path for sample in self.samples
                for path in (sample.image_path, sample.label_path) if not os.path.isfile(path)]


def decode_image(data: bytes, path: str, remedy: str = DATASET_REMEDY) -> np.ndarray:
    """Image file bytes -> HxWx3 uint8 RGB; `path` names the file and `remedy` says what to do
    about it in the error (the default suits a dataset split, predict.py passes its own)."""
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


def _voc_samples(data_root: str, split: str) -> list[Sample]:
    """VOC2012 layout; "trainaug" takes its labels from the converted SBD folder."""
    split_file = os.path.join(data_root, "ImageSets", "Segmentation", f"{split}.txt")
    if not os.path.isfile(split_file):
        raise UserError(f"split file {split_file} not found; check --data_root (the VOC2012 "
                        "folder) and the split name")
    with open(split_file) as handle:
        ids = [line.strip() for line in handle if line.strip()]
    if not ids:
        raise UserError(f"split file {split_file} is empty; list one image id per line")
    label_dir = "SegmentationClassAug" if split == "trainaug" else "SegmentationClass"
    return [Sample(os.path.join(data_root, "JPEGImages", f"{image_id}.jpg"),
                   os.path.join(data_root, label_dir, f"{image_id}.png")) for image_id in ids]


def _ade20k_samples(data_root: str, split: str) -> list[Sample]:
    """ADEChallengeData2016 layout; "train"/"val" are accepted for "training"/"validation"."""
    split = {"train": "training", "val": "validation"}.get(split, split)
    image_dir = os.path.join(data_root, "images", split)
    if not os.path.isdir(image_dir):
        raise UserError(f"split folder {image_dir} not found; --data_root must be the "
                        "ADEChallengeData2016 folder and the split training or validation")
    images = sorted(glob.glob(os.path.join(image_dir, "*.jpg")))
    if not images:
        raise UserError(f"split folder {image_dir} holds no .jpg images; complete the download")
    label_dir = os.path.join(data_root, "annotations", split)
    return [Sample(path, os.path.join(label_dir, os.path.basename(path)[:-4] + ".png"))
            for path in images]


def _cityscapes_samples(data_root: str, split: str) -> tuple[list[Sample], bool]:
    """leftImg8bit/{split}/{city}/*_leftImg8bit.png with gtFine labels.

    Uses the *_gtFine_labelTrainIds.png files that `prepare cityscapes` writes when every
    image has one (returns True then), else the downloaded *_gtFine_labelIds.png.
    """
    image_dir = os.path.join(data_root, "leftImg8bit", split)
    if not os.path.isdir(image_dir):
        raise UserError(f"split folder {image_dir} not found; --data_root must be the "
                        "Cityscapes folder holding leftImg8bit/ and gtFine/")
    images = sorted(glob.glob(os.path.join(image_dir, "*", "*_leftImg8bit.png")))
    if not images:
        raise UserError(f"split folder {image_dir} holds no */*_leftImg8bit.png images; "
                        "complete the download")
    stems = [os.path.join(data_root, "gtFine", split, os.path.basename(os.path.dirname(path)),
                          os.path.basename(path)[: -len("_leftImg8bit.png")]) for path in images]
    train_ids = all(os.path.isfile(stem + CITYSCAPES_TRAIN_ID_SUFFIX) for stem in stems)
    suffix = CITYSCAPES_TRAIN_ID_SUFFIX if train_ids else CITYSCAPES_LABEL_ID_SUFFIX
    return [Sample(path, stem + suffix) for path, stem in zip(images, stems)], train_ids


def read_class_file(path: str) -> tuple[tuple[str, ...], np.ndarray]:
    """Class names and palette from a classes.txt: one name per line, optionally followed by
    "r,g,b" after a tab or comma; without colours the VOC colour map is used."""
    if not os.path.isfile(path):
        raise UserError(f"class file {path} not found; write one class name per line there")
    names, colours = [], []
    with open(path) as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if not line:
                continue
            match = _CLASS_LINE.fullmatch(line)
            name, colour = (match.group(1).strip(), match.group(2)) if match else (line, None)
            if colour is not None:
                rgb = [int(value) for value in colour.split(",")]
                if max(rgb) > 255:
                    raise UserError(f"{path} line {number}: colour {colour} is not three values "
                                    "0..255; write it as r,g,b")
                colours.append(rgb)
            names.append(name)
    if not names:
        raise UserError(f"class file {path} is empty; write one class name per line")
    if len(names) > IGNORE_INDEX:
        raise UserError(f"class file {path} lists {len(names)} classes; at most 255 are "
                        "possible (255 marks ignored pixels)")
    if colours and len(colours) != len(names):
        raise UserError(f"class file {path} gives colours for {len(colours)} of {len(names)} "
                        "classes; give every class an r,g,b colour or none")
    palette = np.array(colours, np.uint8) if colours else voc_palette(len(names))
    return tuple(names), palette


def _folder_samples(data_root: str, split: str) -> list[Sample]:
    """images/{split}/<stem>.<any image type> with masks/{split}/<stem>.png."""
    image_dir = os.path.join(data_root, "images", split)
    if not os.path.isdir(image_dir):
        raise UserError(f"split folder {image_dir} not found; --data_root must hold "
                        "images/<split>/, masks/<split>/ and classes.txt")
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


def dataset_classes(name: str, data_root: str) -> tuple[tuple[str, ...], np.ndarray]:
    """Class names and palette of a dataset; only `folder` reads its data root (classes.txt)."""
    if name == "folder":
        return read_class_file(os.path.join(data_root, FOLDER_CLASS_FILE))
    names, palette = {
        "voc": (VOC_CLASS_NAMES, voc_palette(21)),
        "demo": (demo.DEMO_CLASS_NAMES, demo.DEMO_PALETTE),
        "ade20k": (ADE20K_CLASS_NAMES, _ADE20K_PALETTE),
        "cityscapes": (CITYSCAPES_CLASS_NAMES, _CITYSCAPES_PALETTE),
    }[name]
    return tuple(names), np.asarray(palette, np.uint8)


def open_dataset(name: str, data_root: str, split: str) -> SegmentationDataset:
    """The named dataset's sample list, without checking that the listed files exist."""
    if name not in DATASET_NAMES:
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    if not os.path.isdir(data_root):
        raise UserError(f"data root {data_root} does not exist; fix --data_root")
    class_names, palette = dataset_classes(name, data_root)
    label_map = None
    if name in ("voc", "demo"):
        samples = _voc_samples(data_root, split)
    elif name == "ade20k":
        samples = _ade20k_samples(data_root, split)
        label_map = _lookup_table({0: IGNORE_INDEX, **{raw: raw - 1 for raw in range(1, 255)}})
    elif name == "folder":
        samples = _folder_samples(data_root, split)
    else:
        samples, train_ids = _cityscapes_samples(data_root, split)
        label_map = None if train_ids else cityscapes_label_map()
    return SegmentationDataset(name, split, class_names, palette, samples, label_map)


def cityscapes_label_map() -> np.ndarray:
    """The 256-entry Cityscapes labelIds -> trainIds table (255 for every other id)."""
    return _lookup_table(dict(CITYSCAPES_LABEL_TO_TRAIN_ID), default=IGNORE_INDEX)


def get_dataset(name: str, data_root: str, split: str) -> SegmentationDataset:
    """Build the named dataset and check its files exist, so training fails before it starts."""
    dataset = open_dataset(name, data_root, split)
    missing = dataset.missing_files()
    if missing:
        shown = ", ".join(missing[:_MAX_LISTED_MISSING])
        raise UserError(f"{name} split {split!r} under {data_root}: {len(missing)} listed "
                        f"image/label files are missing (first: {shown}); check --data_root, "
                        "complete the download, or run python -m pspnet_tf.data.verify")
    return dataset
