"""export.py: a SavedModel that plain TensorFlow (and TF Serving) runs with the project's labels."""

import io
import json
import os
import shutil
import subprocess
import textwrap

import cv2
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tensorflow.core.framework.tensor_pb2 import TensorProto
from helpers import DEMO_MODEL_FLAGS as CONFIG
from helpers import DEMO_SCALE as SCALE
from helpers import saved, several_classes, tiny_model, varied_model
from helpers import run_python as run

from pspnet_tf.data.images import decode_image
from pspnet_tf.errors import UserError
from pspnet_tf.inference.deploy import export_model
from pspnet_tf.inference.export import (
    EMPTY_REQUEST_MESSAGE,
    SAME_SIZE_MESSAGE,
    SEGMENTATION_PNG,
    export_saved_model,
    label_dtype,
    next_version,
)
from pspnet_tf.inference.predictor import Predictor
from pspnet_tf.models.winograd_conversion import inference_network

NUM_CLASSES = 5  # configs/demo.cfg

# Runs in a fresh interpreter that never imports pspnet_tf: what a serving client sees.
CLIENT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    export, inputs, output = sys.argv[1:]
    data = np.load(inputs)
    loaded = tf.saved_model.load(export)
    pixels = loaded.signatures["serving_default"](images=tf.constant(data["images"]))
    encoded = loaded.signatures["serve_encoded"](image_bytes=tf.constant(
        [data["png0"].tobytes(), data["png1"].tobytes()]))
    jpeg = loaded.signatures["serve_encoded"](image_bytes=tf.constant([data["jpeg"].tobytes()]))
    try:
        loaded.signatures["serve_encoded"](image_bytes=tf.constant(
            [data["png0"].tobytes(), data["odd_png"].tobytes()]))
        mixed = "no error"
    except tf.errors.InvalidArgumentError as error:
        mixed = error.message
    signatures = {name: {
        "inputs": {key: [spec.dtype.name, spec.shape.as_list()]
                   for key, spec in function.structured_input_signature[1].items()},
        "outputs": {key: [spec.dtype.name, spec.shape.as_list()]
                    for key, spec in function.structured_outputs.items()}}
        for name, function in loaded.signatures.items()}
    np.savez(output, signatures=json.dumps(signatures), pixels=pixels["segmentation"].numpy(),
             probabilities=pixels["probabilities"].numpy(),
             encoded=encoded["segmentation"].numpy(), jpeg=jpeg["segmentation"].numpy(),
             mixed=mixed,
             imported=str(any(name.startswith("pspnet_tf") for name in sys.modules)))
