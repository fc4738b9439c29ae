"""The SavedModel as TF Serving runs it: loaded by TensorFlow's C API, no Python.

tests/data/serve_saved_model.c loads an export as tensorflow_model_server does (the "serve"
tags into a session) and, like it, disables XLA compilation unless given
--xla_cpu_compilation_enabled=true. The tensor names come from the export's SignatureDef, and
its labels are compared with those of the same export loaded by tf.saved_model.load.
"""

import os
import shutil
import subprocess

import numpy as np
import pytest
import tensorflow as tf
from helpers import DEMO_SCALE as SCALE
from helpers import ROOT, several_classes, varied_model
from tensorflow.core.protobuf import saved_model_pb2

from pspnet_tf.inference.deploy import export_model

SOURCE = os.path.join(ROOT, "tests", "data", "serve_saved_model.c")
XLA_ENABLED = "--xla_cpu_compilation_enabled=true"
XLA_DISABLED_MESSAGE = "XLA compilation disabled"
# Autoclustering of every op on the CPU, as TF Serving's XLA guides set it.
AUTO_JIT = "--tf_xla_auto_jit=2 --tf_xla_cpu_global_jit"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> str:
    """The C program, compiled against the TensorFlow wheel's headers and libraries."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        pytest.skip("no C compiler (gcc or cc) on PATH to build tests/data/serve_saved_model.c")
    include, lib = tf.sysconfig.get_include(), tf.sysconfig.get_lib()
    if not os.path.exists(os.path.join(include, "tensorflow", "c", "c_api.h")):
        pytest.skip(f"this TensorFlow install has no C API headers under {include}")
    if not os.path.exists(os.path.join(lib, "libtensorflow_cc.so.2")):
        pytest.skip(f"this TensorFlow install has no libtensorflow_cc.so.2 in {lib} (not Linux?)")
    binary = str(tmp_path_factory.mktemp("c_api") / "serve_saved_model")
    build = subprocess.run(
        [compiler, "-O1", "-o", binary, SOURCE, f"-I{include}", f"-L{lib}",
         "-l:libtensorflow_cc.so.2", "-l:libtensorflow_framework.so.2", f"-Wl,-rpath,{lib}"],
        capture_output=True, text=True, check=False, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    return binary


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, str]:
    """The same tiny model exported plain and with jit_compile (version folders)."""
    model = varied_model()
    root = tmp_path_factory.mktemp("exports")
    for name, jit_compile in (("plain", False), ("jit_compile", True)):
        line = export_model(model, SCALE, "saved_model", export_dir=str(root / name),
                            jit_compile=jit_compile)
        # What export.py prints says what TF Serving needs, for the XLA export only.
        assert (XLA_ENABLED in line) == jit_compile, line
    return {name: str(root / name / "1") for name in ("plain", "jit_compile")}


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> tuple[np.ndarray, str]:
    """An odd-sized uint8 RGB image and the raw file of its bytes the C program reads."""
    pixels = np.random.default_rng(1).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    path = str(tmp_path_factory.mktemp("image") / "image.raw")
    pixels.tofile(path)
    return pixels, path


def tensor_names(export: str) -> tuple[str, str]:
    """serving_default's `images` and `segmentation` tensor names, from the SignatureDef."""
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(export, "saved_model.pb"), "rb") as file:
        saved_model.ParseFromString(file.read())
    (graph,) = [graph for graph in saved_model.meta_graphs if "serve" in graph.meta_info_def.tags]
    signature = graph.signature_def["serving_default"]
    return signature.inputs["images"].name, signature.outputs["segmentation"].name


def serve(server: str, export: str, image: tuple[np.ndarray, str], *options: str,
          xla_flags: str | None = None) -> subprocess.CompletedProcess:
    pixels, path = image
    env = {key: value for key, value in os.environ.items() if key != "TF_XLA_FLAGS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    if xla_flags is not None:
        env["TF_XLA_FLAGS"] = xla_flags
    return subprocess.run([server, export, *tensor_names(export), path, str(pixels.shape[0]),
                           str(pixels.shape[1]), *options],
                          capture_output=True, text=True, check=False, env=env, timeout=300)


def labels_of(result: subprocess.CompletedProcess, shape: tuple[int, int]) -> np.ndarray:
    assert result.returncode == 0, result.stderr[-3000:]
    return np.array(result.stdout.split(), np.int32).reshape(shape)


def python_labels(export: str, pixels: np.ndarray) -> np.ndarray:
    serve_images = tf.saved_model.load(export).signatures["serving_default"]
    labels = serve_images(images=tf.constant(pixels[np.newaxis]))["segmentation"].numpy()[0]
    return several_classes(labels)


def test_the_plain_export_runs_with_and_without_xla(server, exports, image):
    expected = python_labels(exports["plain"], image[0])
    shape = image[0].shape[:2]
    for options in ((), (XLA_ENABLED,)):
        got = labels_of(serve(server, exports["plain"], image, *options), shape)
        np.testing.assert_array_equal(got, expected, err_msg=str(options))
    # Autoclustering (TF_XLA_FLAGS) compiles parts of the plain graph with XLA, so a server
    # without the switch then fails even on the plain export.
    refused = serve(server, exports["plain"], image, xla_flags=AUTO_JIT)
    assert refused.returncode == 2, refused.stdout[-300:]
    assert f"request 1 failed: {XLA_DISABLED_MESSAGE}" in refused.stderr, refused.stderr[-3000:]


def test_the_jit_compile_export_runs_only_with_xla_enabled(server, exports, image):
    export = exports["jit_compile"]
    got = labels_of(serve(server, export, image, XLA_ENABLED), image[0].shape[:2])
    np.testing.assert_array_equal(got, python_labels(export, image[0]))
    # TF Serving's default: every run fails (the C API runs no warm-up, so the session
    # loads); no fallback to the network without XLA, whatever TF_XLA_FLAGS says.
    for xla_flags in (None, "--tf_xla_cpu_global_jit", AUTO_JIT):
        refused = serve(server, export, image, xla_flags=xla_flags)
        assert refused.returncode == 2, (xla_flags, refused.stdout[-300:])
        for request in (1, 2):  # not only the first request: the error persists
            assert f"request {request} failed: {XLA_DISABLED_MESSAGE}" in refused.stderr, (
                xla_flags, refused.stderr[-3000:])
