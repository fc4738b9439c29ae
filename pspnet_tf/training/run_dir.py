"""The run directory train.py writes: what it holds, and whether a launch may use it.

A run directory holds one run: its config.json, its lock file while a train.py holds it, and
its checkpoints. A relaunch with the same config resumes it; one with another config may only
take it over while it holds no checkpoint (nothing was trained yet).
"""

import contextlib
import json
import os
import pathlib
import re
import socket

from absl import logging

from pspnet_tf.atomic import remove_stale_temporaries, write_atomically
from pspnet_tf.config import ExperimentConfig, changed_fields
from pspnet_tf.errors import EnvironmentFault, ParameterError, UserError, environment_faults

CONFIG_FILE = "config.json"
RUN_LOCK_FILE = "train.lock"  # pspnet_tf.training.run_lock's, taken before prepare_run_dir
CHECKPOINTS_DIR = "checkpoints"  # run_dir/checkpoints/ckpt-STEP.*


# The longest path train.py writes below run_dir, less the host name: a checkpoint's
# `checkpoints/ckpt-STEP_temp/part-00000-of-00001.data-00000-of-00001.tempstateNUMBER`
# (TensorBoard's `tensorboard/validation_images/events.out.tfevents.TIME.HOST.PID.N.v2` is
# shorter but for the host), with room to spare.
_DEEPEST_BELOW_RUN_DIR = 160


def check_run_dir_path(run_dir: str) -> None:
    """UserError when --run_dir names an existing file; EnvironmentFault when the paths of
    the files train.py writes below it would be too long for the system (PATH_MAX), which
    would otherwise stop the run only when TensorBoard or a checkpoint first writes there."""
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise ParameterError("{run_dir}={path} is a file, not a directory; pass another "
                             "{run_dir} (nothing was changed)", path=run_dir)
    existing = os.path.abspath(run_dir)
    while not os.path.isdir(existing):
        existing = os.path.dirname(existing)
    with environment_faults(run_dir):
        path_max = os.pathconf(existing, "PC_PATH_MAX")
    needed = (len(os.fsencode(os.path.abspath(run_dir))) + _DEEPEST_BELOW_RUN_DIR
              + len(socket.gethostname()))
    if needed >= path_max:
        raise EnvironmentFault(
            f"--run_dir={run_dir} is too long: the files train.py writes below it would have "
            f"paths of about {needed} bytes, and this system allows {path_max - 1}; choose a "
            "shorter --run_dir (nothing was changed)", run_dir)


def prepare_run_dir(config: ExperimentConfig) -> bool:
    """Creates run_dir with config.json, or checks that an existing one holds this run.

    Returns True when the directory already held this run (so training resumes). A run
    directory whose checkpoints belong to another config is never overwritten; one that a
    run left before its first checkpoint (e.g. it stopped on a bad label) holds no training
    yet, so a corrected command takes it over and rewrites its config.json.
    """
    run_dir = config.runtime.run_dir
    check_run_dir_path(run_dir)
    remove_stale_temporaries(run_dir)  # of a write killed half-way (final model, config, ...)
    path = os.path.join(run_dir, CONFIG_FILE)
    if os.path.exists(path):
        try:
            changed = changed_fields(_read_saved_config(path), config)
        except ValueError as error:
            raise ParameterError("{path} was not written by this version of train.py ({error});"
                                 " choose another {run_dir}", path=path, error=error) from error
        if not changed:
            return True
        if holds_checkpoints(run_dir):
            details = ", ".join(f"{key}: {old} -> {new}" for key, old, new in changed)
            raise ParameterError(
                "{run_dir}={path} holds a run with another config ({details}); pass a new "
                "{run_dir} (nothing was changed)", path=run_dir, details=details)
    elif os.path.isdir(run_dir) and set(os.listdir(run_dir)) - {RUN_LOCK_FILE}:
        raise ParameterError(
            "{run_dir}={path} is not empty and holds no config.json; pass a new or empty "
            "{run_dir} (nothing was changed)", path=run_dir)
    with environment_faults(run_dir):
        os.makedirs(run_dir, exist_ok=True)
    write_atomically(path, lambda target: pathlib.Path(target).write_text(config.to_json()))
    return False


def _read_saved_config(path: str) -> dict:
    with open(path) as handle:
        try:
            return json.load(handle)
        except json.JSONDecodeError as error:
            raise ParameterError(
                "{path} is not valid JSON ({error}); restore it or choose another {run_dir}",
                path=path, error=error) from error


def holds_checkpoints(run_dir: str) -> bool:
    """Whether the run in `run_dir` has trained: its checkpoints/ holds a checkpoint file."""
    directory = os.path.join(run_dir, CHECKPOINTS_DIR)
    return os.path.isdir(directory) and any(name.startswith("ckpt-")
                                            for name in os.listdir(directory))
