"""The run directory: created with config.json, resumed only by the same run, never taken
over once it holds another run's checkpoints."""

import json
import os

import pytest

from pspnet_tf.config import ExperimentConfig
from pspnet_tf.errors import UserError
from pspnet_tf.training.run_dir import prepare_run_dir

# config.json as train.py wrote it before the config had sections: flat, and without
# cat_max_ratio (a field added later).


def _saved(run_dir) -> dict:
    with open(os.path.join(run_dir, "config.json")) as handle:
        return json.load(handle)


def _add_checkpoint(run_dir) -> None:
    os.makedirs(os.path.join(run_dir, "checkpoints"))
    open(os.path.join(run_dir, "checkpoints", "ckpt-4.index"), "wb").close()


def test_run_dir_is_created_then_resumed_only_with_the_same_config(tmp_path):
    config = ExperimentConfig.from_fields(run_dir=str(tmp_path / "run"))
    assert prepare_run_dir(config) is False
    assert _saved(tmp_path / "run")["optimizer"]["epochs"] == config.optimizer.epochs
    assert prepare_run_dir(config) is True
    assert prepare_run_dir(config.replace(checkpoint_every_steps=5)) is True
    # No checkpoint yet (the run stopped before one): a corrected command takes it over.
    assert prepare_run_dir(config.replace(epochs=3)) is False
    assert _saved(tmp_path / "run")["optimizer"]["epochs"] == 3
    _add_checkpoint(tmp_path / "run")
    with pytest.raises(UserError, match="learning_rate: 0.01 -> 0.02"):
        prepare_run_dir(config.replace(epochs=3, learning_rate=0.02))
    assert _saved(tmp_path / "run")["optimizer"]["learning_rate"] == 0.01


def test_a_config_json_of_another_shape_is_one_line(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"backbone": "resnet18_v1c"}))
    with pytest.raises(UserError, match=r"config.json was not written by this version.*"
                                        r"also has backbone.*choose another run_dir"):
        prepare_run_dir(ExperimentConfig.from_fields(run_dir=str(run_dir)))
    assert json.loads((run_dir / "config.json").read_text()) == {"backbone": "resnet18_v1c"}


def test_a_garbled_config_json_is_one_line(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="config.json is not valid JSON"):
        prepare_run_dir(ExperimentConfig.from_fields(run_dir=str(tmp_path)))
    assert (tmp_path / "config.json").read_text() == "{not json"


def test_non_empty_run_dir_without_config_is_not_taken_over(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        prepare_run_dir(ExperimentConfig.from_fields(run_dir=str(tmp_path)))
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_run_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "run").write_text("mine")
    with pytest.raises(UserError, match="is a file"):
        prepare_run_dir(ExperimentConfig.from_fields(run_dir=str(tmp_path / "run")))
    assert (tmp_path / "run").read_text() == "mine"
