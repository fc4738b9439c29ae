"""SavedModel export for TF Serving: raw pixels in, class ids out.

The serving graph holds the whole-image protocol of `Predictor` (keep-ratio resize to the
test scale, normalisation, logits resized back to the input size and argmax, by bands of
rows as `labels_at_size` does), built by the same `build_segmentation`, so a served model
gives the labels evaluate.py measures. It is written to
`<export_dir>/<version>/`, the layout TF Serving watches for new versions.
"""

import functools
import os
import shutil
import tempfile

import keras
import tensorflow as tf

from pspnet_tf.atomic import check_can_create, prepare_folder, temporary_prefix
from pspnet_tf.errors import ParameterError, environment_faults
from pspnet_tf.models.folding import fold_batchnorm
from pspnet_tf.models.prediction import (
    PROBABILITIES,
    SEGMENTATION,
    build_segmentation,
    network_logits,
)
from pspnet_tf.models.preprocessing import PSPNetPreprocessor

SAME_SIZE_MESSAGE = ("all images of one request must have the same height and width; "
                     "send differently sized images in separate requests")
EMPTY_REQUEST_MESSAGE = "the request holds no images; send at least one image per request"


def _not_empty(batch: tf.Tensor) -> tf.Tensor:
    """`batch`, checked to hold at least one image before anything uses it (otherwise the
    first failing op would report something unrelated, e.g. a convolution's filter depth)."""
    check = tf.debugging.assert_positive(tf.shape(batch)[0], message=EMPTY_REQUEST_MESSAGE)
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
        same = tf.debugging.assert_equal(tf.shape(image), first, message=SAME_SIZE_MESSAGE)
        with tf.control_dependencies([same]):
            return tf.identity(image)

    return tf.map_fn(decode_one, image_bytes,
                     fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))


def next_version(export_dir: str) -> int:
    """One more than the largest integer-named version folder in `export_dir` (1 if none)."""
    names = os.listdir(export_dir) if os.path.isdir(export_dir) else []
    return max([int(name) for name in names if name.isdigit()], default=0) + 1


def export_saved_model(model: keras.Model, scale: tuple[int, int], export_dir: str,
                       version: int | None = None, with_probabilities: bool = False,
                       jit_compile: bool = False) -> str:
    """Writes the serving SavedModel to `export_dir/<version>` and returns that path.

    Signatures: `serving_default` takes `images` (uint8 [batch, H, W, 3]); `serve_encoded`
    takes `image_bytes` (a [batch] string tensor of JPEG/PNG files). Both return
    `segmentation` (int32 [batch, H, W]) and, if asked, `probabilities` (float32
    [batch, H, W, num_classes], the softmax of the logits at the input size). BatchNorms are
    folded into the convolutions (`fold_batchnorm`). An existing version folder is never
    replaced. The version is written beside its final name and renamed; a failed write
    leaves nothing, and the folder of a killed one is removed by the next export into
    `export_dir` (atomic.remove_stale_temporaries).

    `jit_compile` marks the network for XLA (compiled on first use of each network input
    size), which serves faster on CPUs (docs/performance.md); TF Serving then needs
    `--xla_cpu_compilation_enabled=true` (experimental there): without it the model loads
    but every request fails with "XLA compilation disabled" (docs/serving.md). So it is not
    the default.
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
    model = fold_batchnorm(model)
    network = functools.partial(network_logits, model)
    if jit_compile:
        network = tf.function(network, jit_compile=True)

    segment = build_segmentation(network, preprocessor, outputs=(
        SEGMENTATION, PROBABILITIES) if with_probabilities else (SEGMENTATION,))

    def serve_images(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return segment(_not_empty(images))

    def serve_encoded(image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        return segment(decode_batch(image_bytes))

    archive = keras.export.ExportArchive()
    # No archive.track(model): it would store every weight a second time, next to the
    # variables the endpoints capture (keras-team/keras#23553), doubling file and serving RAM.
    archive.add_endpoint("serving_default", serve_images, input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    archive.add_endpoint("serve_encoded", serve_encoded, input_signature=[
        tf.TensorSpec([None], tf.string, name="image_bytes")])
    # Written beside the target and renamed, so TF Serving never sees a half-written version;
    # the partial folder of a failed write is removed, that of a killed one by the next export.
    temporary = tempfile.mkdtemp(dir=export_dir, prefix=temporary_prefix(path))
    try:
        with environment_faults(path):
            archive.write_out(temporary, verbose=False)
            os.rename(temporary, path)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return path
