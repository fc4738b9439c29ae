"""Small helpers shared by several test modules: the repository's paths and tiny-run flags,
a tiny randomised PSPNet, and running a command in this process (`run_command`) or an entry
point or script in a fresh Python process (`run_script`, `run_python`).

Fixtures live in tests/conftest.py; the PyTorch parity helpers in tests/torch_parity.py (they
need PyTorch, which these helpers do not).
"""

import contextlib
import importlib
import json
import logging as python_logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import tomllib
import traceback
from collections.abc import Iterator
from typing import Any

import h5py
import keras
import numpy as np
import tensorflow as tf
from absl import flags
from absl import logging as absl_logging

from pspnet_tf import build_pspnet, save_weights
from pspnet_tf.config import config_from_flags, define_flags
from pspnet_tf.cli.inference_flags import define_mode_flags, define_model_flags, model_from_flags
from pspnet_tf.inference.loading import LoadedModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The heads of the tiny PSPNet the tests build (tiny_model), as arguments and as flags.
TINY_HEADS = {"psp_channels": 16, "aux_channels": 8}
TINY_HEAD_FLAGS = [f"--{name}={value}" for name, value in TINY_HEADS.items()]
# train.py flags for a tiny run on the demo data (the demo_root fixture): 16 training images,
# batch 4, 2 epochs, validated after each. Dropout at the recipe's 0.1, as every published
# flagfile ships it (the demo's own config runs without), so that the resume tests cover its
# random state.
# TINY_MODEL: the model flags of TINY, which pspnet-convert reads; TINY_INFERENCE: those
# pspnet-evaluate reads (a command refuses, on its command line, a flag it does not read).
TINY_MODEL = ["--flagfile=configs/demo.cfg", *TINY_HEAD_FLAGS, "--dropout=0.1"]
TINY_INFERENCE = [*TINY_MODEL, "--scale=48,48"]
TINY = [*TINY_INFERENCE, "--epochs=2", "--batch_size=4", "--crop_size=32,32",
        "--num_image_summaries=2", "--eval_every_epochs=1"]

# The flags evaluate.py, predict.py and export.py need for a tiny_model of the demo dataset's
# 5 classes (configs/demo.cfg), at a small --scale.
DEMO_SCALE = (48, 40)
DEMO_MODEL_FLAGS = ["--flagfile=configs/demo.cfg", *TINY_HEAD_FLAGS,
                    f"--scale={DEMO_SCALE[0]},{DEMO_SCALE[1]}"]

# Deterministic kernels, so that a resumed run can be compared with an uninterrupted one
# however loaded the machine is.
DETERMINISTIC_ENV = {**os.environ, "TF_DETERMINISTIC_OPS": "1"}


def tiny_model(num_classes: int = 4, **kwargs) -> keras.Model:
    """PSPNet R-18 with narrow heads: every code path of the full model, built in a second."""
    return build_pspnet(num_classes, backbone="resnet18_v1c", **TINY_HEADS, **kwargs)


def randomise(model, seed: int = 0) -> None:
    """Random weights and BatchNorm statistics that keep activations finite."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        if "variance" in weight.path or "gamma" in weight.path:
            value = rng.uniform(0.5, 1.0, weight.shape)
        else:
            value = rng.normal(0.0, 0.02, weight.shape)
        weight.assign(value.astype("float32"))


def saved_tiny_weights(folder, seed: int, num_classes: int = 5) -> tuple[keras.Model, str]:
    """A randomised tiny_model and the weights file (folder/w.h5) it is saved to."""
    model = tiny_model(num_classes=num_classes)
    randomise(model, seed=seed)
    return saved(model, folder)


def saved(model: keras.Model, folder) -> tuple[keras.Model, str]:
    """`model` and the weights file (folder/w.h5) it is saved to."""
    path = os.path.join(folder, "w.h5")
    save_weights(model, path)
    return model, path


def varied_model(seed: int = 7, num_classes: int = 5) -> keras.Model:
    """A tiny model whose labels vary over the image. (`randomise`'s small weights give one
    class everywhere, and any file, even one that dropped its weights, would match that.)"""
    keras.utils.set_random_seed(seed)
    model = tiny_model(num_classes=num_classes)
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        if "moving_variance" in weight.path:
            weight.assign(rng.uniform(0.5, 1.5, weight.shape).astype("float32"))
        elif "moving_mean" in weight.path:
            weight.assign(rng.normal(0.0, 0.1, weight.shape).astype("float32"))
    return model


def several_classes(labels: np.ndarray) -> np.ndarray:
    """`labels`, after checking that at least two classes each cover 1% of them."""
    counts = np.bincount(labels.ravel())
    assert np.sum(counts > 0.01 * labels.size) >= 2, counts
    return labels


def assert_same_batches(got: list, expected: list) -> None:
    """Two runs of a training pipeline gave the same (image, label) batches, bit for bit."""
    for (image, label), (expected_image, expected_label) in zip(got, expected, strict=True):
        np.testing.assert_array_equal(image, expected_image)
        np.testing.assert_array_equal(label, expected_label)


def h5_weights(path: str) -> dict[str, np.ndarray]:
    """Every array in a weights file, by its path inside the file."""
    found = {}

    def keep(name, item):  # returns None: a value would stop visititems
        if isinstance(item, h5py.Dataset):
            found[name] = item[()]

    with h5py.File(path) as handle:
        handle.visititems(keep)
    return found


def files_under(root) -> dict[str, bytes]:
    """Every file below `root` with its bytes, by its path relative to `root`."""
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, root)] = handle.read()
    return found


def run_python(*args: str, env: dict[str, str] | None = None,
               timeout: float = 600) -> subprocess.CompletedProcess:
    """`python ARGS` in the repository root, output captured as text; the caller checks the
    exit status."""
    return subprocess.run([sys.executable, *args], check=False, cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def launcher_command(command: str, *args: str) -> list[str]:
    """The command line of a command as its console script runs it (pspnet_tf_launch's
    function `command`), for commands without a script in the repository root."""
    return [sys.executable, "-c", f"import pspnet_tf_launch; pspnet_tf_launch.{command}()",
            *args]


def script_command(script: str, *args: str) -> list[str]:
    """The command line of one of the repository's entry points (train.py, predict.py, ...)."""
    return [sys.executable, os.path.join(ROOT, script), *args]


