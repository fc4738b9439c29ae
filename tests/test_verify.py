"""verify lists every problem of a dataset with its file, counts pixels and changes nothing."""

import os

import numpy as np
import pytest
from helpers import run_command
from PIL import Image

from pspnet_tf.data.datasets import open_dataset
from pspnet_tf.data.verification import format_report, verify, verify_split

HEIGHT, WIDTH = 6, 9


def _voc_tree(root, split: str, count: int) -> list[np.ndarray]:
    """A VOC-layout split of `count` good samples; returns their labels."""
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    labels = []
    for index in range(count):
        rng = np.random.default_rng(index)
        Image.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)).save(
            root / "JPEGImages" / f"{split}{index}.jpg")
        label = rng.integers(0, 21, (HEIGHT, WIDTH)).astype(np.uint8)
        label[0] = 255
        Image.fromarray(label).save(root / "SegmentationClass" / f"{split}{index}.png")
        labels.append(label)
    (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text(
        "".join(f"{split}{index}\n" for index in range(count)))
    return labels


def _break_samples(root) -> None:
    """train0 good; train1 image missing; train2 label missing; train3 corrupt image;
    train4 label of another size; train5 label value 40."""
    os.remove(root / "JPEGImages" / "train1.jpg")
    os.remove(root / "SegmentationClass" / "train2.png")
    (root / "JPEGImages" / "train3.jpg").write_bytes(b"not a jpeg")
    Image.fromarray(np.zeros((HEIGHT + 1, WIDTH), np.uint8)).save(
        root / "SegmentationClass" / "train4.png")
    Image.fromarray(np.full((HEIGHT, WIDTH), 40, np.uint8)).save(
        root / "SegmentationClass" / "train5.png")


def _snapshot(root) -> dict[str, bytes]:
    return {str(path): path.read_bytes() for path in root.rglob("*") if path.is_file()}


def test_clean_split_reports_counts_and_pixel_frequencies(tmp_path):
    labels = _voc_tree(tmp_path, "val", 3)
    report = verify_split(open_dataset("voc", str(tmp_path), "val"))
    assert report.num_samples == 3 and report.problems == []
    stacked = np.stack(labels)
    np.testing.assert_array_equal(report.pixel_counts,
                                  [(stacked == c).sum() for c in range(21)])
    assert report.ignored_pixels == (stacked == 255).sum()
    text = format_report(report)
    assert "split val: 3 samples, 0 problems" in text and "aeroplane" in text


def test_every_problem_is_listed_with_its_file(tmp_path):
    _voc_tree(tmp_path, "train", 6)
    _break_samples(tmp_path)
    [report] = verify("voc", str(tmp_path), ["train"], num_classes=21)
    assert len(report.problems) == 5
    expected = ["missing file", "train1.jpg", "missing file", "train2.png", "train3.jpg",
                "train4.png", "train5.png"]
    joined = "\n".join(report.problems)
    assert all(part in joined for part in expected)
    assert "holds train ids [40]" in report.problems[4]
    assert "is 9x7 but image" in report.problems[3]


def test_missing_split_and_wrong_class_count_are_problems(tmp_path):
    _voc_tree(tmp_path, "train", 1)
    train, val = verify("voc", str(tmp_path), ["train", "val"], num_classes=5)
    assert train.problems[0].startswith("--num_classes=5 but voc has 21 classes")
    assert val.num_samples == 0 and "val.txt not found" in val.problems[0]


def test_command_line_exits_non_zero_and_changes_nothing(tmp_path):
    _voc_tree(tmp_path, "train", 6)
    _voc_tree(tmp_path, "val", 2)
    _break_samples(tmp_path)
    before = _snapshot(tmp_path)
    verify_command = ["--dataset=voc", f"--data_root={tmp_path}"]
    result = run_command("pspnet-verify", *verify_command)
    assert result.returncode == 2
    assert "split train: 6 samples, 5 problems" in result.stdout
    assert "split val: 2 samples, 0 problems" in result.stdout
    assert result.stderr.strip().splitlines()[-1].startswith("error: 5 problems found")
    assert _snapshot(tmp_path) == before
    clean = run_command("pspnet-verify", *verify_command, "--splits=val")
    assert clean.returncode == 0, clean.stderr[-2000:]
    assert "no problems found" in clean.stdout


def test_verify_command_takes_the_class_count_from_the_dataset(tmp_path):
    """pspnet-verify --dataset=cityscapes needs no --num_classes (19);
    an explicit wrong one is still reported."""
    for split in ("train", "val"):
        for folder in ("leftImg8bit", "gtFine"):
            os.makedirs(tmp_path / folder / split / "city")
        Image.fromarray(np.zeros((HEIGHT, WIDTH, 3), np.uint8)).save(
            tmp_path / "leftImg8bit" / split / "city" / "city_0_0_leftImg8bit.png")
        Image.fromarray(np.full((HEIGHT, WIDTH), 7, np.uint8)).save(  # labelId 7 = road
            tmp_path / "gtFine" / split / "city" / "city_0_0_gtFine_labelIds.png")
    command = ["--dataset=cityscapes", f"--data_root={tmp_path}"]
    result = run_command("pspnet-verify", *command)
    assert result.returncode == 0, result.stderr
    assert "no problems found" in result.stdout
    wrong = run_command("pspnet-verify", *command, "--num_classes=21")
    assert wrong.returncode == 2
    assert "--num_classes=21 but cityscapes has 19 classes" in wrong.stdout


def _folder_masks(root, masks: list[np.ndarray], classes: str) -> str:
    """A folder-layout train split with one random image per mask; returns the data root."""
    (root / "images" / "train").mkdir(parents=True)
    (root / "masks" / "train").mkdir(parents=True)
    (root / "classes.txt").write_text(classes)
    for index, mask in enumerate(masks):
        rng = np.random.default_rng(index)
        Image.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)).save(
            root / "images" / "train" / f"s{index}.png")
        Image.fromarray(mask).save(root / "masks" / "train" / f"s{index}.png")
    return str(root)


