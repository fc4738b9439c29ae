"""Label maps from a PSPNet's logits: the network call, the bilinear resize of logits to the
image size and the argmax (and the top class's probability), one band of rows at a time, so
that memory does not grow with image size times class count. `build_segmentation` composes preprocess -> logits -> labels
once for every inference path: `PSPNetSegmenter.segment`, `Predictor`
(pspnet_tf.inference.predictor), the SavedModel export and the LiteRT/ONNX graph.
"""

import weakref
from collections.abc import Callable, Collection, Sequence

import keras
import numpy as np
import tensorflow as tf

from pspnet_tf.data.descriptors import IGNORE_INDEX
from pspnet_tf.errors import ParameterError
from pspnet_tf.models.preprocessing import PSPNetPreprocessor

def network_logits(model: keras.Model, inputs: tf.Tensor) -> tf.Tensor:
    """Float32 main-head logits of an inference or training-heads model."""
    outputs = model(inputs, training=False)
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs
    return tf.cast(logits, tf.float32)


def logits_at_size(logits: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """Bilinear (align_corners=False) resize of [B, h, w, C] logits to `size` (H, W)."""
    return tf.image.resize(logits, size, "bilinear")


# Float32 logits at the original size that `labels_at_size` holds per view at once (a band of
# rows; at least one row). Small bands stay in cache, which is faster than larger ones
# (docs/performance.md).
BAND_BYTES = 4 * 2**20


def _row_interpolation(rows: tf.Tensor, in_height: tf.Tensor,
                       out_height: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Source rows (lower, upper) and weight of output `rows` in TensorFlow's bilinear
    (half-pixel) resize, with the kernel's float32 arithmetic (CachedInterpolation)."""
    scale = tf.cast(in_height, tf.float32) / tf.cast(out_height, tf.float32)
    position = (tf.cast(rows, tf.float32) + 0.5) * scale - 0.5
    floor = tf.floor(position)
    lower = tf.maximum(tf.cast(floor, tf.int32), 0)
    upper = tf.minimum(tf.cast(tf.math.ceil(position), tf.int32), in_height - 1)
    return lower, upper, position - floor


def resized_rows(logits: tf.Tensor, size: tf.Tensor, top: tf.Tensor,
                 bottom: tf.Tensor) -> tf.Tensor:
    """Rows [top, bottom) of `logits_at_size(logits, size)`, bit for bit, computing only them.

    The resize kernel interpolates along the width first, then between two such rows. So
    the source rows the band touches are resized to the full width by the kernel itself (their
    height unchanged, which copies rows exactly), and each output row is then mixed from its
    two rows with the kernel's weight and formula, `top + (bottom - top) * weight`.
    """
    lower, upper, weight = _row_interpolation(tf.range(top, bottom), tf.shape(logits)[1],
                                              size[0])
    first, last = lower[0], upper[-1]
    widened = tf.image.resize(logits[:, first:last + 1], tf.stack([last + 1 - first, size[1]]),
                              "bilinear")
    above = tf.gather(widened, lower - first, axis=1)
    below = tf.gather(widened, upper - first, axis=1)
    return above + (below - above) * weight[:, tf.newaxis, tf.newaxis]


def top_probability(logits: tf.Tensor) -> tf.Tensor:
    """Float32 [...]: the largest softmax probability of `logits` [..., C], computed as
    1 / sum(exp(l - max l)) over the last axis without the other classes' probabilities."""
    peak = tf.reduce_max(logits, axis=-1, keepdims=True)
    return tf.math.reciprocal(tf.reduce_sum(tf.exp(logits - peak), axis=-1))


def labels_at_size(views: Sequence[tf.Tensor], size: tf.Tensor, with_confidence: bool = False
                   ) -> tf.Tensor | tuple[tf.Tensor, tf.Tensor]:
    """Int32 [B, H, W] argmax of the mean of `views` (logits [B, h, w, C], any h, w each)
    resized to `size` (H, W): the labels of `logits_at_size`, averaged, argmax, exactly.
    With `with_confidence`, (labels, confidence): also the `top_probability` of that mean,
    float32 [B, H, W], computed per band as well.

    Works through bands of rows holding about BAND_BYTES of logits per view, because the
    full-size logits take H * W * C * 4 bytes per view: 21.6 GB for a 6000x6000 image with
    ADE20K's 150 classes.
    """
    shape = tf.shape(views[0])
    row_bytes = 4 * tf.reduce_prod(tf.cast(tf.stack([shape[0], size[1], shape[3]]), tf.int64))
    band = tf.cast(tf.maximum(BAND_BYTES // row_bytes, 1), tf.int32)
    count = (size[0] + band - 1) // band

    def body(index: tf.Tensor, arrays: tuple[tf.TensorArray, ...]
             ) -> tuple[tf.Tensor, tuple[tf.TensorArray, ...]]:
        top = index * band
        bottom = tf.minimum(top + band, size[0])
        rows = [resized_rows(view, size, top, bottom) for view in views]
        mean = tf.add_n(rows) / len(views)
        found = [tf.argmax(mean, axis=-1, output_type=tf.int32)]
        if with_confidence:
            found.append(top_probability(mean))
        return index + 1, tuple(array.write(index, tf.transpose(value, [1, 0, 2]))
                                for array, value in zip(arrays, found))

    dtypes = (tf.int32, tf.float32) if with_confidence else (tf.int32,)
    arrays = tuple(tf.TensorArray(dtype, size=count, infer_shape=False) for dtype in dtypes)
    _, arrays = tf.while_loop(lambda index, _: index < count, body, (tf.constant(0), arrays))
    found = tuple(tf.transpose(array.concat(), [1, 0, 2]) for array in arrays)
    return found if with_confidence else found[0]


SEGMENTATION, LOGITS, PROBABILITIES, CONFIDENCE = (
    "segmentation", "logits", "probabilities", "confidence")


def build_segmentation(network: Callable[[tf.Tensor], tf.Tensor],
                       preprocessor: PSPNetPreprocessor, ratios: Sequence[float] = (1.0,),
                       flip: bool = False, banded: bool = True,
                       outputs: Collection[str] = (SEGMENTATION,),
                       confidence_threshold: float = 0.0
                       ) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
    """The preprocess -> logits -> labels function of every inference path.

    It maps images [B, H, W, 3] (uint8, or float32 pixel values) to the requested `outputs`
    at the input size: SEGMENTATION (int32 [B, H, W], the argmax of the views' mean logits),
    LOGITS (float32 [B, H, W, C], that mean), PROBABILITIES (their softmax) and CONFIDENCE
    (float32 [B, H, W], the top class's probability, `top_probability` of that mean, by bands
    of rows with `banded`: no full-size probabilities). With `confidence_threshold` T > 0,
    SEGMENTATION is IGNORE_INDEX (255, "unknown") where CONFIDENCE < T. The views are
    the `preprocessor`'s keep-ratio resize at each of `ratios`, each also mirrored with `flip`
    (its logits mirrored back); `network` maps preprocessed inputs to float32 logits (e.g.
    `network_logits` of a model, a sliding window, an XLA-compiled function). With `banded`
    the labels come from `labels_at_size` (bands of rows, a TensorArray loop), else from one
    full-size resize (the same labels, for op sets without that loop). When H and W are
    static the network input sizes are computed here in Python, so the graph has static
    shapes.
    """
    if not 0.0 <= confidence_threshold <= 1.0:
        raise ParameterError("{confidence_threshold} must be in [0, 1] (0 = off), got {value}",
                             value=confidence_threshold)
    with_confidence = CONFIDENCE in outputs or confidence_threshold > 0
    flips = (False, True) if flip else (False,)

    def views(images: tf.Tensor) -> list[tf.Tensor]:
        height, width = images.shape[1:3]
        found = []
        for ratio in ratios:
            size = (None if height is None or width is None else
                    tuple(int(edge) for edge in preprocessor.network_size(height, width, ratio)))
            inputs = preprocessor(images, ratio=ratio, size=size)
            for mirrored in flips:
                found.append(tf.reverse(network(tf.reverse(inputs, [2])), [2]) if mirrored
                             else network(inputs))
        return found

    def segment(images: tf.Tensor) -> dict[str, tf.Tensor]:
        size = tf.shape(images)[1:3]
        if images.shape[1] is not None and images.shape[2] is not None:
            size = tf.constant(images.shape[1:3].as_list(), tf.int32)
        logits = views(images)
        results = {}
        full_size = None
        if LOGITS in outputs or PROBABILITIES in outputs or not banded:
            resized = [logits_at_size(view, size) for view in logits]
            full_size = resized[0] if len(resized) == 1 else tf.add_n(resized) / len(resized)
        if SEGMENTATION in outputs or CONFIDENCE in outputs:
            if banded:
                found = labels_at_size(logits, size, with_confidence)
                labels, confidence = found if with_confidence else (found, None)
            else:
                labels = tf.argmax(full_size, axis=-1, output_type=tf.int32)
                confidence = top_probability(full_size) if with_confidence else None
            if confidence_threshold > 0:
                labels = tf.where(confidence < confidence_threshold, IGNORE_INDEX, labels)
            results[SEGMENTATION] = labels
            results[CONFIDENCE] = confidence
        if LOGITS in outputs:
            results[LOGITS] = full_size
        if PROBABILITIES in outputs:
            results[PROBABILITIES] = tf.nn.softmax(full_size, axis=-1)
        return {name: results[name] for name in outputs}

    return segment


_WHOLE_IMAGE: "weakref.WeakKeyDictionary[keras.Model, dict]" = weakref.WeakKeyDictionary()


def whole_image_segmentation(model: keras.Model, preprocessor: PSPNetPreprocessor,
                             image: np.ndarray | tf.Tensor,
                             outputs: tuple[str, ...] = (SEGMENTATION,),
                             confidence_threshold: float = 0.0) -> dict[str, np.ndarray]:
    """`outputs` of `build_segmentation` for a uint8 RGB image [H, W, 3] (e.g. int32 class
    ids [H, W]): `Predictor(model, scale)`'s whole-image protocol, traced once per model,
    outputs and threshold."""
    functions = _WHOLE_IMAGE.setdefault(model, {})
    key = (outputs, float(confidence_threshold))
    if key not in functions:
        segment = build_segmentation(lambda inputs: network_logits(model, inputs), preprocessor,
                                     outputs=outputs, confidence_threshold=confidence_threshold)

        def one(pixels: tf.Tensor) -> dict[str, tf.Tensor]:
            return {name: value[0] for name, value in segment(pixels[tf.newaxis]).items()}

        functions[key] = tf.function(  # no AutoGraph: its loop is a tf.while_loop
            one, input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)], autograph=False)
    found = functions[key](tf.convert_to_tensor(image, tf.uint8))
    return {name: value.numpy() for name, value in found.items()}