""")


def png_bytes(image: np.ndarray) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return np.frombuffer(buffer.getvalue(), np.uint8)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return saved(varied_model(), tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def exported(weights, tmp_path_factory):
    """`python export.py` at the repository root (its smoke test; test_deploy.py and
    test_model_artifacts.py run the command in process)."""
    export_dir = str(tmp_path_factory.mktemp("export") / "pspnet")
    result = run("export.py", *CONFIG, f"--weights={weights[1]}", f"--export_dir={export_dir}",
                 "--with_probabilities")
    assert result.returncode == 0, result.stderr[-3000:]
    return export_dir


def test_fresh_process_gets_exactly_the_project_labels(weights, exported, tmp_path):
    model, _ = weights
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (2, 37, 53, 3), dtype=np.uint8)
    odd = rng.integers(0, 256, (29, 31, 3), dtype=np.uint8)
    inputs, output = str(tmp_path / "inputs.npz"), str(tmp_path / "outputs.npz")
    jpeg = np.frombuffer(cv2.imencode(".jpg", images[0])[1].tobytes(), np.uint8)
    np.savez(inputs, images=images, png0=png_bytes(images[0]), png1=png_bytes(images[1]),
             odd_png=png_bytes(odd), jpeg=jpeg)
    result = run("-c", CLIENT, os.path.join(exported, "1"), inputs, output)
    assert result.returncode == 0, result.stderr[-3000:]
    served = np.load(output)
    assert str(served["imported"]) == "False"
    assert os.listdir(exported) == ["1"]
    outputs = {"segmentation": ["uint8", [None, None, None]],
               "probabilities": ["float32", [None, None, None, NUM_CLASSES]]}
    assert json.loads(str(served["signatures"])) == {
        "serving_default": {"inputs": {"images": ["uint8", [None, None, None, 3]]},
                            "outputs": outputs},
        "serve_encoded": {"inputs": {"image_bytes": ["string", [None]]}, "outputs": outputs},
        "serve_png": {"inputs": {"image_bytes": ["string", [None]]},
                      "outputs": {SEGMENTATION_PNG: ["string", [None]]}}}
    predictor = Predictor(model, SCALE)
    expected = several_classes(np.stack([predictor.predict(image) for image in images]))
    assert served["pixels"].dtype == np.uint8 and served["pixels"].shape == (2, 37, 53)
    np.testing.assert_array_equal(served["pixels"], expected)
    np.testing.assert_array_equal(served["encoded"], expected)
    # JPEGs decode to the very pixels the project's reader (OpenCV) gives.
    from_jpeg = predictor.predict(decode_image(jpeg.tobytes(), "in-memory.jpg"))
    np.testing.assert_array_equal(served["jpeg"][0], from_jpeg)
    probabilities = tf.nn.softmax(np.stack([predictor.logits(image) for image in images]))
    np.testing.assert_allclose(served["probabilities"], probabilities, atol=1e-5)
    assert_only_the_project_message(str(served["mixed"]), SAME_SIZE_MESSAGE)


def assert_only_the_project_message(error: str, message: str) -> None:
    """What a client gets for bad input holds `message` as the Assert op's line, without the
    op's own comparison details (the tensors and values it compared)."""
    assert f"\nassertion failed: [{message}]\n" in error, error
    assert "did not hold" not in error and "Condition" not in error, error


def test_an_empty_batch_gets_a_clear_error_from_every_signature(exported):
    signatures = tf.saved_model.load(os.path.join(exported, "1")).signatures
    empty = {"serving_default": {"images": tf.zeros([0, 21, 26, 3], tf.uint8)},
             "serve_encoded": {"image_bytes": tf.constant([], tf.string)},
             "serve_png": {"image_bytes": tf.constant([], tf.string)}}
    for name, inputs in empty.items():
        with pytest.raises(tf.errors.InvalidArgumentError) as error:
            signatures[name](**inputs)
        assert_only_the_project_message(error.value.message, EMPTY_REQUEST_MESSAGE)


# gRPC's default limit on a message a client receives (grpc.max_receive_message_length).
GRPC_DEFAULT_LIMIT = 4 * 2**20


def test_a_large_image_gets_compact_replies_with_the_same_labels(exported):
    """A 1280x960 image: int32 ids would be over gRPC's default 4 MiB; uint8 and PNG fit."""
    signatures = tf.saved_model.load(os.path.join(exported, "1")).signatures
    image = np.random.default_rng(8).integers(0, 256, (960, 1280, 3), dtype=np.uint8)
    labels = signatures["serving_default"](images=tf.constant(image[np.newaxis]))[
        "segmentation"].numpy()
    several_classes(labels)
    png = signatures["serve_png"](image_bytes=tf.constant([png_bytes(image).tobytes()]))[
        SEGMENTATION_PNG]
    decoded = np.asarray(Image.open(io.BytesIO(png.numpy()[0])))
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, labels[0])
    assert tf.make_tensor_proto(labels.astype(np.int32)).ByteSize() > GRPC_DEFAULT_LIMIT
    assert tf.make_tensor_proto(labels).ByteSize() < GRPC_DEFAULT_LIMIT / 3
    assert tf.make_tensor_proto(png).ByteSize() < tf.make_tensor_proto(labels).ByteSize()