def _folder_report(root, masks: list[np.ndarray], classes: str):
    return verify_split(open_dataset("folder", _folder_masks(root, masks, classes), "train"))


def _half(low: int, high: int) -> np.ndarray:
    mask = np.full((HEIGHT, WIDTH), low, np.uint8)
    mask[:, WIDTH // 2:] = high
    return mask


def test_binary_0_255_masks_are_one_problem_naming_files_and_fix(tmp_path):
    report = _folder_report(tmp_path, [_half(0, 255)] * 5, "background\nroad\n")
    assert len(report.problems) == 1 and report.warnings == []
    problem = report.problems[0]
    assert "0/255 binary masks" in problem and "--mask_fix=binary" in problem
    assert "s0.png" in problem and "and 2 more" in problem


def test_binary_masks_with_foreground_ids_pass(tmp_path):
    report = _folder_report(tmp_path, [_half(0, 1)] * 3, "background\nroad\n")
    assert report.problems == [] and report.warnings == []


def test_colour_masks_are_one_problem(tmp_path):
    colour = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    colour[:, :3] = (128, 0, 0)
    report = _folder_report(tmp_path, [colour] * 4, "background\ncar\n")
    assert len(report.problems) == 1
    assert "4 masks are RGB colour images" in report.problems[0]
    assert "and 1 more" in report.problems[0] and "--mask_fix=colours" in report.problems[0]


def test_masks_of_only_zero_and_ignore_are_a_warning(tmp_path):
    masks = [_half(0, 255), _half(1, 2), _half(0, 255)]
    report = _folder_report(tmp_path, masks, "background\ncar\nperson\n")
    assert report.problems == []
    assert len(report.warnings) == 1 and "2 masks hold only class 0 and ignore" in \
        report.warnings[0] and "s0.png, " in report.warnings[0]
    assert "warning: 2 masks" in format_report(report)


def test_zero_in_every_mask_without_background_is_a_warning(tmp_path):
    masks = [_half(0, 1), _half(0, 2)]
    report = _folder_report(tmp_path, masks, "cat\ndog\nbird\n")
    assert report.problems == [] and len(report.warnings) == 1
    assert "class 0 ('cat')" in report.warnings[0]
    assert "--mask_fix=reduce_zero_label" in report.warnings[0]


def test_zero_in_every_mask_is_fine_with_a_background_class(tmp_path):
    report = _folder_report(tmp_path, [_half(0, 1), _half(0, 2)], "Background\ndog\nbird\n")
    assert report.problems == [] and report.warnings == []


def test_verify_command_fails_on_binary_0_255_masks(tmp_path):
    root = _folder_masks(tmp_path, [_half(0, 255)] * 2, "background\nroad\n")
    result = run_command("pspnet-verify", "--dataset=folder", f"--data_root={root}",
                         "--splits=train")
    assert result.returncode == 2
    assert "0/255 binary masks" in result.stdout


def test_training_start_check_samples_masks_and_refuses_binary_0_255(tmp_path):
    from pspnet_tf.data.verification import check_training_masks
    from pspnet_tf.errors import UserError

    root = _folder_masks(tmp_path, [_half(0, 255)] * 5, "background\nroad\n")
    dataset = open_dataset("folder", root, "train")
    with pytest.raises(UserError, match=r"checking 3 of 5 masks: every mask holds only 0 and"):
        check_training_masks(dataset, max_masks=3)


def test_training_start_check_returns_warnings(tmp_path):
    from pspnet_tf.data.verification import check_training_masks

    root = _folder_masks(tmp_path, [_half(0, 1), _half(0, 2)], "cat\ndog\nbird\n")
    warnings = check_training_masks(open_dataset("folder", root, "train"))
    assert len(warnings) == 1 and "class 0 ('cat')" in warnings[0]
    good = _folder_masks(tmp_path / "good", [_half(0, 1), _half(1, 2)], "cat\ndog\nbird\n")
    assert check_training_masks(open_dataset("folder", good, "train")) == []


def test_train_refuses_binary_0_255_masks_in_one_line_before_the_run_dir(tmp_path):
    from helpers import TINY, assert_refused_in_one_line

    root = _folder_masks(tmp_path / "data", [_half(0, 255)] * 2, "background\nroad\n")
    run_dir = tmp_path / "run"
    result = run_command("pspnet-train", *TINY, "--dataset=folder", f"--data_root={root}",
                         "--num_classes=2", "--train_split=train", "--val_split=train",
                         f"--run_dir={run_dir}")
    assert_refused_in_one_line(result, "0/255 binary masks")
    assert not run_dir.exists()
