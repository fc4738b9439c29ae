"""The package metadata, its package list and the shipped flagfiles found by name."""

import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata

import pytest
from helpers import ROOT

import pspnet_tf
from pspnet_tf.packaged_configs import config_names, resolve_flagfile, resolve_flagfile_args



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
        [sys.executable, "-m", "pspnet_tf.data.verify", "--flagfile=configs/demo.cfg"],
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