def run_script(script: str, *args: str, env: dict[str, str] | None = None,
               timeout: float = 600) -> subprocess.CompletedProcess:
    """Runs an entry point (see `run_python`)."""
    return run_python(os.path.join(ROOT, script), *args, env=env, timeout=timeout)


def run_deterministically(script: str, *args: str, env: dict[str, str] = DETERMINISTIC_ENV,
                          timeout: float = 600) -> subprocess.CompletedProcess:
    """Runs an entry point with deterministic kernels (DETERMINISTIC_ENV) unless `env` says
    otherwise: how the end-to-end training tests run train.py and evaluate.py."""
    return run_script(script, *args, env=env, timeout=timeout)


def last_json_line(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> Any:
    """Runs `python ARGS`, which must succeed, and reads the JSON its last stdout line holds:
    how a test gets a report from a process it needs fresh (TensorFlow's devices are fixed
    once it starts)."""
    result = run_python(*args, env=env, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def report_from_two_cpu_replicas(test_file: str, timeout: float) -> Any:
    """Runs a test module as a script, which prints its report (made on the strategy
    `two_cpu_replicas` gives) as its last line, with GPUs hidden."""
    env = dict(os.environ, PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="")
    return last_json_line(test_file, env=env, timeout=timeout)


def two_cpu_replicas() -> tf.distribute.MirroredStrategy:
    """A MirroredStrategy over two logical CPU devices. Only in a fresh process (see
    `report_from_two_cpu_replicas`): the CPU is split before TensorFlow initialises it."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def cli_flag_values(*args: str) -> flags.FlagValues:
    """The flags evaluate.py, predict.py and export.py define, parsed from `args`."""
    values = flags.FlagValues()
    define_flags(values)
    define_mode_flags(values)
    define_model_flags(values)
    values(["test", *args])
    return values


def model_from_cli_flags(*args: str) -> LoadedModel:
    """The model (and its config and classes) those entry points load for `args`."""
    values = cli_flag_values(*args)
    return model_from_flags(config_from_flags(values), values)


def free_ports(count: int) -> list[int]:
    """Ports the OS reports free on 127.0.0.1 (all bound at once, so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tf_config(cluster: dict, task_type: str, index: int) -> str:
    """The TF_CONFIG value of task `index` of `task_type` in `cluster`."""
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


def error_lines(stderr: str) -> list[str]:
    """The `error: ...` lines of an entry point's stderr."""
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def assert_refused_in_one_line(result: subprocess.CompletedProcess, needle: str) -> None:
    """Exit status 2 with exactly one `error:` line that names `needle`, no traceback."""
    assert result.returncode == 2, result.stderr[-3000:]
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and needle in errors[0] and "Traceback" not in result.stderr


# The modules whose absl flags are not the project's (cf. `--help`'s list of project flags).
_FOREIGN_FLAG_MODULES = ("absl.", "tensorflow.", "keras.")


def console_scripts() -> dict[str, str]:
    """The installed commands and their targets (`module:function`), from pyproject.toml."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as handle:
        return tomllib.load(handle)["project"]["scripts"]


class Killed(BaseException):
    """Raised by a test's patch at a chosen moment of an in-process run (`run_command`) to
    stand for a `kill -9` there: nothing of the run handles it (it is no Exception), so what
    the run wrote until then is what a kill would leave, but its lock."""


def run_command(command: str, *args: str, env: dict[str, str] | None = None
                ) -> subprocess.CompletedProcess:
    """Runs an installed command (`pspnet-train`, ..., as pyproject.toml names it) in this
    process, as if `command ARGS` were typed in the repository root, with the environment
    variables `env` added: its exit status (SystemExit's, 1 and a traceback on stderr for an
    uncaught exception, as Python would print) and what it wrote to stdout and stderr, as
    `run_script` returns them.

    Each call starts as a fresh process would: its module is imported anew with none of the
    project's absl flags defined, absl's flags unparsed; what an entry point changes for the
    process (logging handlers and verbosity, Keras' dtype policy, signal handlers,
    environment, working directory, sys.argv) is put back afterwards, and its module and flags
    are forgotten again. Not for what a test must see in a fresh process: import side effects,
    TensorFlow's device set-up or C++ log level, signals, several processes.
    """
    module_name, function = console_scripts()[command].split(":")
    command_module = f"pspnet_tf.cli.{function}"  # what the launcher's function runs
    _forget_entry_point(command_module)
    with _process_state_restored(env), _output_captured() as captured:
        sys.argv = [command, *args]
        try:
            getattr(importlib.import_module(module_name), function)()
            status = 0
        except SystemExit as exited:
            status = _exit_status(exited.code)
        except Exception:  # a bug: Python would print the traceback and exit with 1
            traceback.print_exc()
            status = 1
        finally:
            _forget_entry_point(command_module)
    return subprocess.CompletedProcess([command, *args], status, *captured())


def _exit_status(code: object) -> int:
    """The exit status of `sys.exit(code)`; a message is printed on stderr, as Python does."""
    if code is None or isinstance(code, int):
        return code or 0
    print(code, file=sys.stderr)
    return 1


def _forget_entry_point(module_name: str) -> None:
    """Undefines every project flag and unimports `module_name`, so that importing it again
    defines its flags as in a fresh process; absl's and TensorFlow's flags go unparsed."""
    values = flags.FLAGS
    project = {flag.name for module, defined in values.flags_by_module_dict().items()
               if not module.startswith(_FOREIGN_FLAG_MODULES) for flag in defined}
    for name in project:
        delattr(values, name)
    values.unparse_flags()
    module = sys.modules.pop(module_name, None)
    parent, _, child = module_name.rpartition(".")
    if module is not None and getattr(sys.modules.get(parent), child, None) is module:
        delattr(sys.modules[parent], child)


@contextlib.contextmanager
def _process_state_restored(env: dict[str, str] | None) -> Iterator[None]:
    """Sets `env` and the repository root as working directory; afterwards puts back what an
    entry point may change for the whole process."""
    saved_environ, saved_cwd, saved_argv = dict(os.environ), os.getcwd(), sys.argv
    root_logger = python_logging.getLogger()
    saved_handlers, saved_level = list(root_logger.handlers), root_logger.level
    saved_verbosity = absl_logging.get_verbosity()
    saved_policy = keras.config.dtype_policy()
    saved_signals = {number: signal.getsignal(number)
                     for number in (signal.SIGINT, signal.SIGTERM)}
    os.environ.update(env or {})
    os.chdir(ROOT)
    try:
        yield
    finally:
        for handler in root_logger.handlers[:]:
            if handler not in saved_handlers:  # e.g. the train.log of a training run
                root_logger.removeHandler(handler)
                handler.close()
        root_logger.setLevel(saved_level)
        absl_logging.set_verbosity(saved_verbosity)
        keras.config.set_dtype_policy(saved_policy)
        for number, handler in saved_signals.items():
            signal.signal(number, handler)
        os.chdir(saved_cwd)
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_environ)


@contextlib.contextmanager
def _output_captured() -> Iterator[Any]:
    """Captures what is written to stdout and stderr, by Python (print, logging) and below it
    (file descriptors 1 and 2), as a child process' pipes would; yields a function that
    returns (stdout, stderr) as text once the block is left."""
    texts: list[str] = []
    streams = sys.stdout, sys.stderr
    # absl's handler logs to the stderr of when it was made (pytest's, here); others may too.
    absl_handler = absl_logging.get_absl_handler().python_handler
    handlers = [absl_handler] + [
        handler for handler in python_logging.getLogger().handlers
        if isinstance(handler, python_logging.StreamHandler) and handler is not absl_handler
        and handler.stream in streams]
    handler_streams = [handler.stream for handler in handlers]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        for stream in streams:
            stream.flush()
        saved_fds = os.dup(1), os.dup(2)
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        ours = [open(fd, "w", buffering=1, encoding="utf-8", closefd=False) for fd in (1, 2)]
        sys.stdout, sys.stderr = ours
        for handler in handlers:
            handler.setStream(ours[0] if handler.stream is streams[0] else ours[1])
        try:
            yield lambda: tuple(texts)
        finally:
            sys.stdout, sys.stderr = streams
            for handler, stream in zip(handlers, handler_streams):
                handler.setStream(stream)
            for stream in ours:
                stream.close()  # flushes; file descriptors 1 and 2 stay open
            for fd, saved in zip((1, 2), saved_fds):
                os.dup2(saved, fd)
                os.close(saved)
            for captured in (out, err):
                captured.seek(0)
                texts.append(captured.read().decode("utf-8", errors="replace"))
