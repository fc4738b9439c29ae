"""What training asks of TensorFlow: oneDNN before TensorFlow starts
(pspnet_tf/cli/startup.py), oneDNN's pool left as it is, and from --memory_saving the
recomputation of the early stages (pspnet_tf/training/memory_saving.py)."""

import ast
import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf
from helpers import TINY_HEADS

from pspnet_tf.config import ExperimentConfig
from pspnet_tf.models.factory import build_model
from pspnet_tf.training.memory_saving import memory_saving_on
from pspnet_tf.training.trainer import compile_for_training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = ("TF_ENABLE_ONEDNN_OPTS", "TF_ONEDNN_USE_SYSTEM_ALLOCATOR")


def _settings_after_import(module: str, environment: dict[str, str]) -> list[str]:
    """The SETTINGS values once the command `module` has been imported."""
    code = (f"import os; import {module}; "
            f"print([os.environ.get(name, '') for name in {SETTINGS!r}])")
    env = {key: value for key, value in os.environ.items() if key not in SETTINGS}
    env.update(environment, PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                            text=True, env=env, check=True, cwd=ROOT)
    return ast.literal_eval(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module, environment, expected", [
    ("pspnet_tf.cli.train", {}, ["1", ""]),  # oneDNN's allocator stays its pool
    ("pspnet_tf.cli.train", {"TF_ENABLE_ONEDNN_OPTS": "0"}, ["0", ""]),  # the user's wins
    ("pspnet_tf.cli.evaluate", {}, ["", ""]),  # inference keeps TensorFlow's default
])
def test_training_asks_for_onednn_before_tensorflow_starts(module, environment, expected):
    """train.py and pspnet-train both import pspnet_tf.cli.train, whose start-up
    (cli/startup.py) sets the variable before TensorFlow loads; the test_cli_help tests see
    TensorFlow report oneDNN on."""
    assert _settings_after_import(module, environment) == expected


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


@pytest.mark.parametrize("memory_saving, recomputes", [("on", True), ("off", False)])
def test_compile_for_training_recomputes_early_stages_only_when_saving_memory(
        memory_saving, recomputes):
    if tf.config.list_logical_devices("GPU"):
        pytest.skip("hosts with a GPU keep the plain training call")
    config = ExperimentConfig.from_fields(num_classes=4, backbone="resnet18_v1c",
                                          memory_saving=memory_saving, **TINY_HEADS)
    model = build_model(config, training_heads=True)
    compile_for_training(model, config, total_steps=10)
    assert ("call" in vars(model)) is recomputes  # recompute_early_stages replaces it
