"""A small synthetic VOC-layout dataset that a PSPNet learns in minutes on a CPU.

Each class has its own colour family (hue band, strong saturation) with texture noise, on a
low-saturation textured background: on a 2-core CPU, classes told apart by shape alone
were not learnable in minutes, while colour families are. Hue bands are 90 degrees apart so
they stay apart under the training hue jitter.

Images are small (about 96 pixels a side) because training cost grows with the pixels seen,
while what limits the val mIoU is how well object boundaries are placed at the network's
1/8 resolution: objects are sized against the image (2-4 of them, radii 14-30% of the
shorter side) so that they stay several output cells across.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import cv2
import numpy as np
from PIL import Image

from pspnet_tf.data.descriptors import DEMO_CLASS_NAMES, DEMO_PALETTE, IGNORE_INDEX
from pspnet_tf.errors import ParameterError

# OpenCV 8-bit hue (2 degrees per unit) at the centre of each object class's colour family.
_CLASS_HUES = (0, 45, 90, 135)
_HUE_JITTER = 4
# Object radius as a fraction of the image's shorter side, and objects per image (low, high).
_RADIUS_RANGE = (0.14, 0.3)
_OBJECTS_RANGE = (2, 4)
_BORDER_COLOUR = (224, 224, 192)
_BORDER_KERNEL = np.ones((5, 5), np.uint8)
_SPLITS = ("train", "val")


def _object_mask(class_id: int, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A filled shape of the given class at a random place, size and rotation."""
    mask = np.zeros((height, width), np.uint8)
    radius = rng.uniform(*_RADIUS_RANGE) * min(height, width)
    centre = rng.uniform((0.1 * width, 0.1 * height), (0.9 * width, 0.9 * height))
    angle = rng.uniform(0.0, 2.0 * np.pi)
    name = DEMO_CLASS_NAMES[class_id]
    if name == "circle":
        cv2.circle(mask, tuple(int(v) for v in np.round(centre)), int(round(radius)), 1, -1)
        return mask.astype(bool)
    corners = {"square": 4, "triangle": 3, "star": 10}[name]
    angles = angle + np.arange(corners) * 2.0 * np.pi / corners
    radii = np.full(corners, radius)
    if name == "star":
        radii[1::2] *= 0.45
    points = centre + np.stack([np.cos(angles), np.sin(angles)], axis=1) * radii[:, None]
    cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1)
    return mask.astype(bool)


