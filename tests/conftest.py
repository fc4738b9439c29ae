"""Shared test set-up: quiet TensorFlow logs and the CPU threading the entry points use; the
fixtures several test modules use (plain helpers live in tests/helpers.py)."""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from pspnet_tf.cli.app import use_one_inter_op_thread_on_cpu  # noqa: E402

use_one_inter_op_thread_on_cpu()

import pytest  # noqa: E402

from helpers import ROOT  # noqa: E402
from pspnet_tf.data.demo import generate_demo_dataset  # noqa: E402


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> str:
    """The demo dataset for tiny training runs (helpers.TINY): 16 training and 4 validation
    images of 48x48. Modules that need another size define their own `demo_root`."""
    root = str(tmp_path_factory.mktemp("demo"))
    generate_demo_dataset(root, num_train=16, num_val=4, image_size=48)
    return root


@pytest.fixture
def torch_hidden(tmp_path) -> tuple[dict[str, str], Path]:
    """(environment, marker) for subprocesses in which `import torch` fails and leaves the
    marker behind, so that even an import whose failure is caught is seen."""
    shim = tmp_path / "torch_hidden"
    shim.mkdir()
    marker = tmp_path / "torch_was_imported"
    (shim / "torch.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                                   "raise ImportError('PyTorch must not be needed')\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(shim), ROOT])}, marker


@pytest.fixture
def download_server():
    """A local download server (tests/preset_server.py), shut down after the test."""
    from preset_server import Server

    serving = Server()
    yield serving
    serving.httpd.shutdown()
    serving.httpd.server_close()
