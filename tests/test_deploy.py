"""export.py --format=litert|onnx|openvino and --precision: files their own runtimes load in
a fresh process and that give Predictor's (or the SavedModel's) labels."""

import json
import os
import re
import subprocess
import sys
import textwrap

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import DEMO_MODEL_FLAGS as CONFIG
from helpers import DEMO_SCALE as SCALE
from helpers import run_command, run_python, saved, several_classes, tiny_model, varied_model

from pspnet_tf.config import ExperimentConfig
from pspnet_tf.errors import UserError
from pspnet_tf.cli.inference_flags import parse_input_size
from pspnet_tf.data.datasets import get_dataset
from pspnet_tf.inference.calibration import calibration_images
from pspnet_tf.inference.deploy import export_model
from pspnet_tf.inference.export_litert import litert_bytes
from pspnet_tf.inference.precision import with_precision
from pspnet_tf.inference.predictor import Predictor
from pspnet_tf.models.factory import build_model

NUM_CLASSES = 5  # configs/demo.cfg
SIZE = (37, 53)

# Fresh interpreters that never import pspnet_tf (or TensorFlow): what a deployment sees.
LITERT_CLIENT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter
    model, inputs, output = sys.argv[1:]
    interpreter = Interpreter(model_path=model)
    runner = interpreter.get_signature_runner()
    details = runner.get_input_details()["images"], runner.get_output_details()["segmentation"]
    labels = runner(images=np.load(inputs))["segmentation"]
    np.savez(output, labels=labels, dtypes=[d["dtype"].__name__ for d in details],
             shapes=json.dumps([d["shape"].tolist() for d in details]),
             imported=str(any(name.split(".")[0] in ("pspnet_tf", "tensorflow")
                              for name in sys.modules)))
""")
ONNX_CLIENT = textwrap.dedent("""
    import sys
    import numpy as np
    import onnxruntime
    model, inputs, output = sys.argv[1:]
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    data = np.load(inputs)
    results = {key: session.run(["segmentation"], {"images": data[key]})[0] for key in data}
    (first,), (out,) = session.get_inputs(), session.get_outputs()
    np.savez(output, **results, names=[first.name, out.name], types=[first.type, out.type],
             imported=str(any(name.split(".")[0] in ("pspnet_tf", "tensorflow")
                              for name in sys.modules)))
""")
# OpenVINO picks bfloat16 on CPUs with AMX unless told f32; the labels are compared in f32.
OPENVINO_CLIENT = textwrap.dedent("""
    import sys
    import numpy as np
    import openvino
    model, inputs, output = sys.argv[1:]
    compiled = openvino.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    data = np.load(inputs)
    results = {key: compiled(data[key])["segmentation"] for key in data}
    (first,), (out,) = compiled.inputs, compiled.outputs
    np.savez(output, **results, names=[first.any_name, out.any_name],
             types=[first.element_type.get_type_name(), out.element_type.get_type_name()],
             imported=str(any(name.split(".")[0] in ("pspnet_tf", "tensorflow")
                              for name in sys.modules)))
""")


def run(*args: str) -> subprocess.CompletedProcess:
    """`python ARGS`: a deployment's fresh interpreter."""
    return run_python(*args, timeout=900)


def export(*args: str) -> subprocess.CompletedProcess:
    """pspnet-export, in this process, for the demo dataset's tiny model."""
    return run_command("pspnet-export", *CONFIG, *args)


def agreement(got: np.ndarray, expected: np.ndarray) -> float:
    assert got.shape == expected.shape
    return float(np.mean(got == expected))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return saved(varied_model(), tmp_path_factory.mktemp("weights"))


