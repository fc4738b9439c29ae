"""pspnet-prepare folder_masks: fixed masks written into a NEW folder, originals untouched."""

import numpy as np
import pytest
from helpers import run_command
from PIL import Image

from pspnet_tf.data.datasets import get_dataset
from pspnet_tf.data.preparation import prepare_folder_masks
from pspnet_tf.data.verification import verify_split
from pspnet_tf.errors import UserError

HEIGHT, WIDTH = 5, 7


def _dataset(root, masks: dict[str, list[np.ndarray]], classes: str) -> str:
    """A folder dataset with the given masks per split and random images; returns its root."""
    root.mkdir()
    (root / "classes.txt").write_text(classes)
    for split, split_masks in masks.items():
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        for index, mask in enumerate(split_masks):
            image = np.random.default_rng(index).integers(0, 256, (HEIGHT, WIDTH, 3), np.uint8)
            Image.fromarray(image).save(root / "images" / split / f"m{index}.jpg")
            Image.fromarray(mask).save(root / "masks" / split / f"m{index}.png")
    return str(root)


def _snapshot(folder) -> dict[str, bytes]:
    return {str(path): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def _ids(path) -> np.ndarray:
    with Image.open(path) as mask:
        assert mask.mode == "L"
        return np.array(mask)


def test_binary_fix_turns_255_into_1_and_the_copy_verifies(tmp_path):
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask[:, 3:] = 255
    source = _dataset(tmp_path / "src", {"train": [mask, mask], "val": [mask]},
                      "background\ncrack\n")
    before = _snapshot(tmp_path / "src")
    counts = prepare_folder_masks(source, str(tmp_path / "out"), "binary")
    assert counts["images"] == 3 and counts["written"] == 3
    assert _snapshot(tmp_path / "src") == before
    np.testing.assert_array_equal(_ids(tmp_path / "out" / "masks" / "train" / "m0.png"),
                                  mask // 255)
    assert (tmp_path / "out" / "images" / "val" / "m0.jpg").read_bytes() == \
        (tmp_path / "src" / "images" / "val" / "m0.jpg").read_bytes()
    assert (tmp_path / "out" / "classes.txt").read_text() == "background\ncrack\n"
    report = verify_split(get_dataset("folder", str(tmp_path / "out"), "train"))
    assert report.problems == [] and report.pixel_counts.tolist() == [2 * 15, 2 * 20]


def test_colour_fix_maps_classes_txt_colours_to_ids(tmp_path):
    colour = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    colour[:2] = (128, 64, 128)
    colour[4] = (0, 0, 142)
    source = _dataset(tmp_path / "src", {"train": [colour]},
                      "background\t0,0,0\nroad\t128,64,128\ncar\t0,0,142\n")
    prepare_folder_masks(source, str(tmp_path / "out"), "colours")
    expected = np.zeros((HEIGHT, WIDTH), np.uint8)
    expected[:2], expected[4] = 1, 2
    np.testing.assert_array_equal(_ids(tmp_path / "out" / "masks" / "train" / "m0.png"), expected)


def test_colour_fix_refuses_an_unlisted_colour_naming_file_and_colour(tmp_path):
    colour = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    colour[0, 0] = (9, 8, 7)
    source = _dataset(tmp_path / "src", {"train": [colour]}, "background\t0,0,0\nroad\t1,2,3\n")
    with pytest.raises(UserError, match=r"m0.png holds colours 9,8,7 that classes.txt"):
        prepare_folder_masks(source, str(tmp_path / "out"), "colours")


def test_reduce_zero_label_fix_shifts_ids(tmp_path):
    mask = np.array([[0, 1, 2, 3, 255, 0, 1]] * HEIGHT, np.uint8)
    source = _dataset(tmp_path / "src", {"train": [mask]}, "a\nb\nc\n")
    prepare_folder_masks(source, str(tmp_path / "out"), "reduce_zero_label")
    np.testing.assert_array_equal(_ids(tmp_path / "out" / "masks" / "train" / "m0.png"),
                                  [[255, 0, 1, 2, 255, 255, 0]] * HEIGHT)


def test_an_existing_non_empty_output_is_refused_and_kept(tmp_path):
    source = _dataset(tmp_path / "src", {"train": [np.zeros((HEIGHT, WIDTH), np.uint8)]}, "a\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="exists and is not empty"):
        prepare_folder_masks(source, str(tmp_path / "out"), "binary")
    with pytest.raises(UserError, match="not empty"):
        prepare_folder_masks(source, source, "binary")
    assert _snapshot(tmp_path / "out") == {str(tmp_path / "out" / "keep.txt"): b"mine"}


def test_folder_masks_command(tmp_path):
    mask = np.full((HEIGHT, WIDTH), 255, np.uint8)
    mask[0] = 0
    source = _dataset(tmp_path / "src", {"train": [mask]}, "background\nfg\n")
    result = run_command("pspnet-prepare", "folder_masks", f"--data_root={source}",
                         f"--output={tmp_path / 'out'}", "--mask_fix=binary")
    assert result.returncode == 0, result.stderr
    assert "folder_masks: 1 images, 1 label files written" in result.stdout
    assert _ids(tmp_path / "out" / "masks" / "train" / "m0.png").max() == 1


def test_reduce_zero_label_config_shifts_labels_while_reading(tmp_path):
    from pspnet_tf.config import ExperimentConfig
    from pspnet_tf.data.splits import load_split

    mask = np.array([[0, 1, 2, 3, 255, 0, 1]] * HEIGHT, np.uint8)
    source = _dataset(tmp_path / "src", {"train": [mask]}, "a\nb\nc\n")
    default = ExperimentConfig().replace(dataset="folder", data_root=source, num_classes=3)
    assert default.data.reduce_zero_label is False
    with pytest.raises(UserError, match=r"train ids \[3\]"):  # the default reads ids as stored
        load_split(default, "train").load(0)
    shifted = default.replace(reduce_zero_label=True)
    _, label = load_split(shifted, "train").load(0)
    np.testing.assert_array_equal(label, [[255, 0, 1, 2, 255, 255, 0]] * HEIGHT)
    assert '"reduce_zero_label": true' in shifted.to_json()


def test_verify_command_reads_with_reduce_zero_label(tmp_path):
    mask = np.array([[0, 1, 2, 3, 255, 0, 1]] * HEIGHT, np.uint8)
    source = _dataset(tmp_path / "src", {"train": [mask, mask]}, "a\nb\nc\n")
    command = ("pspnet-verify", "--dataset=folder", f"--data_root={source}", "--splits=train")
    assert run_command(*command).returncode == 2
    result = run_command(*command, "--reduce_zero_label")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "warning" not in result.stdout
