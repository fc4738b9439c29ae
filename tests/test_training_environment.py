"""The TensorFlow settings training asks for before TensorFlow starts (pspnet_tf/__init__.py)."""

import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = ("TF_ENABLE_ONEDNN_OPTS", "TF_ONEDNN_USE_SYSTEM_ALLOCATOR")


def _settings_after_import(program: str, environment: dict[str, str]) -> list[str]:
    """The SETTINGS values once `program` (its argv[0]) has imported pspnet_tf."""
    code = ("import os, sys; sys.argv[0] = sys.argv[1]; import pspnet_tf; "
            f"print([os.environ.get(name, '') for name in {SETTINGS!r}])")
    env = {key: value for key, value in os.environ.items() if key not in SETTINGS}
    env.update(environment, PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="")
    result = subprocess.run([sys.executable, "-c", code, program], capture_output=True,
                            text=True, env=env, check=True, cwd=ROOT)
    return ast.literal_eval(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("program, environment, expected", [
    # oneDNN's pooling allocator kept the R-50-D8 step's peak memory higher
    ("train.py", {}, ["1", "1"]),
    ("pspnet-train", {"TF_ONEDNN_USE_SYSTEM_ALLOCATOR": "0"}, ["1", "0"]),  # the user's wins
])
def test_training_uses_onednn_with_the_system_allocator(program, environment, expected):
    assert _settings_after_import(program, environment) == expected