def _hsv_to_rgb(hue: float, saturation: float, value: float) -> np.ndarray:
    pixel = np.array([[[hue % 180, saturation, value]]], np.uint8)
    return cv2.cvtColor(pixel, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Low-frequency noise in about [-1, 1]: a coarse random grid upsampled smoothly."""
    grid = rng.uniform(-1.0, 1.0, (cells, cells)).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)[..., None]


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A grey-ish, low-saturation texture with blotches and grain."""
    base = _hsv_to_rgb(rng.uniform(0, 180), rng.uniform(0, 40), rng.uniform(70, 190))
    blotches = _smooth_noise(rng, height, width, cells=int(rng.integers(3, 8))) * 35.0
    grain = rng.normal(0.0, 10.0, (height, width, 3))
    return base + blotches + grain


def _render(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """One RGB image and its label map with ignored borders around every object, like VOC."""
    image = _background(rng, height, width)
    label = np.zeros((height, width), np.uint8)
    shading = 1.0 + 0.15 * _smooth_noise(rng, height, width, cells=4)
    grain = rng.normal(0.0, 12.0, (height, width, 3))
    for _ in range(int(rng.integers(_OBJECTS_RANGE[0], _OBJECTS_RANGE[1] + 1))):
        class_id = int(rng.integers(1, len(DEMO_CLASS_NAMES)))
        mask = _object_mask(class_id, rng, height, width)
        hue = _CLASS_HUES[class_id - 1] + rng.uniform(-_HUE_JITTER, _HUE_JITTER)
        colour = _hsv_to_rgb(hue, rng.uniform(170, 255), rng.uniform(150, 255))
        image[mask] = colour * shading[mask] + grain[mask]
        label[mask] = class_id
    border = cv2.dilate(label, _BORDER_KERNEL) != cv2.erode(label, _BORDER_KERNEL)
    label[border] = IGNORE_INDEX
    return np.clip(np.round(image), 0, 255).astype(np.uint8), label


def _label_png(label: np.ndarray) -> Image.Image:
    palette = np.zeros((256, 3), np.uint8)
    palette[: len(DEMO_PALETTE)] = DEMO_PALETTE
    palette[IGNORE_INDEX] = _BORDER_COLOUR
    image = Image.fromarray(label)
    image.putpalette(palette.tobytes())
    return image


def generate_demo_dataset(
    root: str, num_train: int = 400, num_val: int = 50, image_size: int = 96, seed: int = 0
) -> None:
    """Write the demo set in VOC layout; the same arguments always give the same bytes.

    Image sides vary in [7/8, 9/8] * image_size so evaluation sees non-square sizes.
    """
    low, high = round(image_size * 7 / 8), round(image_size * 9 / 8)
    for folder in ("JPEGImages", "SegmentationClass", os.path.join("ImageSets", "Segmentation")):
        os.makedirs(os.path.join(root, folder), exist_ok=True)
    for split_index, (split, count) in enumerate(zip(_SPLITS, (num_train, num_val))):
        ids = [f"{split}_{index:05d}" for index in range(count)]
        for index, image_id in enumerate(ids):
            rng = np.random.default_rng((seed, split_index, index))
            height, width = (int(side) for side in rng.integers(low, high + 1, size=2))
            image, label = _render(rng, height, width)
            jpeg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, 95])[1]
            with open(os.path.join(root, "JPEGImages", f"{image_id}.jpg"), "wb") as handle:
                handle.write(jpeg.tobytes())
            _label_png(label).save(os.path.join(root, "SegmentationClass", f"{image_id}.png"))
        with open(os.path.join(root, "ImageSets", "Segmentation", f"{split}.txt"), "w") as handle:
            handle.write("".join(f"{image_id}\n" for image_id in ids))


def _missing_file(root: str) -> str | None:
    """The first file a complete demo set would have but `root` lacks, else None."""
    for split in _SPLITS:
        split_file = os.path.join(root, "ImageSets", "Segmentation", f"{split}.txt")
        if not os.path.isfile(split_file):
            return split_file
        with open(split_file) as handle:
            ids = [line.strip() for line in handle if line.strip()]
        for image_id in ids:
            for path in (os.path.join(root, "JPEGImages", f"{image_id}.jpg"),
                         os.path.join(root, "SegmentationClass", f"{image_id}.png")):
                if not os.path.isfile(path):
                    return path
    return None


def ensure_demo_dataset(root: str, **kwargs) -> None:
    """Generate the demo set at `root` unless a complete one is there.

    It is written to a temporary sibling folder and renamed into place, so an interrupted
    run never leaves a half-written set behind and concurrent callers cannot clash. A complete
    set is never overwritten; a non-empty incomplete folder is reported, not deleted.
    """
    if os.path.isdir(root) and _missing_file(root) is None:
        return
    if os.path.isdir(root) and os.listdir(root):
        raise ParameterError("{root} is not a complete demo dataset ({missing} is missing); "
                             "delete the folder to regenerate it or fix {data_root}",
                             root=root, missing=_missing_file(root))
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(root))}.tmp-",
                               dir=parent)
    os.chmod(staging, 0o755)
    try:
        generate_demo_dataset(staging, **kwargs)
        if os.path.isdir(root) and not os.listdir(root):
            os.rmdir(root)
        try:
            os.rename(staging, root)
        except OSError:
            if not (os.path.isdir(root) and _missing_file(root) is None):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
