"""The commands' entry points (pyproject.toml's [project.scripts], the root train.py, ...).

Each one starts the process quietly (startup.py: TensorFlow's start-up variables and its C++
start-up lines), then imports its command from pspnet_tf.cli and runs it. This package sits
outside pspnet_tf because `import pspnet_tf` loads TensorFlow (it registers the model
classes with Keras), and a module inside it would be imported after that.
"""

import importlib

from pspnet_tf_launch.startup import start


def _run(command: str, *, onednn: bool = False) -> None:
    start(onednn=onednn)
    importlib.import_module(f"pspnet_tf.cli.{command}").run()


def train() -> None:
    _run("train", onednn=True)  # oneDNN's kernels for training (startup.py)


def evaluate() -> None:
    _run("evaluate")


def predict() -> None:
    _run("predict")


def export() -> None:
    _run("export")


def submit() -> None:
    _run("submit")


def convert() -> None:
    _run("convert")


def verify() -> None:
    _run("verify")


def prepare() -> None:
    _run("prepare")
