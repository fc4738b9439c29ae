"""--help of every console script: its own flags, grouped, with defaults, and no TensorFlow
log lines (which --verbose / PSPNET_VERBOSE=1 bring back). The console scripts exist after
`pip install -e .` (the README's test command); the root scripts are shims of them."""

import dataclasses
import os
import re
import subprocess
import sys

import pytest
from absl import flags

from helpers import console_scripts, run_command

from pspnet_tf import config
from pspnet_tf.cli import help as cli_help
from pspnet_tf.cli import flag_groups
from pspnet_tf.cli.flag_groups import define
from pspnet_tf_launch.native_logs import verbose_requested, without_native_log_lines

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NATIVE_LOG_LINE = re.compile(r"^[IWEF]\d{4} |absl::InitializeLog|oneDNN|cuInit", re.M)
EXPERIMENT = ["--dataset=<voc|demo|ade20k|cityscapes|folder>  (default: voc)",
              "--verbose  (default: false)"]
MODEL = ["--backbone=<resnet18_v1c|resnet50_v1c|resnet101_v1c>  (default: resnet50_v1c)",
         "--num_classes  (default: the dataset's class count)"]
CONSOLE_SCRIPTS = {
    "pspnet-train": ["python train.py --flagfile=configs/voc_r50.cfg", *MODEL,
                     "--batch_size  (default: 16)", "--run_dir  (default: runs/default)"],
    "pspnet-evaluate": ["--model  (default: none)", "--weights  (default: none)", *MODEL,
                        "--mode=<whole|slide|multiscale>  (default: whole)"],
    "pspnet-predict": ["--input  (default: required)", "--alpha  (default: 0.5)", *MODEL],
    "pspnet-export": ["--export_dir  (default: none)", *MODEL,
                      "--format=<saved_model|litert|onnx|openvino>  (default: saved_model)"],
    "pspnet-convert": ["--source=<mmseg|resnet_v1c>  (default: required)", *MODEL,
                       "--allow_missing_classifier  (default: false)"],
    "pspnet-verify": ["--splits  (default: \"\")"],
    "pspnet-prepare": ["--voc_root  (default: none)", "--samples_per_shard  (default: 1000)"],
}


def _console_script(name: str) -> str:
    path = os.path.join(os.path.dirname(sys.executable), name)
    if not os.path.isfile(path):
        pytest.skip(f"{name} is not installed; run pip install -e . first")
    return path


