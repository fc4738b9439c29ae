"""Dataset layouts, label maps and the checks that turn bad data into one-line UserErrors."""

import io
import os

import cv2
import numpy as np
import pytest
from PIL import Image

from pspnet_tf.data.datasets import get_dataset
from pspnet_tf.errors import UserError

HEIGHT, WIDTH = 16, 20


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def _write_png(path, array: np.ndarray, palette: bool = False) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = Image.fromarray(array)
    if palette:
        colours = np.random.default_rng(1).integers(0, 256, (256, 3), dtype=np.uint8)
        image.putpalette(colours.tobytes())
    image.save(path)


def _write_rgb(path, rgb: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ok = cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok


def _voc_tree(root, labels: dict[str, np.ndarray], split: str = "train",
              label_dir: str = "SegmentationClass") -> None:
    """A VOC2012-layout folder: one JPEG and one palette label per id, plus the split list."""
    for index, (image_id, label) in enumerate(labels.items()):
        _write_rgb(root / "JPEGImages" / f"{image_id}.jpg", _image(index))
        _write_png(root / label_dir / f"{image_id}.png", label, palette=True)
    split_file = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    split_file.parent.mkdir(parents=True, exist_ok=True)
    split_file.write_text("".join(f"{image_id}\n" for image_id in labels) + "\n")


def _random_label(seed: int, num_classes: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, num_classes, (HEIGHT, WIDTH)).astype(np.uint8)
    label[0, :] = 255
    return label


def test_voc_reads_palette_indices_in_split_order(tmp_path):
    labels = {"b_2": _random_label(0, 21), "a_1": _random_label(1, 21)}
    _voc_tree(tmp_path, labels)
    dataset = get_dataset("voc", str(tmp_path), "train")
    assert dataset.num_classes == 21 and dataset.palette.shape == (21, 3)
    assert [os.path.basename(s.image_path) for s in dataset.samples] == ["b_2.jpg", "a_1.jpg"]
    for index, expected in enumerate(labels.values()):
        image, label = dataset.load(index)
        assert image.shape == (HEIGHT, WIDTH, 3) and image.dtype == np.uint8
        np.testing.assert_array_equal(label, expected)


def test_voc_palette_is_the_standard_colour_map(tmp_path):
    _voc_tree(tmp_path, {"x": _random_label(0, 21)})
    dataset = get_dataset("voc", str(tmp_path), "train")

    def reference(index):
        colour = [0, 0, 0]
        for bit in range(8):
            for channel in range(3):
                colour[channel] |= ((index >> (3 * bit + channel)) & 1) << (7 - bit)
        return colour

    np.testing.assert_array_equal(dataset.palette, [reference(i) for i in range(21)])
    assert dataset.class_names[0] == "background" and dataset.class_names[-1] == "tvmonitor"


def test_voc_trainaug_reads_sbd_labels(tmp_path):
    _voc_tree(tmp_path, {"x": _random_label(3, 21)}, split="trainaug",
              label_dir="SegmentationClassAug")
    dataset = get_dataset("voc", str(tmp_path), "trainaug")
    assert "SegmentationClassAug" in dataset.samples[0].label_path
    np.testing.assert_array_equal(dataset.load(0)[1], _random_label(3, 21))


def test_ade20k_reduces_zero_label(tmp_path):
    raw = np.random.default_rng(0).integers(0, 151, (HEIGHT, WIDTH)).astype(np.uint8)
    raw[0, :4] = [0, 1, 150, 255]
    for stem in ("ADE_val_2", "ADE_val_1"):
        _write_rgb(tmp_path / "images" / "validation" / f"{stem}.jpg", _image(0))
        _write_png(tmp_path / "annotations" / "validation" / f"{stem}.png", raw)
    dataset = get_dataset("ade20k", str(tmp_path), "validation")
    assert dataset.num_classes == 150 and dataset.palette.shape == (150, 3)
    assert [os.path.basename(s.image_path) for s in dataset.samples] == [
        "ADE_val_1.jpg", "ADE_val_2.jpg"]
    expected = np.where((raw == 0) | (raw == 255), 255, raw.astype(int) - 1)
    np.testing.assert_array_equal(dataset.load(0)[1], expected)
    assert len(get_dataset("ade20k", str(tmp_path), "val").samples) == 2


def test_cityscapes_maps_label_ids_to_train_ids(tmp_path):
    spec_map = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
    raw = np.arange(HEIGHT * WIDTH).reshape(HEIGHT, WIDTH).astype(np.uint8) % 40
    raw[-1, -1] = 255
    for city, stem in (("zurich", "zurich_000000_000019"), ("aachen", "aachen_000001_000019")):
        _write_rgb(tmp_path / "leftImg8bit" / "train" / city / f"{stem}_leftImg8bit.png",
                   _image(0))
        _write_png(tmp_path / "gtFine" / "train" / city / f"{stem}_gtFine_labelIds.png", raw)
    dataset = get_dataset("cityscapes", str(tmp_path), "train")
    assert dataset.num_classes == 19 and dataset.palette.shape == (19, 3)
    assert dataset.samples[0].label_path.endswith("aachen_000001_000019_gtFine_labelIds.png")
    expected = np.vectorize(lambda value: spec_map.get(int(value), 255))(raw)
    np.testing.assert_array_equal(dataset.load(0)[1], expected)


@pytest.mark.parametrize("mode", ["gray", "rgba", "gray16", "rgb16"])
def test_image_formats_load_as_rgb_uint8(tmp_path, mode):
    _voc_tree(tmp_path, {"x": _random_label(0, 21)})
    rgb = _image(7)
    path = tmp_path / "JPEGImages" / "x.png"
    if mode == "gray":
        Image.fromarray(rgb[..., 0]).save(path)
        expected = np.repeat(rgb[..., :1], 3, axis=2)
    elif mode == "rgba":
        Image.fromarray(np.dstack([rgb, np.full((HEIGHT, WIDTH), 9, np.uint8)])).save(path)
        expected = rgb
    elif mode == "gray16":
        cv2.imwrite(str(path), rgb[..., 0].astype(np.uint16) * 257)
        expected = np.repeat(rgb[..., :1], 3, axis=2)
    else:
        cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)
        expected = rgb
    dataset = get_dataset("voc", str(tmp_path), "train")
    image = dataset.read_image(str(path))
    assert image.shape == (HEIGHT, WIDTH, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, expected)


