"""SavedModel export for TF Serving: raw pixels in, class ids out.

The serving graph holds the whole-image protocol of `Predictor` (keep-ratio resize to the
test scale, normalisation, logits resized back to the input size and argmax, by bands of
rows as `labels_at_size` does), built by the same `build_segmentation`, so a served model
gives the labels evaluate.py measures. The class ids leave it in the smallest type that
holds them (uint8 up to 255 classes), or PNG-encoded, so that replies fit gRPC's default
4 MiB message. It is written to `<export_dir>/<version>/`, the layout TF Serving watches for
new versions, with warm-up requests for every signature (inference/warmup.py).
"""

import functools
import json
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from pspnet_tf.atomic import check_can_create, prepare_folder, temporary_prefix
from pspnet_tf.data.descriptors import IGNORE_INDEX
from pspnet_tf.errors import ParameterError, environment_faults
from pspnet_tf.inference.warmup import write_warmup_requests
from pspnet_tf.models.prediction import (
    CONFIDENCE,
    PROBABILITIES,
    SEGMENTATION,
    build_segmentation,
    network_logits,
)
from pspnet_tf.models.preprocessing import PSPNetPreprocessor
from pspnet_tf.models.winograd_conversion import inference_network, winograd_layers

# The client sees "assertion failed: [MESSAGE]" (the Assert op's own prefix) and nothing else.
SAME_SIZE_MESSAGE = ("all images of one request must have the same height and width; "
                     "send differently sized images in separate requests")
EMPTY_REQUEST_MESSAGE = "the request holds no images; send at least one image per request"
# Within a version folder; TF Serving ignores assets.extra/ but for its warm-up requests.
METADATA_FILE = os.path.join("assets.extra", "pspnet_tf.json")
SEGMENTATION_PNG = "segmentation_png_bytes"  # "_bytes": TF Serving's REST API sends it as b64
# One small image per signature in the warm-up requests. Its size does not matter to the
# network, which runs at the keep-ratio resize to the test scale (docs/serving.md).
WARMUP_SIZE = 64


def _not_empty(batch: tf.Tensor) -> tf.Tensor:
    """`batch`, checked to hold at least one image before anything uses it (otherwise the
    first failing op would report something unrelated, e.g. a convolution's filter depth)."""
    check = tf.debugging.Assert(tf.shape(batch)[0] > 0, [EMPTY_REQUEST_MESSAGE])
    with tf.control_dependencies([check]):
        return tf.identity(batch)


def _decode(data: tf.Tensor) -> tf.Tensor:
    """JPEG/PNG/BMP/GIF bytes -> uint8 [H, W, 3] RGB (grayscale expanded, alpha dropped).

    JPEGs use libjpeg's accurate integer IDCT, as OpenCV (and so evaluate.py) does: with
    TensorFlow's default fast IDCT most pixels come out a few values apart.
    """
    image = tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False))
    return tf.ensure_shape(image, [None, None, 3])


def decode_batch(image_bytes: tf.Tensor) -> tf.Tensor:
    """A [batch] string tensor of encoded images -> uint8 [batch, H, W, 3]; sizes must match."""
    image_bytes = _not_empty(image_bytes)
    first = tf.shape(_decode(image_bytes[0]))

    def decode_one(data: tf.Tensor) -> tf.Tensor:
        image = _decode(data)
        same = tf.debugging.Assert(tf.reduce_all(tf.shape(image) == first), [SAME_SIZE_MESSAGE])
        with tf.control_dependencies([same]):
            return tf.identity(image)

    return tf.map_fn(decode_one, image_bytes,
                     fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))


def _write_metadata(folder: str, confidence_threshold: float, winograd: list[str]) -> None:
    """The export's settings that its signatures do not show, as METADATA_FILE in `folder`:
    the confidence threshold, the "unknown" label, and the layers computed by Winograd
    (chosen at export: `inference_network`)."""
    metadata = {"confidence_threshold": confidence_threshold, "unknown_label": IGNORE_INDEX,
                "winograd_layers": winograd}
    os.makedirs(os.path.join(folder, os.path.dirname(METADATA_FILE)), exist_ok=True)
    with open(os.path.join(folder, METADATA_FILE), "w") as handle:
        json.dump(metadata, handle, indent=2)


def label_dtype(num_classes: int) -> tf.DType:
    """The type the served class ids leave in: uint8 for up to 255 classes, else uint16 (up
    to 65535), each keeping its largest value free for a client's "unknown" or "ignore"."""
    for dtype in (tf.uint8, tf.uint16):
        if num_classes <= dtype.max:
            return dtype
    raise ParameterError("the model has {num_classes}={value} classes; a served label map "
                         "holds at most 65535", value=num_classes)


def encode_png(labels: tf.Tensor) -> tf.Tensor:
    """Class ids [batch, H, W] (uint8 or uint16) -> a [batch] string tensor of grayscale PNG
    files of the same bit depth, each pixel its class id."""
    return tf.map_fn(lambda label_map: tf.io.encode_png(label_map[..., tf.newaxis]), labels,
                     fn_output_signature=tf.TensorSpec([], tf.string))


def _warmup_requests() -> dict[str, dict[str, np.ndarray]]:
    """The inputs of one request per signature: a black WARMUP_SIZE square image."""
    pixels = np.zeros((1, WARMUP_SIZE, WARMUP_SIZE, 3), np.uint8)
    png = np.array([tf.io.encode_png(pixels[0]).numpy()], object)
    return {"serving_default": {"images": pixels}, "serve_encoded": {"image_bytes": png},
            "serve_png": {"image_bytes": png}}


