"""The commands' entry points (pyproject.toml's [project.scripts], the root train.py, ...).

Each one starts the process quietly (startup.py: TensorFlow's start-up variables and its C++
start-up lines), then imports its command from pspnet_tf.cli and runs it. This package sits
outside pspnet_tf because `import pspnet_tf` loads TensorFlow (it registers the model
classes with Keras), and a module inside it would be imported after that.
"""

import importlib
from collections.abc import Callable

from pspnet_tf_launch.startup import start


def _command(name: str, *, onednn: bool = False) -> Callable[[], None]:
    """The entry point of `pspnet-<name>`: the start, then pspnet_tf.cli.<name>'s `run`."""
    def run() -> None:
        start(onednn=onednn)
        importlib.import_module(f"pspnet_tf.cli.{name}").run()

    run.__name__ = run.__qualname__ = name
    return run


train = _command("train", onednn=True)  # oneDNN's kernels for training (startup.py)
evaluate = _command("evaluate")
predict = _command("predict")
export = _command("export")
submit = _command("submit")
convert = _command("convert")
verify = _command("verify")
prepare = _command("prepare")