def test_the_docs_grpc_client_takes_the_replies_of_a_1280x960_photo(exported, tmp_path,
                                                                    monkeypatch):
    """docs/serving.md's gRPC code, against the export loaded here: a stand-in for the stub
    runs each request as TF Serving does (signature, inputs, output_filter) and refuses a
    reply over gRPC's default limit, as a client's channel would."""
    grpc = pytest.importorskip("grpc")
    predict_pb2 = pytest.importorskip("tensorflow_serving.apis.predict_pb2")
    stubs = pytest.importorskip("tensorflow_serving.apis.prediction_service_pb2_grpc")
    signatures = tf.saved_model.load(os.path.join(exported, "1")).signatures
    replies = []

    class Stub:
        def __init__(self, channel):
            pass

        def Predict(self, request, timeout):
            outputs = signatures[request.model_spec.signature_name](**{
                key: tf.make_ndarray(value) for key, value in request.inputs.items()})
            reply = predict_pb2.PredictResponse()
            for key, value in outputs.items():
                if not request.output_filter or key in request.output_filter:
                    reply.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
            assert reply.ByteSize() < GRPC_DEFAULT_LIMIT
            replies.append(reply)
            return reply

    monkeypatch.setattr(stubs, "PredictionServiceStub", Stub)
    monkeypatch.setattr(grpc, "insecure_channel", lambda target: target)
    image = np.random.default_rng(10).integers(0, 256, (960, 1280, 3), dtype=np.uint8)
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    (tmp_path / "photo.jpg").write_bytes(jpeg)
    monkeypatch.chdir(tmp_path)
    docs = open(os.path.join(os.path.dirname(__file__), "..", "docs", "serving.md")).read()
    [code] = [block.split("```")[0] for block in docs.split("```python\n")[1:]
              if "prediction_service_pb2_grpc" in block]
    namespace = {}
    exec(code, namespace)
    assert [list(reply.outputs) for reply in replies] == [["segmentation"],
                                                          [SEGMENTATION_PNG]]
    served = signatures["serving_default"](images=decode_image(jpeg, "photo.jpg")[np.newaxis])
    np.testing.assert_array_equal(namespace["labels"], served["segmentation"][0])
    assert namespace["labels"].dtype == np.uint8


def test_label_dtype_is_the_smallest_that_keeps_a_value_free():
    assert [label_dtype(count) for count in (1, 255, 256, 65535)] == [
        tf.uint8, tf.uint8, tf.uint16, tf.uint16]
    with pytest.raises(UserError, match=r"^the model has num_classes=65536 classes"):
        label_dtype(65536)