def images(size: tuple[int, int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (1, *size, 3), dtype=np.uint8)


ANY_SIZES = {"odd": SIZE, "tall": (61, 29), "scale": SCALE}  # images(size, seed 0, 1, 2)


def served_in_a_fresh_process(client: str, model_file: str, folder) -> dict[str, np.ndarray]:
    """What `client` (ONNX_CLIENT, OPENVINO_CLIENT) saved for `model_file` and one image of
    each of ANY_SIZES, in a fresh interpreter checked to import neither TensorFlow nor
    pspnet_tf and to name the input `images` and the output `segmentation`."""
    inputs, served = str(folder / "in.npz"), str(folder / "out.npz")
    np.savez(inputs, **{key: images(size, seed) for seed, (key, size) in
                        enumerate(ANY_SIZES.items())})
    result = run("-c", client, model_file, inputs, served)
    assert result.returncode == 0, result.stderr[-3000:]
    served = dict(np.load(served))
    assert str(served["imported"]) == "False"
    assert list(served["names"]) == ["images", "segmentation"]
    return served


def test_litert_file_runs_on_builtin_ops_in_a_fresh_process_with_predictor_labels(
        weights, tmp_path):
    pytest.importorskip("ai_edge_litert")
    model, path = weights
    output = str(tmp_path / "pspnet.tflite")
    result = export(f"--weights={path}", "--format=litert",
                    f"--input_size={SIZE[0]},{SIZE[1]}", f"--output={output}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "litert model written to" in result.stdout
    assert os.listdir(tmp_path) == ["pspnet.tflite"]  # no temporary file left behind
    pixels = images(SIZE, seed=3)
    inputs, served = str(tmp_path / "in.npy"), str(tmp_path / "out.npz")
    np.save(inputs, pixels)
    # ai-edge-litert has no Flex (TensorFlow) kernels: loading proves builtin ops only.
    result = run("-c", LITERT_CLIENT, output, inputs, served)
    assert result.returncode == 0, result.stderr[-3000:]
    served = np.load(served)
    assert str(served["imported"]) == "False"
    assert list(served["dtypes"]) == ["uint8", "int32"]
    assert json.loads(str(served["shapes"])) == [[1, *SIZE, 3], [1, *SIZE]]
    expected = several_classes(Predictor(model, SCALE).predict(pixels[0]))
    assert agreement(served["labels"][0], expected) >= 0.999


@pytest.mark.slow  # over a minute on a 2-core CPU
def test_litert_quantized_files_are_smaller_and_run(weights):
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    model, _ = weights
    pixels = images(SIZE, seed=4)
    expected = several_classes(Predictor(model, SCALE).predict(pixels[0]))
    full = len(litert_bytes(model, SCALE, SIZE))
    assert full > 0.9 * 4 * model.count_params()  # the float32 weights are in the file
    calibration = [images(SIZE, seed)[0] for seed in range(8)]
    for quantize, largest in (("float16", 0.51), ("dynamic_int8", 0.26), ("int8", 0.27)):
        data = litert_bytes(model, SCALE, SIZE, quantize,
                            calibration if quantize == "int8" else None)
        assert len(data) < largest * full, quantize
        runner = litert.Interpreter(model_content=data).get_signature_runner()
        labels = runner(images=pixels)["segmentation"][0]
        assert agreement(labels, expected) > 0.99, quantize


def _tensor_dtypes(interpreter, op: dict) -> list[str]:
    return [interpreter._get_tensor_details(index, 0)["dtype"].__name__
            for index in op["inputs"] if index >= 0]


def test_litert_int8_file_is_full_integer_and_agrees_with_float(weights, demo_root, tmp_path):
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    model, path = weights
    output = str(tmp_path / "int8.tflite")
    result = export(f"--weights={path}", f"--data_root={demo_root}", "--format=litert",
                    "--quantize=int8", "--representative_images=4",
                    f"--input_size={SIZE[0]},{SIZE[1]}", f"--output={output}")
    assert result.returncode == 0, result.stderr[-3000:]
    interpreter = litert.Interpreter(model_path=output)
    interpreter.allocate_tensors()
    ops = [op for op in interpreter._get_ops_details() if op["op_name"] != "DELEGATE"]
    convolutions = [op for op in ops if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED")]
    assert len(convolutions) > 20
    for op in convolutions:  # input and weights int8 (and an int32 bias where there is one)
        assert _tensor_dtypes(interpreter, op)[:2] == ["int8", "int8"], op
    # float32 only where the uint8 pixels enter and the preprocessor rounds them
    floating = {op["op_name"] for op in ops if "float32" in _tensor_dtypes(interpreter, op)}
    assert floating <= {"QUANTIZE", "ROUND", "MINIMUM"}, floating
    runner = interpreter.get_signature_runner()
    assert runner.get_input_details()["images"]["dtype"] == np.uint8
    assert runner.get_output_details()["segmentation"]["dtype"] == np.int32
    predictor = Predictor(model, SCALE)
    for image in calibration_images(ExperimentConfig.from_fields(
            dataset="demo", data_root=demo_root, num_classes=NUM_CLASSES, train_split="val"),
            2, SIZE):
        expected = several_classes(predictor.predict(image))
        labels = runner(images=image[None])["segmentation"][0]
        assert agreement(labels, expected) > 0.95


def test_calibration_images_are_evenly_spaced_training_images_at_the_input_size(demo_root):
    config = ExperimentConfig.from_fields(dataset="demo", data_root=demo_root, num_classes=5)
    dataset = get_dataset("demo", demo_root, "train")  # 16 images
    images = list(calibration_images(config, 4, (20, 30)))
    assert [image.shape for image in images] == [(20, 30, 3)] * 4
    assert all(image.dtype == np.uint8 for image in images)
    for image, index in zip(images, (0, 5, 10, 15)):
        source = dataset.read_image(dataset.samples[index].image_path)
        np.testing.assert_array_equal(image, cv2.resize(source, (30, 20)))  # W, H
    assert len(list(calibration_images(config, 100, (8, 8)))) == 16  # all of a smaller split
    with pytest.raises(UserError, match="representative_images must be >= 1"):
        calibration_images(config, 0, (8, 8))


def test_int8_needs_its_calibration_images_and_only_it_takes_them(tmp_path):
    for quantize, images in (("int8", None), (None, [np.zeros((8, 8, 3), np.uint8)])):
        with pytest.raises(UserError, match="calibration_images go with quantize=int8"):
            export_model(tiny_model(), SCALE, "litert", output=str(tmp_path / "m.tflite"),
                         input_size=(8, 8), quantize=quantize, calibration_images=images)
    with pytest.raises(UserError, match=re.escape("must be uint8 [8, 8, 3] images (the "
                                                  "input_size), got uint8 [9, 9, 3]")):
        export_model(tiny_model(), SCALE, "litert", output=str(tmp_path / "m.tflite"),
                     input_size=(8, 8), quantize="int8",
                     calibration_images=[np.zeros((9, 9, 3), np.uint8)])
    assert os.listdir(tmp_path) == []


@pytest.mark.slow  # 70-140 s on the shared 2-core CPU, most of it tf2onnx's einsum search
def test_onnx_file_takes_any_size_in_onnxruntime_with_predictor_labels(weights, tmp_path):
    pytest.importorskip("tf2onnx")
    pytest.importorskip("onnxruntime")
    model, path = weights
    output = str(tmp_path / "pspnet.onnx")
    result = export(f"--weights={path}", "--format=onnx", f"--output={output}")
    assert result.returncode == 0, result.stderr[-3000:]
    served = served_in_a_fresh_process(ONNX_CLIENT, output, tmp_path)
    assert list(served["types"]) == ["tensor(uint8)", "tensor(int32)"]
    predictor = Predictor(model, SCALE)
    for seed, (key, size) in enumerate(ANY_SIZES.items()):
        expected = several_classes(predictor.predict(images(size, seed)[0]))
        assert agreement(served[key][0], expected) >= 0.999, key


def test_openvino_ir_takes_any_size_in_a_fresh_process_with_the_saved_model_labels(
        weights, tmp_path):
    pytest.importorskip("openvino")
    model, path = weights
    output = str(tmp_path / "pspnet.xml")
    result = export(f"--weights={path}", "--format=openvino", f"--output={output}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"openvino model written to {output} and {tmp_path / 'pspnet.bin'}" in result.stdout
    assert sorted(os.listdir(tmp_path)) == ["pspnet.bin", "pspnet.xml"]  # no temporaries
    assert os.path.getsize(tmp_path / "pspnet.bin") > 0.9 * 4 * model.count_params()  # float32
    served = served_in_a_fresh_process(OPENVINO_CLIENT, output, tmp_path)
    assert list(served["types"]) == ["u8", "i32"]
    assert export(f"--weights={path}", f"--export_dir={tmp_path / 'saved'}").returncode == 0
    serving = tf.saved_model.load(str(tmp_path / "saved" / "1")).signatures["serving_default"]
    for seed, (key, size) in enumerate(ANY_SIZES.items()):
        expected = serving(images=tf.constant(images(size, seed)))["segmentation"].numpy()
        # Another runtime's kernels (oneDNN's, not TensorFlow's): a pixel whose two best
        # logits tie within rounding may differ.
        assert agreement(served[key], several_classes(expected)) >= 0.999, key


def test_openvino_ir_of_a_fixed_input_size_has_static_shapes_and_predictor_labels(
        weights, tmp_path):
    openvino = pytest.importorskip("openvino")
    model, _ = weights
    output = str(tmp_path / "fixed.xml")
    assert "[1, 37x53, 3]" in export_model(model, SCALE, "openvino", output=output,
                                           input_size=SIZE)
    compiled = openvino.Core().compile_model(output, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert [str(port.get_partial_shape()) for port in (*compiled.inputs, *compiled.outputs)] == [
        "[1,37,53,3]", "[1,37,53]"]
    pixels = images(SIZE, seed=8)
    expected = several_classes(Predictor(model, SCALE).predict(pixels[0]))
    assert agreement(compiled(pixels)["segmentation"][0], expected) >= 0.999


def test_openvino_is_refused_beside_an_existing_weights_file_and_without_the_package(
        tmp_path, monkeypatch):
    weights_file = tmp_path / "model.bin"
    weights_file.write_bytes(b"an earlier model's weights")
    with pytest.raises(UserError, match="the weights file .*model.bin of output=.* already "
                       "exists"):
        export_model(tiny_model(), SCALE, "openvino", output=str(tmp_path / "model.xml"))
    assert weights_file.read_bytes() == b"an earlier model's weights"
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed
    with pytest.raises(UserError, match=r"pip install openvino \(the project's \[deploy\]"):
        export_model(tiny_model(), SCALE, "openvino", output=str(tmp_path / "new.xml"))
    assert os.listdir(tmp_path) == ["model.bin"]


@pytest.mark.parametrize("arguments, message", [
    ({"output": "m.tflite"}, "input_size=(HEIGHT, WIDTH) is required for format=litert"),
    ({"input_size": (8, 8)}, "output is required"),
    ({"output": "m.onnx", "input_size": (8, 8)}, "output=m.onnx must end with .tflite"),
    ({"format": "onnx", "output": "m.onnx", "quantize": "float16"}, "quantize is for"),
    ({"output": "m.tflite", "input_size": (8, 8), "quantize": "int4"},
     "quantize=int4 must be one of"),
    ({"output": "m.tflite", "input_size": (8, 8), "precision": "bfloat16"},
     "precision=bfloat16 is for format=saved_model only"),
    ({"format": "saved_model"}, "export_dir is required"),
    ({"format": "onnx", "output": "m.onnx", "jit_compile": True},
     "jit_compile is for format=saved_model only"),
    ({"format": "openvino", "output": "m.onnx"}, "output=m.onnx must end with .xml"),
    ({"format": "openvino", "output": "m.xml", "precision": "bfloat16"},
     "precision=bfloat16 is for format=saved_model only: OpenVINO's runtime runs"),
    ({"format": "tflite"}, "unknown export format 'tflite'"),
])
def test_bad_export_arguments_are_one_clear_error(arguments, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    arguments = {"format": "litert", **arguments}
    with pytest.raises(ValueError, match="^" + re.escape(message)) as caught:
        export_model(tiny_model(), SCALE, **arguments)
    assert isinstance(caught.value, UserError) and "--" not in str(caught.value)
    assert os.listdir(tmp_path) == []


def test_an_existing_output_file_is_never_replaced(tmp_path):
    output = tmp_path / "model.tflite"
    output.write_bytes(b"an earlier model")
    with pytest.raises(UserError, match="already exists"):
        export_model(tiny_model(), SCALE, "litert", output=str(output), input_size=(8, 8))
    assert output.read_bytes() == b"an earlier model"
    assert os.listdir(tmp_path) == ["model.tflite"]


def test_litert_without_input_size_is_one_error_line_from_export_py(weights, tmp_path):
    result = export(f"--weights={weights[1]}", "--format=litert",
                    f"--output={tmp_path / 'm.tflite'}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: --input_size=")
    assert "Traceback" not in result.stderr


def test_parse_input_size():
    assert parse_input_size(None) is None
    assert parse_input_size(["512", "384"]) == (512, 384)
    for bad in (["0", "5"], ["a", "5"], ["1", "2", "3"], ["8"]):
        with pytest.raises(UserError, match=f"--input_size={','.join(bad)} is not two positive"):
            parse_input_size(bad)


@pytest.fixture
def restore_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_bfloat16_precision_runs_the_network_in_bfloat16_with_float32_logits(
        weights, restore_policy):
    model, _ = weights
    config = ExperimentConfig.from_fields(num_classes=NUM_CLASSES, backbone="resnet18_v1c",
                                          psp_channels=16, aux_channels=8)
    assert with_precision(config, None) == config
    assert with_precision(config, "float32").runtime.mixed_precision == "float32"
    mixed = build_model(with_precision(config, "bfloat16"), training_heads=False)
    mixed.set_weights(model.get_weights())
    assert mixed.get_layer("bottleneck_conv").compute_dtype == "bfloat16"
    pixels = images(SIZE, seed=5)[0]
    predictor = Predictor(mixed, SCALE)
    assert predictor.logits(pixels).dtype == "float32"
    expected = several_classes(Predictor(model, SCALE).predict(pixels))
    assert agreement(predictor.predict(pixels), expected) > 0.9


def test_bfloat16_saved_model_serves_float32_logits_labels(weights, tmp_path, restore_policy):
    model, path = weights
    result = export(f"--weights={path}", "--precision=bfloat16", f"--export_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = tf.saved_model.load(str(tmp_path / "1"))
    pixels = images(SIZE, seed=6)
    labels = loaded.signatures["serving_default"](images=tf.constant(pixels))["segmentation"]
    graph = loaded.signatures["serving_default"].graph.as_graph_def()
    functions = [node for function in graph.library.function for node in function.node_def]
    assert any(node.attr["T"].type == tf.bfloat16.as_datatype_enum for node in functions
               if node.op == "Conv2D")
    expected = several_classes(Predictor(model, SCALE).predict(pixels[0]))
    assert agreement(labels.numpy()[0], expected) > 0.9


def test_onnx_without_tf2onnx_names_the_packages_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # as if not installed
    with pytest.raises(UserError, match=r"pip install tf2onnx onnx"):
        export_model(tiny_model(), SCALE, "onnx", output=str(tmp_path / "m.onnx"))
    assert os.listdir(tmp_path) == []
