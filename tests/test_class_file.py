"""classes.txt of the `folder` dataset: a class's id is its line number - 1, so blank lines
and names given twice are refused, by `verify` and when training starts, naming the lines."""

import numpy as np
import pytest
from PIL import Image

from pspnet_tf.config import ExperimentConfig
from pspnet_tf.data.descriptors import read_class_file
from pspnet_tf.data.verification import verify
from pspnet_tf.errors import UserError
from pspnet_tf.training.trainer import train


def _folder_dataset(root, classes: str) -> None:
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images" / split / "a.png")
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "masks" / split / "a.png")
    (root / "classes.txt").write_text(classes)


@pytest.mark.parametrize("text, message", [
    ("road\n\ncar\n", "line 2 is blank"),
    ("road\n  \ncar\n\t\nsky\n", "lines 2, 4 are blank"),
    ("road\ncar\nsky\ncar\t1,2,3\n", "lines 2, 4 all name 'car'"),
    ("a\n\na\n", "line 2 is blank; lines 1, 3 all name 'a'"),
])
def test_blank_lines_and_duplicates_are_named_by_line(tmp_path, text, message):
    (tmp_path / "classes.txt").write_text(text)
    with pytest.raises(UserError, match=message) as caught:
        read_class_file(str(tmp_path / "classes.txt"))
    assert "class id = line number - 1" in str(caught.value)


def test_blank_lines_after_the_last_class_keep_the_ids(tmp_path):
    (tmp_path / "classes.txt").write_text("road\ncar\n\n   \n")
    names, _ = read_class_file(str(tmp_path / "classes.txt"))
    assert names == ("road", "car")


def test_verify_reports_the_class_file(tmp_path):
    _folder_dataset(tmp_path, "road\n\ncar\n")
    [report] = verify("folder", str(tmp_path), ["train"])
    assert len(report.problems) == 1 and "line 2 is blank" in report.problems[0]


def test_training_stops_before_writing_anything(tmp_path):
    _folder_dataset(tmp_path / "data", "road\ncar\nroad\n")
    config = ExperimentConfig.from_fields(dataset="folder", data_root=str(tmp_path / "data"),
                                          num_classes=3, train_split="train", val_split="val",
                                          run_dir=str(tmp_path / "run"))
    with pytest.raises(UserError, match="lines 1, 3 all name 'road'"):
        train(config)
    assert not (tmp_path / "run").exists()