def _run(command: list[str], *args: str, unset: tuple[str, ...] = ("PSPNET_VERBOSE",)
         ) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in unset}
    return subprocess.run([*command, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=240, env=env)


@pytest.mark.parametrize("script", sorted(CONSOLE_SCRIPTS))
def test_help_lists_the_project_flags_grouped_with_defaults_and_no_tensorflow_lines(script):
    result = _run([_console_script(script)], "--help")
    assert result.returncode == 0, result.stderr
    for expected in EXPERIMENT + CONSOLE_SCRIPTS[script]:
        assert expected in result.stdout, f"{script} --help lacks {expected!r}"
    groups = [line for line in result.stdout.splitlines() if re.fullmatch(r"[a-z/]+:", line)]
    assert groups[0] == "data:"
    assert groups == [f"{group}:" for group in cli_help.GROUP_ORDER if f"{group}:" in groups]
    assert "other:" not in groups  # every flag of the command has a group
    assert "logtostderr" not in result.stdout  # absl's own flags stay in --helpfull
    assert not NATIVE_LOG_LINE.search(result.stderr), result.stderr
    assert not re.search(r"^[IWEF]\d{4} ", result.stdout, re.M)


@pytest.mark.parametrize("command", ["train.py", "pspnet-train"])
def test_verbose_shows_the_tensorflow_lines_and_training_turns_on_onednn(command):
    argv = [_console_script(command)] if command.startswith("pspnet") else [sys.executable,
                                                                          command]
    result = _run(argv, "--help", "--verbose", unset=("TF_ENABLE_ONEDNN_OPTS",))
    assert result.returncode == 0
    assert NATIVE_LOG_LINE.search(result.stderr)
    # Set before TensorFlow starts, by the root shim and by the console script alike.
    assert "oneDNN custom operations are on" in result.stderr


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


def test_a_command_flag_is_grouped_where_it_is_defined():
    values = flags.FlagValues()
    define("output", flags.DEFINE_string, "a_test_only_output", None, "x", flag_values=values)
    assert cli_help.flag_group("a_test_only_output")[0] == "output"
    assert cli_help.flag_group("batch_size") == ("optimisation",
                                                 config.FLAG_GROUPS["optimisation"].index(
                                                     "batch_size"))
    assert cli_help.flag_group("never_defined") == ("other", 0)
    with pytest.raises(ValueError, match="unknown --help group 'misc'"):
        define("misc", flags.DEFINE_string, "a_test_only_misc", None, "x", flag_values=values)


TRAINING_ONLY = {"epochs", "learning_rate", "momentum", "weight_decay", "checkpoint_every_steps",
                 "num_image_summaries", "batch_size", "crop_size", "run_dir", "pretrained"}
# Flags each command's code reads (pspnet_tf/cli/<command>.py and what it calls).
READ_BY = {
    "pspnet-train": {"epochs", "learning_rate", "crop_size", "run_dir", "pretrained", "strategy",
                     "divergence_factor", "force_unlock"},
    "pspnet-evaluate": {"val_split", "scale", "reduce_zero_label", "tfrecord_dir", "backbone",
                        "num_classes", "mixed_precision", "weights", "mode", "report_dir"},
    "pspnet-predict": {"dataset", "data_root", "scale", "backbone", "jit_compile", "input",
                       "output", "alpha", "confidence", "confidence_threshold"},
    "pspnet-export": {"scale", "backbone", "jit_compile", "format", "export_dir", "precision",
                      "with_confidence", "confidence_threshold"},
    "pspnet-submit": {"dataset", "data_root", "scale", "backbone", "split", "output", "mode"},
    "pspnet-convert": {"dataset", "backbone", "num_classes", "output_stride", "source",
                       "checkpoint"},
    "pspnet-verify": {"dataset", "data_root", "train_split", "val_split", "num_classes",
                      "reduce_zero_label", "splits"},
    "pspnet-prepare": {"dataset", "data_root", "train_split", "val_split", "voc_root",
                       "samples_per_shard"},
}


def _listed_flags(help_text: str) -> set[str]:
    return set(re.findall(r"^  --(\w+)", help_text, re.M))


@pytest.mark.parametrize("command", sorted(console_scripts()))
def test_help_lists_only_the_flags_the_command_reads(command):
    result = run_command(command, "--help")
    assert result.returncode == 0, result.stderr
    listed = _listed_flags(result.stdout)
    assert READ_BY[command] | {"verbose"} <= listed
    name = command.removeprefix("pspnet-")
    experiment = {field for field in flag_groups.READERS if flag_groups.reads(name, field)}
    assert listed & set(flag_groups.READERS) == experiment
    if command != "pspnet-train":
        assert not listed & TRAINING_ONLY, listed & TRAINING_ONLY


def test_evaluate_help_lists_no_training_flag():
    listed = _listed_flags(run_command("pspnet-evaluate", "--help").stdout)
    for name in ("epochs", "learning_rate", "momentum", "weight_decay", "checkpoint_every_steps",
                 "num_image_summaries"):
        assert name not in listed


def test_every_command_and_field_of_the_reader_map_exists():
    assert {f"pspnet-{name}" for name in flag_groups.COMMANDS} == set(console_scripts())
    assert set(flag_groups.SECTION_COMMANDS) == {
        section.name for section in dataclasses.fields(config.ExperimentConfig)}
    assert set(flag_groups.FIELD_COMMANDS) <= set(flag_groups.READERS)  # no misspelt field
    for readers in flag_groups.READERS.values():
        assert "train" in readers and set(readers) <= set(flag_groups.COMMANDS)