def test_exif_orientation_is_applied(tmp_path):
    _voc_tree(tmp_path, {"x": _random_label(0, 21)})
    rgb = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    rgb[:, :4] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", exif=exif.tobytes(), quality=100)
    path = tmp_path / "rotated.jpg"
    path.write_bytes(buffer.getvalue())
    image = get_dataset("voc", str(tmp_path), "train").read_image(str(path))
    assert image.shape == (WIDTH, HEIGHT, 3)
    assert image[:4].mean() > 200 and image[-4:].mean() < 50


def _raises(match: str):
    return pytest.raises(UserError, match=match)


def test_missing_data_root_names_the_parameter(tmp_path):
    with _raises("fix data_root") as error:
        get_dataset("voc", str(tmp_path / "nowhere"), "train")
    assert "nowhere" in str(error.value)


def test_unknown_dataset_lists_the_choices(tmp_path):
    with _raises("cityscapes"):
        get_dataset("coco", str(tmp_path), "train")


def test_missing_split_file_is_named(tmp_path):
    _voc_tree(tmp_path, {"x": _random_label(0, 21)})
    with _raises("val.txt"):
        get_dataset("voc", str(tmp_path), "val")


def test_empty_split_is_reported(tmp_path):
    _voc_tree(tmp_path, {})
    with _raises("train.txt is empty"):
        get_dataset("voc", str(tmp_path), "train")


def test_empty_ade20k_folder_is_reported(tmp_path):
    (tmp_path / "images" / "training").mkdir(parents=True)
    with _raises("holds no .jpg"):
        get_dataset("ade20k", str(tmp_path), "training")


def test_missing_files_are_counted_and_named(tmp_path):
    _voc_tree(tmp_path, {f"id{i}": _random_label(i, 21) for i in range(5)})
    for image_id in ("id1", "id3"):
        os.remove(tmp_path / "JPEGImages" / f"{image_id}.jpg")
    os.remove(tmp_path / "SegmentationClass" / "id4.png")
    with _raises("3 listed image/label files are missing") as error:
        get_dataset("voc", str(tmp_path), "train")
    assert "id1.jpg" in str(error.value) and "id3.jpg" in str(error.value)


def test_corrupt_image_is_named(tmp_path):
    _voc_tree(tmp_path, {"x": _random_label(0, 21)})
    (tmp_path / "JPEGImages" / "x.jpg").write_bytes(b"not a jpeg")
    with _raises("x.jpg"):
        get_dataset("voc", str(tmp_path), "train").load(0)


def test_corrupt_label_is_named(tmp_path):
    _voc_tree(tmp_path, {"x": _random_label(0, 21)})
    (tmp_path / "SegmentationClass" / "x.png").write_bytes(b"\x89PNG broken")
    with _raises("x.png"):
        get_dataset("voc", str(tmp_path), "train").load(0)


def test_colour_label_is_rejected(tmp_path):
    _voc_tree(tmp_path, {"x": _random_label(0, 21)})
    _write_png(tmp_path / "SegmentationClass" / "x.png", _image(1))
    with _raises("x.png.*RGB"):
        get_dataset("voc", str(tmp_path), "train").load(0)


def test_size_mismatch_names_both_files(tmp_path):
    _voc_tree(tmp_path, {"x": np.zeros((HEIGHT + 1, WIDTH), np.uint8)})
    with _raises("x.png") as error:
        get_dataset("voc", str(tmp_path), "train").load(0)
    assert "x.jpg" in str(error.value) and "must match" in str(error.value)


def test_out_of_range_label_is_named(tmp_path):
    label = _random_label(0, 21)
    label[3, 3] = 21
    _voc_tree(tmp_path, {"x": label})
    with _raises("x.png.*21"):
        get_dataset("voc", str(tmp_path), "train").load(0)
