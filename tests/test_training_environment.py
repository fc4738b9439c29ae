"""The TensorFlow settings training asks for: oneDNN before TensorFlow starts
(pspnet_tf/__init__.py) and, from --memory_saving, oneDNN's allocator before the first
tensor (pspnet_tf/training/memory_saving.py)."""

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
from pspnet_tf.training.memory_saving import (
    ALLOCATOR_VARIABLE,
    choose_cpu_allocator,
    memory_saving_on,
)
from pspnet_tf.training.trainer import compile_for_training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = ("TF_ENABLE_ONEDNN_OPTS", "TF_ONEDNN_USE_SYSTEM_ALLOCATOR")


def _clean_environment(**environment: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if key not in SETTINGS and key != "TF_CONFIG"}
    env.update(environment, PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="")
    return env


def _settings_after_import(program: str, environment: dict[str, str]) -> list[str]:
    """The SETTINGS values once `program` (its argv[0]) has imported pspnet_tf."""
    code = ("import os, sys; sys.argv[0] = sys.argv[1]; import pspnet_tf; "
            f"print([os.environ.get(name, '') for name in {SETTINGS!r}])")
    result = subprocess.run([sys.executable, "-c", code, program], capture_output=True,
                            text=True, env=_clean_environment(**environment), check=True,
                            cwd=ROOT)
    return ast.literal_eval(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("program, environment, expected", [
    ("train.py", {}, ["1", ""]),  # the allocator is chosen later, from the flags
    ("pspnet-train", {"TF_ENABLE_ONEDNN_OPTS": "0"}, ["0", ""]),  # the user's value wins
])
def test_training_asks_for_onednn_before_tensorflow_starts(program, environment, expected):
    assert _settings_after_import(program, environment) == expected


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


@pytest.mark.parametrize("users, memory_saving, expected", [
    (None, "on", "1"), (None, "off", "0"), ("0", "on", "0"), ("1", "off", "1")])
def test_choose_cpu_allocator_keeps_the_users_value(users, memory_saving, expected,
                                                    monkeypatch):
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("hosts with a GPU keep oneDNN's pool")
    if users is None:
        monkeypatch.delenv(ALLOCATOR_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(ALLOCATOR_VARIABLE, users)
    choose_cpu_allocator(ExperimentConfig.from_fields(memory_saving=memory_saving))
    assert os.environ[ALLOCATOR_VARIABLE] == expected


@pytest.mark.parametrize("kind", ["GPU", "TPU"])
def test_hosts_with_an_accelerator_keep_onednns_pool(kind, monkeypatch):
    listed = tf.config.list_physical_devices
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda device_type=None: ["accelerator"] if device_type == kind
                        else listed(device_type))
    monkeypatch.delenv(ALLOCATOR_VARIABLE, raising=False)
    choose_cpu_allocator(ExperimentConfig.from_fields(memory_saving="on"))
    assert os.environ[ALLOCATOR_VARIABLE] == "0"


ALLOCATOR_PROBE = r"""
import gc, json, os, sys
sys.argv[0] = "train.py"
import pspnet_tf.cli.train  # everything train.py imports before its flags are parsed
import tensorflow as tf
from pspnet_tf.config import ExperimentConfig
from pspnet_tf.training.memory_saving import choose_cpu_allocator

def resident_mb():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

choose_cpu_allocator(ExperimentConfig.from_fields(**json.loads(sys.argv[1])))
tf.config.threading.set_inter_op_parallelism_threads(1)  # as cli.run: nothing has run yet
held = tf.ones([64, 1024, 1024])  # 256 MB
float(tf.reduce_sum(held))
with_tensor = resident_mb()
del held
gc.collect()
print(json.dumps({"allocator": os.environ["TF_ONEDNN_USE_SYSTEM_ALLOCATOR"],
                  "returned_mb": with_tensor - resident_mb()}))
"""


@pytest.mark.parametrize("fields, allocator, returned", [
    ({"memory_saving": "on"}, "1", True),  # malloc hands the freed tensor back
    ({"memory_saving": "off"}, "0", False),  # oneDNN's pool keeps it
])
def test_the_allocator_chosen_after_the_imports_takes_effect(fields, allocator, returned):
    result = subprocess.run([sys.executable, "-c", ALLOCATOR_PROBE, json.dumps(fields)],
                            capture_output=True, text=True, check=True, cwd=ROOT,
                            env=_clean_environment())
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    assert probe["allocator"] == allocator
    if returned:
        assert probe["returned_mb"] > 200, probe
    else:
        assert probe["returned_mb"] < 50, probe


@pytest.mark.parametrize("memory_saving, recomputes", [("on", True), ("off", False)])
def test_compile_for_training_recomputes_the_first_stage_only_when_saving_memory(
        memory_saving, recomputes):
    if tf.config.list_logical_devices("GPU"):
        pytest.skip("hosts with a GPU keep the plain training call")
    config = ExperimentConfig.from_fields(num_classes=4, backbone="resnet18_v1c",
                                          memory_saving=memory_saving, **TINY_HEADS)
    model = build_model(config, training_heads=True)
    compile_for_training(model, config, total_steps=10)
    assert ("call" in vars(model)) is recomputes  # recompute_first_stage replaces it
