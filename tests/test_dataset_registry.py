"""The dataset registry drives every dataset, and 255 means "ignore" in one place only."""

import ast
import pathlib

import cv2
import numpy as np
import pytest
from PIL import Image

import pspnet_tf
from pspnet_tf.data.datasets import get_dataset
from pspnet_tf.data.descriptors import (
    DATASET_NAMES,
    DATASETS,
    IGNORE_INDEX,
    DatasetDescriptor,
    dataset_classes,
    voc_palette,
)
from pspnet_tf.data.layouts import voc_samples
from pspnet_tf.errors import UserError

HEIGHT, WIDTH = 6, 8
# Raw label values on disk; each tree below says which train ids they must become.
RAW = np.array([[0, 1, 2, 7, 8, 26, 33, 255]] * HEIGHT, np.uint8)


def _write(path: pathlib.Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.ndim == 3:
        assert cv2.imwrite(str(path), array)
    else:
        Image.fromarray(array).save(path)


def _image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def _voc(root: pathlib.Path, num_classes: int) -> tuple[str, np.ndarray]:
    label = np.where(RAW < num_classes, RAW, IGNORE_INDEX).astype(np.uint8)
    _write(root / "JPEGImages" / "a.jpg", _image())
    _write(root / "SegmentationClass" / "a.png", label)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("a\n")
    return "train", label


def _ade20k(root: pathlib.Path) -> tuple[str, np.ndarray]:
    _write(root / "images" / "training" / "a.jpg", _image())
    _write(root / "annotations" / "training" / "a.png", RAW)
    return "training", np.where((RAW == 0) | (RAW == 255), 255, RAW.astype(int) - 1)


def _cityscapes(root: pathlib.Path) -> tuple[str, np.ndarray]:
    stem = "x_000000_000000"
    _write(root / "leftImg8bit" / "train" / "x" / f"{stem}_leftImg8bit.png", _image())
    _write(root / "gtFine" / "train" / "x" / f"{stem}_gtFine_labelIds.png", RAW)
    train_ids = {7: 0, 8: 1, 26: 13, 33: 18}
    return "train", np.vectorize(lambda raw: train_ids.get(int(raw), 255))(RAW)


def _folder(root: pathlib.Path) -> tuple[str, np.ndarray]:
    (root / "classes.txt").write_text("background,0,0,0\nroad\t128,64,128\ncar, 0, 0, 142\n")
    label = np.where(RAW < 3, RAW, IGNORE_INDEX).astype(np.uint8)
    _write(root / "images" / "train" / "a.png", _image())
    _write(root / "masks" / "train" / "a.png", label)
    return "train", label


# One tiny tree per registered dataset: a dataset added to the registry without one here
# fails test_every_registered_dataset_reads_its_layout.
TREES = {
    "voc": lambda root: _voc(root, 21),
    "demo": lambda root: _voc(root, 5),
    "ade20k": _ade20k,
    "cityscapes": _cityscapes,
    "folder": _folder,
}


def test_dataset_names_are_the_registry():
    assert DATASET_NAMES == tuple(DATASETS) == ("voc", "demo", "ade20k", "cityscapes", "folder")
    assert all(DATASETS[name].name == name for name in DATASET_NAMES)
    with pytest.raises(TypeError):
        DATASETS["coco"] = DATASETS["voc"]  # read-only: every entry point sees the same set


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_every_registered_dataset_reads_its_layout(tmp_path, name):
    split, expected = TREES[name](tmp_path)
    dataset = get_dataset(name, str(tmp_path), split)
    names, palette = dataset_classes(name, str(tmp_path))
    assert dataset.class_names == names and names
    assert palette.shape == (len(names), 3) and palette.dtype == np.uint8
    np.testing.assert_array_equal(dataset.palette, palette)
    assert len(dataset.samples) == 1
    image, label = dataset.load(0)
    assert image.shape == (HEIGHT, WIDTH, 3)
    np.testing.assert_array_equal(label, expected)


def test_folder_classes_come_from_classes_txt(tmp_path):
    _folder(tmp_path)
    names, palette = dataset_classes("folder", str(tmp_path))
    assert names == ("background", "road", "car")
    np.testing.assert_array_equal(palette, [[0, 0, 0], [128, 64, 128], [0, 0, 142]])


@pytest.mark.parametrize("call", [
    lambda root: get_dataset("coco", root, "train"),
    lambda root: dataset_classes("coco", root),
])
def test_unknown_dataset_is_one_line_listing_the_registry(tmp_path, call):
    with pytest.raises(UserError) as error:
        call(str(tmp_path))
    assert str(error.value) == ("unknown dataset 'coco'; choose one of voc, demo, ade20k, "
                                "cityscapes, folder")


def test_class_count_is_checked_when_given(tmp_path):
    assert len(dataset_classes("cityscapes", str(tmp_path), num_classes=19)[0]) == 19
    with pytest.raises(UserError, match=r"^num_classes=20 but dataset cityscapes has 19 "
                                        r"classes; set num_classes=19 or the matching"):
        dataset_classes("cityscapes", str(tmp_path), num_classes=20)


def test_descriptor_rejects_a_palette_that_does_not_fit_its_classes():
    DatasetDescriptor("toy", voc_samples, ("a", "b"), voc_palette(2))
    with pytest.raises(ValueError, match="palette"):
        DatasetDescriptor("toy", voc_samples, ("a", "b"), voc_palette(3))
    with pytest.raises(ValueError, match="classes_from_root"):
        DatasetDescriptor("toy", voc_samples, ("a", "b"))


def _ignore_255s(tree: ast.AST) -> list[int]:
    """Lines where the code itself (not a docstring) uses 255 as the ignore label: a default
    or keyword of an `ignore...` parameter, an assignment to an `ignore...` name or into a
    `label...` array, a comparison with a label, padding a label, or a message saying so."""
    def named(node: ast.AST, word: str) -> bool:
        while isinstance(node, (ast.Subscript, ast.Attribute)):
            if isinstance(node, ast.Attribute) and word in node.attr.lower():
                return True
            node = node.value
        return isinstance(node, ast.Name) and word in node.id.lower()

    def is_255(node: ast.AST | None) -> bool:
        return isinstance(node, ast.Constant) and node.value == 255

    docstrings = {id(node.value) for node in ast.walk(tree)
                  if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)}
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.arguments):
            parameters = node.posonlyargs + node.args
            defaults = [None] * (len(parameters) - len(node.defaults)) + node.defaults
            pairs = list(zip(parameters, defaults)) + list(zip(node.kwonlyargs,
                                                               node.kw_defaults))
            hits = [default for parameter, default in pairs
                    if "ignore" in parameter.arg.lower() and is_255(default)]
        elif isinstance(node, ast.keyword):
            hits = [node.value] if (node.arg or "").lower() in {
                "ignore_index", "ignore_label", "constant_values"} and is_255(node.value) else []
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            hits = [node.value] if is_255(node.value) and any(
                named(target, "ignore") or named(target, "label") for target in targets) else []
        elif isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            hits = [operand for operand in operands if is_255(operand)] if any(
                named(operand, "label") for operand in operands) else []
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and id(node) not in docstrings):
            text = node.value.lower()
            hits = [node] if "255" in text and "ignor" in text else []
        else:
            hits = []
        lines.extend(hit.lineno for hit in hits)
    return sorted(lines)


def test_only_the_data_layer_says_255_means_ignore():
    package = pathlib.Path(pspnet_tf.__file__).parent
    found = {str(path.relative_to(package)): _ignore_255s(ast.parse(path.read_text()))
             for path in sorted(package.rglob("*.py"))}
    definition = (package / "data" / "descriptors.py").read_text().splitlines()
    assert {path: lines for path, lines in found.items() if lines} == {
        "data/descriptors.py": [definition.index("IGNORE_INDEX = 255") + 1]}


def test_the_ignore_finder_finds_what_the_old_code_wrote():
    old = ('def f(labels, ignore_index: int = 255, *, other=1):\n'
           '    label[border] = 255\n'
           '    keep = labels != 255\n'
           '    tf.pad(label, paddings, constant_values=255)\n'
           '    msg = f"{n} classes (0..{n - 1}, 255 = ignore)"\n'
           '    IGNORE_INDEX = 255\n'
           '    pixels = np.clip(image, 0, 255)\n'
           '    """255 in a docstring is prose."""\n')
    assert _ignore_255s(ast.parse(old)) == [1, 2, 3, 4, 5, 6]
