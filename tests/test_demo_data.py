"""The synthetic demo set: deterministic, VOC-readable, VOC-like labels, learnable colours."""

import os

import numpy as np
import pytest
from PIL import Image

from pspnet_tf.data.datasets import get_dataset
from pspnet_tf.data.demo import DEMO_CLASS_NAMES, ensure_demo_dataset, generate_demo_dataset
from pspnet_tf.errors import UserError

from helpers import files_under

SMALL = {"num_train": 12, "num_val": 4, "image_size": 64}


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    generate_demo_dataset(str(root), **SMALL)
    return root


def test_same_seed_gives_same_bytes(demo_root, tmp_path):
    generate_demo_dataset(str(tmp_path / "again"), **SMALL)
    first, second = files_under(demo_root), files_under(tmp_path / "again")
    assert len(first) == 2 * (SMALL["num_train"] + SMALL["num_val"]) + 2
    assert first == second


def test_other_seed_gives_other_images(demo_root, tmp_path):
    generate_demo_dataset(str(tmp_path / "other"), seed=1, **SMALL)
    first, other = files_under(demo_root), files_under(tmp_path / "other")
    assert first.keys() == other.keys()
    assert sum(first[name] != other[name] for name in first) >= 2 * SMALL["num_train"]


def test_layout_reads_as_demo_dataset(demo_root):
    for split, count in (("train", SMALL["num_train"]), ("val", SMALL["num_val"])):
        dataset = get_dataset("demo", str(demo_root), split)
        assert len(dataset.samples) == count
        assert dataset.class_names == DEMO_CLASS_NAMES
        assert dataset.palette.shape == (len(DEMO_CLASS_NAMES), 3)
    with Image.open(dataset.samples[0].label_path) as label:
        assert label.mode == "P"


def test_labels_hold_several_classes_and_borders(demo_root):
    dataset = get_dataset("demo", str(demo_root), "train")
    seen = set()
    sizes = set()
    for index in range(len(dataset.samples)):
        image, label = dataset.load(index)
        values = set(np.unique(label).tolist())
        assert 255 in values and 0 in values and len(values - {0, 255}) >= 1
        seen |= values
        sizes.add(image.shape[:2])
    assert seen == set(range(len(DEMO_CLASS_NAMES))) | {255}
    low, high = 64 * 7 // 8, 64 * 9 // 8
    assert all(low <= side <= high for size in sizes for side in size)
    assert len(sizes) > 1 and any(height != width for height, width in sizes)


def test_borders_surround_objects(demo_root):
    """Like VOC, two different classes never touch: a 255 band separates them."""
    dataset = get_dataset("demo", str(demo_root), "train")
    for index in range(len(dataset.samples)):
        label = dataset.load(index)[1].astype(int)
        for a, b in ((label[:, 1:], label[:, :-1]), (label[1:], label[:-1])):
            touching = (a != b) & (a != 255) & (b != 255)
            assert not touching.any()


def test_classes_are_separable_by_colour(demo_root):
    """Each class has its own colour family: nearest class-mean colour labels most pixels."""
    dataset = get_dataset("demo", str(demo_root), "train")
    pixels, classes = [], []
    for index in range(len(dataset.samples)):
        image, label = dataset.load(index)
        keep = label != 255
        pixels.append(image[keep].astype(np.float32))
        classes.append(label[keep])
    pixels, classes = np.concatenate(pixels), np.concatenate(classes)
    means = np.stack([pixels[classes == c].mean(axis=0) for c in range(len(DEMO_CLASS_NAMES))])
    nearest = np.argmin(((pixels[:, None, :] - means[None]) ** 2).sum(axis=2), axis=1)
    for class_id in range(1, len(DEMO_CLASS_NAMES)):
        assert (nearest[classes == class_id] == class_id).mean() > 0.8


def test_ensure_generates_once_and_never_overwrites(tmp_path):
    root = tmp_path / "demo"
    ensure_demo_dataset(str(root), **SMALL)
    before = files_under(root)
    ensure_demo_dataset(str(root), num_train=3, num_val=1, image_size=32, seed=5)
    assert files_under(root) == before
    assert sorted(os.listdir(tmp_path)) == ["demo"]


def test_ensure_fills_an_empty_folder(tmp_path):
    (tmp_path / "demo").mkdir()
    ensure_demo_dataset(str(tmp_path / "demo"), num_train=2, num_val=1, image_size=32)
    assert len(get_dataset("demo", str(tmp_path / "demo"), "val").samples) == 1


def test_ensure_reports_an_incomplete_folder_without_deleting_it(tmp_path):
    root = tmp_path / "demo"
    generate_demo_dataset(str(root), num_train=2, num_val=1, image_size=32)
    os.remove(root / "JPEGImages" / "train_00001.jpg")
    with pytest.raises(UserError, match="train_00001.jpg"):
        ensure_demo_dataset(str(root))
    assert (root / "JPEGImages" / "train_00000.jpg").exists()
    assert sorted(os.listdir(tmp_path)) == ["demo"]