def _class_count(model: keras.Model) -> int:
    shape = model.output_shape
    return (shape["logits"] if isinstance(shape, dict) else shape)[-1]


def next_version(export_dir: str) -> int:
    """One more than the largest integer-named version folder in `export_dir` (1 if none)."""
    names = os.listdir(export_dir) if os.path.isdir(export_dir) else []
    return max([int(name) for name in names if name.isdigit()], default=0) + 1


def export_saved_model(model: keras.Model, scale: tuple[int, int], export_dir: str,
                       version: int | None = None, with_probabilities: bool = False,
                       jit_compile: bool = False, with_confidence: bool = False,
                       confidence_threshold: float = 0.0, winograd: bool | None = None) -> str:
    """Writes the serving SavedModel to `export_dir/<version>` and returns that path.

    Signatures: `serving_default` takes `images` (uint8 [batch, H, W, 3]); `serve_encoded`
    takes `image_bytes` (a [batch] string tensor of JPEG/PNG files). Both return
    `segmentation` ([batch, H, W] class ids, of `label_dtype`) and, if asked, `probabilities`
    (float32 [batch, H, W, num_classes], the softmax of the logits at the input size) and
    `confidence` (float32 [batch, H, W], the top class's probability, by bands of rows).
    With `confidence_threshold` T > 0 the served `segmentation` is 255 ("unknown") where
    that probability is below T; T is recorded in `<version>/assets.extra/pspnet_tf.json`
    (METADATA_FILE). `serve_png` takes `image_bytes` and returns `segmentation_png_bytes`,
    the same class ids as one PNG file per image (`encode_png`).
    `assets.extra/tf_serving_warmup_requests` holds one small request per signature.
    The network is `inference_network(model, winograd)`: BatchNorms folded into the
    convolutions and, with `winograd` (None: `winograd_by_default()` on the exporting host),
    the 3x3 convolutions of 512 or more channels computed by Winograd's F(2x2, 3x3), the
    same labels faster where oneDNN runs them (docs/performance.md); the layers so computed
    are listed in the metadata. An existing version folder is never
    replaced. The version is written beside its final name and renamed; a failed write
    leaves nothing, and the folder of a killed one is removed by the next export into
    `export_dir` (atomic.remove_stale_temporaries).

    `jit_compile` marks the network for XLA (compiled on first use of each network input
    size), which serves faster on CPUs (docs/performance.md); TF Serving then needs
    `--xla_cpu_compilation_enabled=true` (experimental there): without it every run of the
    network fails with "XLA compilation disabled", the warm-up requests at load included
    (docs/serving.md). So it is not the default.
    """
    if os.path.exists(export_dir) and not os.path.isdir(export_dir):
        raise ParameterError("{export_dir}={path} is a file, not a folder; pass a new or "
                             "existing model folder (the file was left as it is)",
                             path=export_dir)
    version = next_version(export_dir) if version is None else version
    if version < 1:
        raise ParameterError("{version} must be >= 1, got {value} (TF Serving loads "
                             "integer-named version folders)", value=version)
    path = os.path.join(export_dir, str(version))
    if os.path.exists(path):
        raise ParameterError("{path} already exists; pass another {version} or leave it out "
                             "to use the next free one ({free})", path=path,
                             free=next_version(export_dir))
    # Before the minutes of tracing: the folder must take files (read-only, full, ...).
    prepare_folder(export_dir, "export_dir")
    check_can_create(path)
    preprocessor = PSPNetPreprocessor(scale)
    dtype = label_dtype(_class_count(model))
    model = inference_network(model, winograd)
    network = functools.partial(network_logits, model)
    if jit_compile:
        network = tf.function(network, jit_compile=True)

    outputs = (SEGMENTATION, *((PROBABILITIES,) if with_probabilities else ()),
               *((CONFIDENCE,) if with_confidence else ()))
    segment = build_segmentation(network, preprocessor, outputs=outputs,
                                 confidence_threshold=confidence_threshold)

    labels_only = build_segmentation(network, preprocessor,
                                     confidence_threshold=confidence_threshold)

    def compact(outputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return {**outputs, SEGMENTATION: tf.cast(outputs[SEGMENTATION], dtype)}

    def serve_images(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return compact(segment(_not_empty(images)))

    def serve_encoded(image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        return compact(segment(decode_batch(image_bytes)))

    def serve_png(image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        labels = compact(labels_only(decode_batch(image_bytes)))[SEGMENTATION]
        return {SEGMENTATION_PNG: encode_png(labels)}

    archive = keras.export.ExportArchive()
    # No archive.track(model): it would store every weight a second time, next to the
    # variables the endpoints capture (keras-team/keras#23553), doubling file and serving RAM.
    archive.add_endpoint("serving_default", serve_images, input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    archive.add_endpoint("serve_encoded", serve_encoded, input_signature=[
        tf.TensorSpec([None], tf.string, name="image_bytes")])
    archive.add_endpoint("serve_png", serve_png, input_signature=[
        tf.TensorSpec([None], tf.string, name="image_bytes")])
    # Written beside the target and renamed, so TF Serving never sees a half-written version;
    # the partial folder of a failed write is removed, that of a killed one by the next export.
    temporary = tempfile.mkdtemp(dir=export_dir, prefix=temporary_prefix(path))
    try:
        with environment_faults(path):
            archive.write_out(temporary, verbose=False)
            _write_metadata(temporary, confidence_threshold, winograd_layers(model))
            write_warmup_requests(temporary, _warmup_requests())
            os.rename(temporary, path)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return path
