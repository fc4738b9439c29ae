"""--help of every entry point: its own flags, grouped, with defaults, and no TensorFlow log
lines (which --verbose / PSPNET_VERBOSE=1 bring back)."""

import os
import re
import subprocess
import sys

import pytest
from absl import flags

from pspnet_tf import cli_help, config
from pspnet_tf.native_logs import verbose_requested, without_native_log_lines

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NATIVE_LOG_LINE = re.compile(r"^[IWEF]\d{4} |absl::InitializeLog|oneDNN|cuInit", re.M)
EXPERIMENT = ["--dataset=<voc|demo|ade20k|cityscapes|folder>  (default: voc)",
              "--backbone=<resnet18_v1c|resnet50_v1c|resnet101_v1c>  (default: resnet50_v1c)",
              "--num_classes  (default: the dataset's class count)",
              "--batch_size  (default: 16)", "--run_dir  (default: runs/default)",
              "--verbose  (default: false)"]
ENTRY_POINTS = {
    "train.py": ["train.py"],
    "evaluate.py": ["evaluate.py", "--weights  (default: required)",
                    "--mode=<whole|slide|multiscale>  (default: whole)"],
    "predict.py": ["predict.py", "--input  (default: required)", "--alpha  (default: 0.5)"],
    "export.py": ["export.py", "--export_dir  (default: required)"],
    "-m pspnet_tf.convert": ["--source=<mmseg|resnet_v1c>  (default: required)",
                             "--allow_missing_classifier  (default: false)"],
    "-m pspnet_tf.data.verify": ["--splits  (default: \"\")"],
    "-m pspnet_tf.data.prepare": ["--voc_root  (default: none)",
                                  "--samples_per_shard  (default: 1000)"],
}


def _run(command: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *command.split(), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=240,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("command", sorted(ENTRY_POINTS))
def test_help_lists_the_project_flags_grouped_with_defaults_and_no_tensorflow_lines(command):
    result = _run(command, "--help", env={"PSPNET_VERBOSE": ""})
    assert result.returncode == 0, result.stderr
    for expected in EXPERIMENT + ENTRY_POINTS[command]:
        assert expected in result.stdout, f"{command} --help lacks {expected!r}"
    groups = [line for line in result.stdout.splitlines() if re.fullmatch(r"[a-z/]+:", line)]
    assert groups[:4] == ["data:", "model:", "optimisation:", "runtime:"]
    assert "other:" not in groups  # every flag of the command has a group
    assert "logtostderr" not in result.stdout  # absl's own flags stay in --helpfull
    assert not NATIVE_LOG_LINE.search(result.stderr), result.stderr
    assert not re.search(r"^[IWEF]\d{4} ", result.stdout, re.M)


def test_verbose_brings_the_tensorflow_lines_back():
    result = _run("train.py", "--help", "--verbose")
    assert result.returncode == 0
    assert NATIVE_LOG_LINE.search(result.stderr)


def test_verbose_is_read_from_argv_and_environment():
    assert not verbose_requested(["--dataset=demo"], {})
    assert verbose_requested(["--verbose"], {})
    assert verbose_requested(["--verbose=true"], {})
    assert not verbose_requested(["--noverbose"], {})
    assert verbose_requested([], {"PSPNET_VERBOSE": "1"})


def test_only_native_log_lines_are_dropped():
    text = (b"WARNING: All log messages before absl::InitializeLog() is called are written to "
            b"STDERR\nI0000 00:00:1796138562.724356    7104 port.cc:153] oneDNN custom "
            b"operations are on.\nE0000 00:00:1796138595.136045    7711 cuda_platform.cc:52] "
            b"failed call to cuInit: UNKNOWN ERROR (303)\n<string>:3: UserWarning: kept\n"
            b"error: --data_root=x does not exist\n")
    assert without_native_log_lines(text) == (b"<string>:3: UserWarning: kept\n"
                                              b"error: --data_root=x does not exist\n")


def test_every_experiment_flag_has_a_group():
    values = flags.FlagValues()
    config.define_flags(values)
    grouped = {name for names in config.FLAG_GROUPS.values() for name in names}
    assert set(values) - set(flags.FlagValues()) <= grouped | {"flagfile", "undefok"}
    assert set(config.FLAG_GROUPS) <= set(cli_help.GROUP_ORDER)
