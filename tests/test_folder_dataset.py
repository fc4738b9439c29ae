"""The generic "folder" dataset: images/{split}/, masks/{split}/ matched by stem, classes.txt."""

import numpy as np
import pytest
from PIL import Image

from pspnet_tf.data.datasets import get_dataset
from pspnet_tf.data.descriptors import read_class_file, voc_palette
from pspnet_tf.errors import UserError

HEIGHT, WIDTH = 5, 7


def _folder_tree(root, split: str, stems_and_types: dict[str, str], classes: str) -> dict:
    """Writes one image of the given type and one class-id mask per stem; returns the masks."""
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "masks" / split).mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text(classes)
    masks = {}
    for seed, (stem, extension) in enumerate(stems_and_types.items()):
        rng = np.random.default_rng(seed)
        Image.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)).save(
            root / "images" / split / f"{stem}.{extension}")
        masks[stem] = rng.integers(0, 3, (HEIGHT, WIDTH)).astype(np.uint8)
        masks[stem][0, 0] = 255
        Image.fromarray(masks[stem]).save(root / "masks" / split / f"{stem}.png")
    return masks


def test_folder_dataset_matches_masks_by_stem(tmp_path):
    masks = _folder_tree(tmp_path, "train", {"b": "jpg", "a": "png", "c": "JPEG"},
                         "road\ncar\nsky\n")
    (tmp_path / "images" / "train" / "notes.txt").write_text("not an image")
    dataset = get_dataset("folder", str(tmp_path), "train")
    assert dataset.class_names == ("road", "car", "sky")
    np.testing.assert_array_equal(dataset.palette, voc_palette(3))
    assert [sample.image_path.rsplit("/", 1)[1] for sample in dataset.samples] == [
        "a.png", "b.jpg", "c.JPEG"]
    for index, stem in enumerate("abc"):
        image, label = dataset.load(index)
        assert image.shape == (HEIGHT, WIDTH, 3)
        np.testing.assert_array_equal(label, masks[stem])


def test_class_file_colours_after_tab_or_comma(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("background\t0,0,0\ntraffic sign, 220, 220,0\n\n")
    names, palette = read_class_file(str(path))
    assert names == ("background", "traffic sign")
    np.testing.assert_array_equal(palette, [[0, 0, 0], [220, 220, 0]])


@pytest.mark.parametrize("text, message", [
    ("", "is empty"),
    ("a\t0,0,0\nb\n", "colours for 1 of 2 classes"),
    ("a\t0,300,0\n", "not three values 0..255"),
])
def test_bad_class_files_are_named(tmp_path, text, message):
    (tmp_path / "classes.txt").write_text(text)
    with pytest.raises(UserError, match=message):
        read_class_file(str(tmp_path / "classes.txt"))


def test_missing_mask_and_missing_class_file_are_reported(tmp_path):
    _folder_tree(tmp_path, "val", {"x": "png", "y": "png"}, "a\nb\nc\n")
    (tmp_path / "masks" / "val" / "y.png").unlink()
    with pytest.raises(UserError, match=r"1 listed image/label files are missing.*y\.png"):
        get_dataset("folder", str(tmp_path), "val")
    (tmp_path / "classes.txt").unlink()
    with pytest.raises(UserError, match="classes.txt not found"):
        get_dataset("folder", str(tmp_path), "val")


def test_two_images_with_one_stem_are_rejected(tmp_path):
    _folder_tree(tmp_path, "train", {"x": "png"}, "a\nb\nc\n")
    Image.new("RGB", (WIDTH, HEIGHT)).save(tmp_path / "images" / "train" / "x.jpg")
    with pytest.raises(UserError, match="several images named x"):
        get_dataset("folder", str(tmp_path), "train")


def test_mask_value_beyond_the_class_list_is_named(tmp_path):
    _folder_tree(tmp_path, "train", {"x": "png"}, "a\nb\n")
    with pytest.raises(UserError, match=r"x\.png holds train ids \[2\]"):
        get_dataset("folder", str(tmp_path), "train").load(0)
