"""TF Serving warm-up requests: `<version>/assets.extra/tf_serving_warmup_requests`.

TF Serving runs every record of that TFRecord file once when it loads a version, before the
version serves, so the first real request does not pay for the one-time set-up of each
signature. A record is a serialised `tensorflow.serving.PredictionLog` whose `predict_log`
holds a `PredictRequest`; those messages are encoded here from their field numbers
(tensorflow_serving/apis/prediction_log.proto, predict.proto, model.proto), because the
tensorflow-serving-api package pins its own TensorFlow. The tensors inside are TensorFlow's
own `TensorProto`s.
"""

import os
from collections.abc import Mapping

import numpy as np
import tensorflow as tf

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")

# Field numbers: PredictionLog.predict_log, PredictLog.request, PredictRequest.model_spec and
# .inputs (a map: entries of key 1, value 2), ModelSpec.signature_name.
_PREDICT_LOG, _REQUEST, _MODEL_SPEC, _INPUTS, _KEY, _VALUE, _SIGNATURE_NAME = 6, 1, 1, 2, 1, 2, 3


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (wire type 2: strings, bytes, messages)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def prediction_log(signature_name: str, inputs: Mapping[str, np.ndarray]) -> bytes:
    """A serialised PredictionLog holding a PredictRequest of `inputs` for `signature_name`
    (the model name is left empty: TF Serving's warm-up does not read it)."""
    request = _field(_MODEL_SPEC, _field(_SIGNATURE_NAME, signature_name.encode()))
    for key, value in inputs.items():
        tensor = tf.make_tensor_proto(value).SerializeToString()
        request += _field(_INPUTS, _field(_KEY, key.encode()) + _field(_VALUE, tensor))
    return _field(_PREDICT_LOG, _field(_REQUEST, request))


def write_warmup_requests(version_dir: str,
                          requests: Mapping[str, Mapping[str, np.ndarray]]) -> str:
    """Writes one record per signature name of `requests` (its inputs) into `version_dir`'s
    warm-up file and returns the file's path."""
    path = os.path.join(version_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for signature_name, inputs in requests.items():
            writer.write(prediction_log(signature_name, inputs))
    return path
