"""What each dataset is (deeplab2's DatasetDescriptor, mmseg's METAINFO): class names,
palette, where a split's samples are and how raw label values become train ids, in ONE
registry, `DATASETS`. Adding a dataset means adding one `DatasetDescriptor` to it; --dataset's
choices, the readers, verify, prepare and predict.py all look datasets up there.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
from collections.abc import Callable, Mapping

import numpy as np

from pspnet_tf.data.layouts import (
    CITYSCAPES_LABEL_ID_SUFFIX,
    CITYSCAPES_TRAIN_ID_SUFFIX,
    Sample,
    ade20k_samples,
    cityscapes_samples,
    folder_samples,
    voc_samples,
)
from pspnet_tf.errors import ParameterError, UserError

# The train id of pixels that the loss, the metrics and the crop statistics leave out. Each
# descriptor's label map sends its dataset's own "unlabelled" values here (ADE20K's 0,
# Cityscapes' unevaluated ids), so every layer downstream of the readers knows only this one.
IGNORE_INDEX = 255
FOLDER_CLASS_FILE = "classes.txt"
# "name", "name<TAB>r,g,b" or "name,r,g,b" (spaces allowed around the numbers).
_CLASS_LINE = re.compile(r"(.+?)(?:\t|,)\s*(\d+\s*,\s*\d+\s*,\s*\d+)")


def read_only_uint8(array: np.ndarray) -> np.ndarray:
    """`array` as uint8 that nobody can change in place (tables shared by every reader)."""
    array = np.array(array, np.uint8)
    array.setflags(write=False)
    return array


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

DEMO_CLASS_NAMES = ("background", "circle", "square", "triangle", "star")
# Display colours of the demo classes, RGB.
DEMO_PALETTE = read_only_uint8(
    ((0, 0, 0), (220, 40, 40), (150, 220, 30), (30, 200, 220), (150, 50, 220)))

CITYSCAPES_CLASS_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)

# Cityscapes labelIds -> trainIds (docs/datasets.md); every other id is ignored.
CITYSCAPES_LABEL_TO_TRAIN_ID = (
    (7, 0), (8, 1), (11, 2), (12, 3), (13, 4), (17, 5), (19, 6), (20, 7), (21, 8), (22, 9),
    (23, 10), (24, 11), (25, 12), (26, 13), (27, 14), (28, 15), (31, 16), (32, 17), (33, 18),
)

ADE20K_PALETTE = (
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

CITYSCAPES_PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
)


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


def label_table(pairs: Mapping[int, int] | None = None, default: int | None = None) -> np.ndarray:
    """A 256-entry raw-value -> train-id table; identity unless `default` is given."""
    table = np.arange(256, dtype=np.uint8) if default is None else np.full(256, default, np.uint8)
    for raw, train_id in (pairs or {}).items():
        table[raw] = train_id
    return read_only_uint8(table)


IDENTITY_LABEL_MAP = label_table()
# mmseg's reduce_zero_label: 0 (unlabelled) -> 255 = ignore, k -> k-1, 255 stays ignore.
REDUCE_ZERO_LABEL_MAP = label_table({k: k - 1 for k in range(1, IGNORE_INDEX)}, IGNORE_INDEX)


def _class_line(line: str) -> tuple[str, str | None]:
    """(name, "r,g,b" or None) of one classes.txt line."""
    line = line.strip()
    match = _CLASS_LINE.fullmatch(line)
    return (match.group(1).strip(), match.group(2)) if match else (line, None)


def _check_lines(path: str, names: list[str]) -> None:
    """UserError naming the line numbers of blank lines and of duplicated class names: the id
    of a class is its line number - 1, so a blank line would shift every later id, and two
    lines of one name would be two classes that no table or picture tells apart. Blank
    lines after the last class shift nothing and are allowed."""
    problems = []
    blank = [str(number) for number, name in enumerate(names, 1) if not name]
    if blank:
        problems.append(f"line{'s' * (len(blank) > 1)} {', '.join(blank)} "
                        f"{'are' if len(blank) > 1 else 'is'} blank")
    lines_of: dict[str, list[str]] = {}
    for number, name in enumerate(names, 1):
        if name:
            lines_of.setdefault(name, []).append(str(number))
    problems += [f"lines {', '.join(numbers)} all name {name!r}"
                 for name, numbers in lines_of.items() if len(numbers) > 1]
    if problems:
        raise UserError(f"class file {path}: {'; '.join(problems)}; each line names one class "
                        "(class id = line number - 1): remove blank lines and give each class "
                        "one line")


def read_class_file(path: str) -> tuple[tuple[str, ...], np.ndarray]:
    """Class names and palette from a classes.txt: one name per line, optionally followed by
    "r,g,b" after a tab or comma; without colours the VOC colour map is used. Blank lines
    (but trailing ones) and duplicate names are refused (`_check_lines`)."""
    if not os.path.isfile(path):
        raise UserError(f"class file {path} not found; write one class name per line there")
    with open(path) as handle:
        parsed = [_class_line(line) for line in handle.read().splitlines()]
    while parsed and not parsed[-1][0]:
        parsed.pop()
    _check_lines(path, [name for name, _ in parsed])
    names, colours = [], []
    for number, (name, colour) in enumerate(parsed, 1):
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
        raise UserError(f"class file {path} lists {len(names)} classes; at most {IGNORE_INDEX} "
                        f"are possible ({IGNORE_INDEX} marks ignored pixels)")
    if colours and len(colours) != len(names):
        raise UserError(f"class file {path} gives colours for {len(colours)} of {len(names)} "
                        "classes; give every class an r,g,b colour or none")
    palette = np.array(colours, np.uint8) if colours else voc_palette(len(names))
    return tuple(names), palette


def _folder_classes(data_root: str) -> tuple[tuple[str, ...], np.ndarray]:
    return read_class_file(os.path.join(data_root, FOLDER_CLASS_FILE))


@dataclasses.dataclass(frozen=True)
class PreparedLabels:
    """Train-id label files that `prepare` writes beside the downloaded ones: a sample's
    label path with `raw_suffix` replaced by `suffix`."""

    raw_suffix: str
    suffix: str

    def path(self, raw_label_path: str) -> str:
        """Where prepare writes the train-id copy of the label file at `raw_label_path`."""
        return raw_label_path.removesuffix(self.raw_suffix) + self.suffix


@dataclasses.dataclass(frozen=True, eq=False)
class DatasetDescriptor:
    """Everything that differs between datasets; the readers are the same for all.

    Either `class_names` and `palette` are fixed, or `classes_from_root` reads them from the
    data root (the `folder` layout's classes.txt). `label_map` turns the raw label values on
    disk into train ids, IGNORE_INDEX for pixels to leave out. With `prepared_labels`, a split
    whose every sample has prepare's train-id file is read from those files without mapping.
    """

    name: str
    list_samples: Callable[[str, str], list[Sample]]
    class_names: tuple[str, ...] = ()
    palette: np.ndarray | None = dataclasses.field(default=None, repr=False)
    classes_from_root: Callable[[str], tuple[tuple[str, ...], np.ndarray]] | None = None
    label_map: np.ndarray = dataclasses.field(default_factory=label_table, repr=False)
    prepared_labels: PreparedLabels | None = None

    def __post_init__(self) -> None:
        fixed = self.palette is not None
        if fixed == (self.classes_from_root is not None):
            raise ValueError(f"dataset {self.name}: give class_names and palette, or "
                             "classes_from_root")
        if fixed:
            object.__setattr__(self, "palette", read_only_uint8(self.palette))
            if self.palette.shape != (len(self.class_names), 3):
                raise ValueError(f"dataset {self.name}: palette shape {self.palette.shape} for "
                                 f"{len(self.class_names)} classes")
        object.__setattr__(self, "label_map", read_only_uint8(self.label_map))

    def classes(self, data_root: str) -> tuple[tuple[str, ...], np.ndarray]:
        """Class names and palette; only `classes_from_root` datasets read `data_root`."""
        if self.classes_from_root is not None:
            return self.classes_from_root(data_root)
        return self.class_names, self.palette

    def samples(self, data_root: str, split: str) -> tuple[list[Sample], np.ndarray]:
        """The split's samples and the label map that turns their label files into train ids."""
        samples = self.list_samples(data_root, split)
        if self.prepared_labels is not None:
            prepared = [Sample(sample.image_path, self.prepared_labels.path(sample.label_path))
                        for sample in samples]
            if all(os.path.isfile(sample.label_path) for sample in prepared):
                return prepared, IDENTITY_LABEL_MAP
        return samples, self.label_map


_DESCRIPTORS = (
    DatasetDescriptor("voc", voc_samples, VOC_CLASS_NAMES, voc_palette(len(VOC_CLASS_NAMES))),
    DatasetDescriptor("demo", voc_samples, DEMO_CLASS_NAMES, DEMO_PALETTE),
    # ADE20K's 0 is "other": ignored, and classes 1..150 become train ids 0..149.
    DatasetDescriptor("ade20k", ade20k_samples, ADE20K_CLASS_NAMES, ADE20K_PALETTE,
                      label_map=label_table({0: IGNORE_INDEX, **{raw: raw - 1
                                                                 for raw in range(1, 255)}})),
    DatasetDescriptor("cityscapes", cityscapes_samples, CITYSCAPES_CLASS_NAMES,
                      CITYSCAPES_PALETTE,
                      label_map=label_table(dict(CITYSCAPES_LABEL_TO_TRAIN_ID),
                                            default=IGNORE_INDEX),
                      prepared_labels=PreparedLabels(CITYSCAPES_LABEL_ID_SUFFIX,
                                                     CITYSCAPES_TRAIN_ID_SUFFIX)),
    DatasetDescriptor("folder", folder_samples, classes_from_root=_folder_classes),
)
# Read-only: the registry is fixed at import, so every entry point sees the same datasets.
DATASETS: Mapping[str, DatasetDescriptor] = types.MappingProxyType(
    {descriptor.name: descriptor for descriptor in _DESCRIPTORS})
DATASET_NAMES = tuple(DATASETS)


def get_descriptor(name: str) -> DatasetDescriptor:
    """The registered dataset `name`, else a UserError listing the choices."""
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    return DATASETS[name]


def dataset_classes(name: str, data_root: str,
                    num_classes: int | None = None) -> tuple[tuple[str, ...], np.ndarray]:
    """Class names and palette of a dataset, checked against `num_classes` when given.

    Needs no images on disk; only the `folder` layout reads its data root (classes.txt).
    """
    names, palette = get_descriptor(name).classes(data_root)
    if num_classes is not None and len(names) != num_classes:
        raise ParameterError("{num_classes}={given} but dataset {name} has {count} classes; "
                             "set {num_classes}={count} or the matching {dataset}",
                             given=num_classes, name=name, count=len(names))
    return names, palette
