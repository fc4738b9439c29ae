"""What training asks of TensorFlow: oneDNN before TensorFlow starts
(pspnet_tf/cli/startup.py), oneDNN's pool left as it is, and from --tap_gradients and
--memory_saving the training choices of the model (pspnet_tf/training/memory_saving.py)."""

import ast
import json
import os
import subprocess
import sys

import pytest
from helpers import TINY_HEADS

from pspnet_tf.config import ExperimentConfig
from pspnet_tf.training import memory_saving
from pspnet_tf.training.memory_saving import TrainingChoices, memory_saving_on, training_choices
from pspnet_tf.training.trainer import build_training_model, compile_for_training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = ("TF_ENABLE_ONEDNN_OPTS", "TF_ONEDNN_USE_SYSTEM_ALLOCATOR")


def _settings_after_import(command: str, environment: dict[str, str]) -> list[str]:
    """The SETTINGS values at the exit of `command --helpshort` run by the launcher."""
    code = ("import atexit, os, sys, pspnet_tf_launch\n"
            f"atexit.register(lambda: print([os.environ.get(name, '') for name in {SETTINGS!r}]))\n"
            f"sys.argv = ['{command}', '--helpshort']\n"
            f"pspnet_tf_launch.{command}()\n")
    env = {key: value for key, value in os.environ.items() if key not in SETTINGS}
    env.update(environment, PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                            text=True, env=env, check=True, cwd=ROOT)
    return ast.literal_eval(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("command, environment, expected", [
    ("train", {}, ["1", ""]),  # oneDNN's allocator stays its pool
    ("train", {"TF_ENABLE_ONEDNN_OPTS": "0"}, ["0", ""]),  # the user's wins
    ("evaluate", {}, ["", ""]),  # inference keeps TensorFlow's default
])
def test_training_asks_for_onednn_before_tensorflow_starts(command, environment, expected):
    """train.py and pspnet-train both run pspnet_tf_launch.train, whose start-up
    (pspnet_tf_launch/startup.py) sets the variable before TensorFlow loads; the
    test_cli_help tests see TensorFlow report oneDNN on."""
    assert _settings_after_import(command, environment) == expected


@pytest.mark.parametrize("fields, tf_config, expected", [
    ({}, None, True),  # the published recipe: 16 x 512x512
    ({"batch_size": 2, "crop_size": (512, 512)}, None, True),  # the benchmark's step
    ({"batch_size": 1, "crop_size": (512, 512)}, None, False),
    ({"batch_size": 8, "crop_size": (128, 128)}, None, False),  # the demo
    ({"batch_size": 4, "crop_size": (512, 512)}, ["a:1", "b:2"], True),  # 2 per worker
    ({"batch_size": 2, "crop_size": (512, 512)}, ["a:1", "b:2"], False),  # 1 per worker
    ({"batch_size": 8, "crop_size": (128, 128), "memory_saving": "on"}, None, True),
    ({"memory_saving": "off"}, None, False),
])
def test_memory_saving_follows_the_pixels_of_a_workers_batch(fields, tf_config, expected,
                                                             monkeypatch):
    if tf_config:
        monkeypatch.setenv("TF_CONFIG", json.dumps(
            {"cluster": {"worker": tf_config}, "task": {"type": "worker", "index": 0}}))
    else:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    assert memory_saving_on(ExperimentConfig.from_fields(**fields)) is expected


@pytest.mark.parametrize("fields, accelerator, expected", [
    ({}, False, TrainingChoices(tap_gradients=True, recompute="layer2")),  # 16 x 512x512
    ({}, True, TrainingChoices(tap_gradients=False, recompute=None)),
    ({"batch_size": 8, "crop_size": (128, 128)}, False, TrainingChoices(True, None)),  # demo
    ({"tap_gradients": "off", "memory_saving": "off"}, False, TrainingChoices(False, None)),
    ({"tap_gradients": "on", "memory_saving": "on"}, True, TrainingChoices(True, "layer2")),
])
def test_the_training_choices_follow_the_flags_and_the_host(fields, accelerator, expected,
                                                            monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.setattr(memory_saving, "has_accelerator", lambda: accelerator)
    assert training_choices(ExperimentConfig.from_fields(**fields)) == expected


@pytest.mark.parametrize("memory_saving, recompute", [("on", "layer2"), ("off", None)])
def test_the_training_model_is_built_with_the_choices(memory_saving, recompute):
    config = ExperimentConfig.from_fields(num_classes=4, backbone="resnet18_v1c",
                                          memory_saving=memory_saving, tap_gradients="on",
                                          **TINY_HEADS)
    model = build_training_model(config)
    assert (model.tap_gradients, model.recompute, model.auxiliary_head) == (
        True, recompute, True)
    compile_for_training(model, config, total_steps=10)
    assert "call" not in vars(model)  # a method of the class, not of the instance
