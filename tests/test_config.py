"""Experiment config: flag parsing, flagfiles, and run-directory protection."""

import dataclasses
import glob
import json
import os

import pytest
from absl import flags

from pspnet_tf.config import ExperimentConfig, config_from_flags, define_flags, prepare_run_dir
from pspnet_tf.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture()
def parse():
    """Parses argv against a fresh flag registry, like an entry point would."""
    values = flags.FlagValues()
    define_flags(values)

    def parse_args(*args: str) -> ExperimentConfig:
        values(["prog", *args])
        return config_from_flags(values)

    return parse_args


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "*.cfg"))))
def test_every_flagfile_parses(parse, path):
    config = parse(f"--flagfile={path}")
    assert config.run_dir.endswith(os.path.basename(path)[:-4])


def test_seed_table_flagfiles_carry_the_published_recipe(parse):
    voc = parse(f"--flagfile={ROOT}/configs/voc_r101_d16.cfg")
    assert (voc.backbone, voc.output_stride, voc.num_classes) == ("resnet101_v1c", 16, 21)
    assert (voc.crop_size, voc.batch_size, voc.epochs) == ((512, 512), 16, 60)
    city = parse(f"--flagfile={ROOT}/configs/cityscapes_r50.cfg")
    assert (city.crop_size, city.scale, city.batch_size, city.epochs) == (
        (512, 1024), (2048, 1024), 8, 220)
    ade = parse(f"--flagfile={ROOT}/configs/ade20k_r50.cfg")
    assert (ade.num_classes, ade.epochs, ade.learning_rate) == (150, 130, 0.01)


def test_command_line_overrides_the_flagfile(parse):
    config = parse(f"--flagfile={ROOT}/configs/voc_r50.cfg", "--batch_size=8", "--crop_size=64,96")
    assert config.batch_size == 8 and config.crop_size == (64, 96)


@pytest.mark.parametrize("flag", ["--crop_size=512", "--scale=a,b", "--ratio_range=2.0,0.5",
                                  "--crop_size=0,5"])
def test_malformed_values_are_user_errors(parse, flag):
    with pytest.raises(UserError, match=flag.split("=")[0]):
        parse(flag)


def test_run_dir_is_created_then_resumed_only_with_the_same_config(tmp_path):
    config = ExperimentConfig(run_dir=str(tmp_path / "run"))
    assert prepare_run_dir(config) is False
    assert json.load(open(tmp_path / "run" / "config.json"))["epochs"] == config.epochs
    assert prepare_run_dir(config) is True
    assert prepare_run_dir(dataclasses.replace(config, checkpoint_every_steps=5)) is True
    # No checkpoint yet (the run stopped before one): a corrected command takes it over.
    assert prepare_run_dir(dataclasses.replace(config, epochs=3)) is False
    assert json.load(open(tmp_path / "run" / "config.json"))["epochs"] == 3
    os.makedirs(tmp_path / "run" / "checkpoints")
    (tmp_path / "run" / "checkpoints" / "ckpt-4.index").write_bytes(b"")
    with pytest.raises(UserError, match="learning_rate: 0.01 -> 0.02"):
        prepare_run_dir(dataclasses.replace(config, epochs=3, learning_rate=0.02))
    assert json.load(open(tmp_path / "run" / "config.json"))["learning_rate"] == 0.01


def test_non_empty_run_dir_without_config_is_not_taken_over(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        prepare_run_dir(ExperimentConfig(run_dir=str(tmp_path)))
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_run_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "run").write_text("mine")
    with pytest.raises(UserError, match="is a file"):
        prepare_run_dir(ExperimentConfig(run_dir=str(tmp_path / "run")))
    assert (tmp_path / "run").read_text() == "mine"


@pytest.mark.parametrize("dataset, count", [("voc", 21), ("demo", 5), ("ade20k", 150),
                                            ("cityscapes", 19)])
def test_num_classes_defaults_to_the_datasets_class_count(parse, dataset, count):
    assert parse(f"--dataset={dataset}").num_classes == count


def test_num_classes_of_a_folder_dataset_is_the_line_count_of_classes_txt(parse, tmp_path):
    (tmp_path / "classes.txt").write_text("background\ncrack\n\nrust\n")
    assert parse("--dataset=folder", f"--data_root={tmp_path}").num_classes == 3
    with pytest.raises(UserError, match="classes.txt not found"):
        parse("--dataset=folder", f"--data_root={tmp_path / 'elsewhere'}")


def test_an_explicit_num_classes_is_kept_for_the_dataset_check(parse):
    # The training, evaluation and verify checks compare it with the dataset and stop.
    assert parse("--dataset=cityscapes", "--num_classes=21").num_classes == 21
