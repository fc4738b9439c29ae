"""The package metadata, its package list, the shipped flagfiles found by name, and an
import that leaves the process alone."""

import os
import json
import re
import subprocess
import sys
import tomllib
from importlib import metadata

import pytest
from helpers import ROOT, launcher_command, tiny_model

import pspnet_tf
from pspnet_tf.packaged_configs import config_names, resolve_flagfile, resolve_flagfile_args

# Run as `train.py` (whose name once switched oneDNN on at import), without PSPNET_VERBOSE.
# The dependencies load first: what they do themselves (OpenCV extends LD_LIBRARY_PATH) is
# not the package's doing; every os.dup2 after that is recorded.
IMPORT_PROGRAM = """
import json, os, sys
import absl.flags, cv2, h5py, keras, numpy, PIL.Image, tensorflow
sys.argv[0] = "train.py"
environment, stderr, duplicated = dict(os.environ), os.fstat(2), []
real_dup2 = os.dup2
os.dup2 = lambda fd, fd2, *args: duplicated.append(fd2) or real_dup2(fd, fd2, *args)
import pspnet_tf
import pspnet_tf.convert, pspnet_tf.data, pspnet_tf.evaluation.metrics, pspnet_tf.models
import pspnet_tf.inference.predictor, pspnet_tf.training.trainer
model = pspnet_tf.build_pspnet(num_classes=3, backbone="resnet18_v1c", psp_channels=8,
                               aux_channels=8)
after = os.fstat(2)
os.write(2, b"fd 2 still reaches the terminal\\n")
print(json.dumps({"added": sorted(set(os.environ) - set(environment)),
                  "changed": sorted(key for key in environment
                                    if os.environ.get(key) != environment[key]),
                  "same_fd_2": (after.st_ino, after.st_dev) == (stderr.st_ino, stderr.st_dev),
                  "dup2": duplicated,
                  "policy": keras.mixed_precision.global_policy().name,
                  "dtype": model.compute_dtype}))
"""



def _pyproject() -> dict:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as handle:
        return tomllib.load(handle)


def test_version_comes_from_the_installed_metadata():
    try:
        installed = metadata.version("pspnet-tf")
    except metadata.PackageNotFoundError:
        pytest.skip("pspnet-tf is not installed; run pip install -e . first")
    assert pspnet_tf.__version__ == installed == _pyproject()["project"]["version"]


def test_every_subpackage_is_listed_for_the_wheel():
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    on_disk = {os.path.relpath(folder, ROOT).replace(os.sep, ".")
               for folder, _, files in os.walk(os.path.join(ROOT, "pspnet_tf"))
               if "__init__.py" in files}
    assert on_disk <= listed, f"add {sorted(on_disk - listed)} to pyproject.toml"
    assert "pspnet_tf.configs" in listed


def test_flagfiles_resolve_by_name_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shipped = os.path.join(ROOT, "configs", "voc_r50.cfg")
    for spelling in ("configs/voc_r50.cfg", "voc_r50.cfg", "voc_r50"):
        assert os.path.samefile(resolve_flagfile(spelling), shipped)
    assert resolve_flagfile("nowhere/unknown.cfg") == "nowhere/unknown.cfg"
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "voc_r50.cfg").write_text("--batch_size=1\n")
    assert resolve_flagfile("configs/voc_r50.cfg") == "configs/voc_r50.cfg"  # a real file wins
    demo = resolve_flagfile("demo")
    argv = resolve_flagfile_args(["prog", "--flagfile=demo", "--flagfile", "demo", "--seed=1"])
    assert argv == ["prog", f"--flagfile={demo}", "--flagfile", demo, "--seed=1"]
    assert {"demo", "voc_r50", "cityscapes_r101_d16"} <= set(config_names())


def test_entry_point_reads_a_shipped_flagfile_from_another_directory(tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT}
    result = subprocess.run(
        launcher_command("verify", "--flagfile=configs/demo.cfg"),
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    # demo.cfg names --data_root=data/demo, which does not exist under tmp_path.
    assert result.returncode == 2, result.stderr
    assert "data root data/demo does not exist" in result.stdout
    assert "problems found in demo under data/demo" in result.stderr


def test_docs_referenced_by_readme_and_code_exist():
    """Every docs/*.md named in the repository is there (the docs replace an outside file)."""
    named = set()
    for folder, _, files in os.walk(ROOT):
        if ".git" in folder.split(os.sep):
            continue
        for name in files:
            if name.endswith((".py", ".md", ".cfg")):
                with open(os.path.join(folder, name), encoding="utf-8") as handle:
                    text = handle.read()
                named.update(re.findall(r"docs/(\w+\.md)", text))
    assert named >= {"recipe.md", "datasets.md", "architecture.md", "performance.md",
                     "serving.md"}
    missing = sorted(name for name in named if not os.path.isfile(os.path.join(ROOT, "docs", name)))
    assert not missing, f"docs/{missing} referenced but not in the repository"


def test_importing_the_library_changes_nothing_in_the_process():
    """No environment variable set, file descriptor 2 left where it was, Keras' global dtype
    policy untouched: the commands' quiet start-up is pspnet_tf_launch's, not the library's."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("PSPNET_VERBOSE", "TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}
    result = subprocess.run([sys.executable, "-c", IMPORT_PROGRAM], cwd=ROOT, capture_output=True,
                            text=True, timeout=240, env={**env, "PYTHONPATH": ROOT})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"added": [], "changed": [], "same_fd_2": True, "dup2": [],
                      "policy": "float32", "dtype": "float32"}
    assert "fd 2 still reaches the terminal" in result.stderr


REGISTRATION_PROGRAM = """
import importlib, inspect, json, pkgutil, sys
import keras
import pspnet_tf
registered = set(keras.saving.get_custom_objects())
model = keras.saving.load_model(sys.argv[1])
for module in pkgutil.walk_packages(pspnet_tf.__path__, "pspnet_tf."):
    if not module.name.startswith("pspnet_tf.cli"):
        importlib.import_module(module.name)
kinds = (keras.layers.Layer, keras.losses.Loss, keras.metrics.Metric, keras.optimizers.Optimizer,
         keras.optimizers.schedules.LearningRateSchedule)
defined = {f"pspnet_tf>{cls.__name__}" for name in list(sys.modules)
           if name.startswith("pspnet_tf.")
           for _, cls in inspect.getmembers(sys.modules[name], inspect.isclass)
           if cls.__module__ == name and issubclass(cls, kinds)}
print(json.dumps({"model": type(model).__name__, "unregistered": sorted(defined - registered),
                  "later": sorted(set(keras.saving.get_custom_objects()) - registered)}))
"""


def test_import_pspnet_tf_alone_registers_every_serialisable_class(tmp_path):
    """keras.saving.load_model after `import pspnet_tf` alone, in a fresh process; every
    Keras layer, model, loss, metric, optimizer and schedule the package defines is registered then,
    none only when its module is imported later."""
    path = tmp_path / "m.keras"
    tiny_model(num_classes=3).save(path)
    result = subprocess.run([sys.executable, "-c", REGISTRATION_PROGRAM, str(path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=240,
                            env={**os.environ, "PYTHONPATH": ROOT})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"model": "PSPNetSegmenter", "unregistered": [], "later": []}


def test_the_launcher_imports_no_tensorflow_before_the_start():
    """So that the commands' start-up runs before TensorFlow loads."""
    code = "import sys, pspnet_tf_launch\nprint('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=240, env={**os.environ, "PYTHONPATH": ROOT})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False"]