@pytest.mark.slow
def test_more_than_255_classes_serve_uint16_labels_and_16_bit_pngs(tmp_path):
    model = varied_model(num_classes=300)
    loaded = tf.saved_model.load(export_saved_model(model, SCALE, str(tmp_path)))
    image = np.random.default_rng(9).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    labels = loaded.signatures["serving_default"](images=tf.constant(image[np.newaxis]))[
        "segmentation"].numpy()
    assert labels.dtype == np.uint16
    np.testing.assert_array_equal(labels[0], Predictor(model, SCALE).predict(image))
    png = loaded.signatures["serve_png"](image_bytes=tf.constant([png_bytes(image).tobytes()]))
    decoded = cv2.imdecode(np.frombuffer(png[SEGMENTATION_PNG].numpy()[0], np.uint8),
                           cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(decoded, labels[0])


def serving_messages():
    """PredictionLog and its parts, declared here from tensorflow_serving/apis' .proto files
    (the field numbers of prediction_log.proto, predict.proto, model.proto) in a private pool,
    with the TensorProto values as bytes (the same wire format); the official classes, where
    installed, are checked by the next test."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    file = descriptor_pb2.FileDescriptorProto(name="warmup_test.proto", package="test",
                                              syntax="proto3")
    string, message, optional = (descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                                 descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
                                 descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    bytes_type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES

    def declare(name, *fields):
        declared = file.message_type.add(name=name)
        for field_name, number, kind, type_name, label in fields:
            declared.field.add(name=field_name, number=number, type=kind, label=label,
                               type_name=type_name)
        return declared

    declare("ModelSpec", ("name", 1, string, None, optional),
            ("signature_name", 3, string, None, optional))
    request = declare("PredictRequest", ("model_spec", 1, message, ".test.ModelSpec", optional),
                      ("inputs", 2, message, ".test.PredictRequest.InputsEntry",
                       descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED))
    entry = request.nested_type.add(name="InputsEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=string, label=optional)
    entry.field.add(name="value", number=2, type=bytes_type, label=optional)
    declare("PredictLog", ("request", 1, message, ".test.PredictRequest", optional))
    declare("PredictionLog", ("predict_log", 6, message, ".test.PredictLog", optional))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("test.PredictionLog"))


def warmup_records(exported):
    path = os.path.join(exported, "1", "assets.extra", "tf_serving_warmup_requests")
    return [record.numpy() for record in tf.data.TFRecordDataset(path)]


def test_warmup_requests_run_every_signature_once(exported):
    """TF Serving replays assets.extra/tf_serving_warmup_requests at load: one request per
    signature, each a valid input of that signature."""
    signatures = tf.saved_model.load(os.path.join(exported, "1")).signatures
    logs = [serving_messages().FromString(record) for record in warmup_records(exported)]
    requests = [log.predict_log.request for log in logs]
    assert [request.model_spec.signature_name for request in requests] == [
        "serving_default", "serve_encoded", "serve_png"]
    assert sorted(signatures.keys()) == sorted(request.model_spec.signature_name
                                               for request in requests)
    for request in requests:
        inputs = {key: tf.make_ndarray(TensorProto.FromString(value))
                  for key, value in request.inputs.items()}
        assert [len(value) for value in inputs.values()] == [1]  # one image
        outputs = signatures[request.model_spec.signature_name](**inputs)
        assert all(output.shape[0] == 1 for output in outputs.values())


def test_warmup_requests_parse_with_tensorflow_serving_api(exported):
    prediction_log_pb2 = pytest.importorskip("tensorflow_serving.apis.prediction_log_pb2")
    logs = [prediction_log_pb2.PredictionLog.FromString(record)
            for record in warmup_records(exported)]
    assert [log.WhichOneof("log_type") for log in logs] == ["predict_log"] * 3
    requests = [log.predict_log.request for log in logs]
    assert [(request.model_spec.signature_name, list(request.inputs)) for request in requests] == [
        ("serving_default", ["images"]), ("serve_encoded", ["image_bytes"]),
        ("serve_png", ["image_bytes"])]
    assert tf.make_ndarray(requests[0].inputs["images"]).shape == (1, 64, 64, 3)


def test_every_weight_is_stored_once(weights, exported):
    stored = tf.train.load_checkpoint(os.path.join(exported, "1", "variables", "variables"))
    values = sum(int(np.prod(shape)) for name, shape in stored.get_variable_to_shape_map().items()
                 if name != "_CHECKPOINTABLE_OBJECT_GRAPH")
    served = inference_network(weights[0])  # what export_saved_model serves here
    assert values == sum(int(np.prod(weight.shape)) for weight in served.weights)


@pytest.mark.slow
def test_jit_compile_exports_an_xla_network_with_the_xla_predictors_labels(weights, tmp_path):
    model, _ = weights
    export_model(model, SCALE, "saved_model", export_dir=str(tmp_path), jit_compile=True)
    serve = tf.saved_model.load(str(tmp_path / "1")).signatures["serving_default"]
    library = serve.graph.as_graph_def().library.function
    assert any(function.attr["_XlaMustCompile"].b for function in library)
    images = np.random.default_rng(5).integers(0, 256, (2, 37, 53, 3), dtype=np.uint8)
    predictor = Predictor(model, SCALE, jit_compile=True)
    expected = several_classes(np.stack([predictor.predict(image) for image in images]))
    np.testing.assert_array_equal(serve(images=tf.constant(images))["segmentation"], expected)


def test_existing_version_is_never_replaced(weights, exported):
    before = sorted(os.listdir(os.path.join(exported, "1")))
    with pytest.raises(UserError, match=r"1 already exists.*next free one \(2\)"):
        export_saved_model(weights[0], SCALE, exported, version=1)
    assert os.listdir(exported) == ["1"]
    assert sorted(os.listdir(os.path.join(exported, "1"))) == before


def test_export_dir_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "model"
    path.write_text("notes")
    with pytest.raises(UserError, match=r"^export_dir=.*model is a file"):
        export_saved_model(tiny_model(), SCALE, str(path))
    with pytest.raises(UserError, match=r"cannot create the export_dir folder .*model/serving"):
        export_saved_model(tiny_model(), SCALE, str(path / "serving"))
    assert path.read_text() == "notes"


def test_next_version_follows_the_largest_integer_folder(tmp_path):
    assert next_version(str(tmp_path / "missing")) == 1
    for name in ("1", "7", "notes", "12b"):
        os.makedirs(tmp_path / name)
    assert next_version(str(tmp_path)) == 8
    with pytest.raises(UserError, match=r"^version must be >= 1, got 0 "):
        export_saved_model(tiny_model(), SCALE, str(tmp_path), version=0)


@pytest.mark.slow
def test_a_single_class_model_exports_and_runs(tmp_path):
    model = tiny_model(num_classes=1)
    path = export_saved_model(model, SCALE, str(tmp_path), with_probabilities=True)
    assert os.path.basename(path) == "1"
    outputs = tf.saved_model.load(path).signatures["serving_default"](
        images=tf.zeros([1, 19, 23, 3], tf.uint8))
    assert outputs["segmentation"].shape == (1, 19, 23)
    assert not outputs["segmentation"].numpy().any()
    np.testing.assert_allclose(outputs["probabilities"], 1.0)


SERVER = shutil.which("tensorflow_model_server")


@pytest.mark.skipif(SERVER is None, reason="no tensorflow_model_server binary on PATH")
def test_tf_serving_answers_rest_and_grpc(weights, exported, tmp_path):
    import base64
    import socket
    import time
    import urllib.request

    grpc = pytest.importorskip("grpc")
    pytest.importorskip("tensorflow_serving.apis")
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    ports = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    grpc_port, rest_port = ports
    server = subprocess.Popen([SERVER, f"--port={grpc_port}", f"--rest_api_port={rest_port}",
                               "--model_name=pspnet", f"--model_base_path={exported}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        image = np.random.default_rng(4).integers(0, 256, (21, 26, 3), dtype=np.uint8)
        expected = Predictor(weights[0], SCALE).predict(image)
        url = f"http://127.0.0.1:{rest_port}/v1/models/pspnet:predict"
        body = json.dumps({"signature_name": "serve_encoded", "instances": [
            {"b64": base64.b64encode(png_bytes(image).tobytes()).decode()}]}).encode()
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(urllib.request.Request(url, body), timeout=30) as r:
                    answer = json.load(r)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(1)
        np.testing.assert_array_equal(answer["predictions"][0]["segmentation"], expected)
        # serve_png's output ends with "_bytes", so REST sends the PNG as {"b64": ...}.
        body = json.dumps({"signature_name": "serve_png", "instances": [
            {"b64": base64.b64encode(png_bytes(image).tobytes()).decode()}]}).encode()
        with urllib.request.urlopen(urllib.request.Request(url, body), timeout=30) as r:
            png = base64.b64decode(json.load(r)["predictions"][0]["b64"])
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), expected)

        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "pspnet"
        request.model_spec.signature_name = "serving_default"
        request.inputs["images"].CopyFrom(tf.make_tensor_proto(image[np.newaxis]))
        reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, 30)
        np.testing.assert_array_equal(tf.make_ndarray(reply.outputs["segmentation"])[0], expected)
    finally:
        server.terminate()
        server.wait()
