"""Inference with the evaluation protocols of docs/recipe.md: whole image, sliding window,
multi-scale.

The image is resized keeping its ratio to the test scale (times each ratio), normalised, run
through the model (whole, or in overlapping windows), and the logits of every view are resized
back to the ORIGINAL image size and averaged before the argmax. Label maps come from
`labels_at_size`, which does that resize, mean and argmax one band of rows at a time, so
memory does not grow with image size times class count. The exported serving graph
(pspnet_tf.inference.export) calls the same `preprocess` and `labels_at_size`, so it gives the
same labels as this class.
"""

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from pspnet_tf.data.transforms import keep_ratio_size, normalize
from pspnet_tf.inference.sliding import slide_logits


def preprocess(images: tf.Tensor, scale: tuple[int, int], ratio: float = 1.0) -> tf.Tensor:
    """uint8 [B, H, W, 3] RGB -> normalised float32 at the keep-ratio size of scale * ratio."""
    shape = tf.shape(images)
    return normalized_at_size(images, tf.stack(keep_ratio_size(shape[1], shape[2], scale, ratio)))


def normalized_at_size(images: tf.Tensor, size: tf.Tensor | tuple[int, int]) -> tf.Tensor:
    """uint8 (or float32 whole-number) [B, H, W, 3] RGB -> normalised float32 at `size`."""
    # The resize kernel reads uint8 itself (the same float32 result as casting first) and so
    # never holds a float copy of the full image: 432 MB for a 6000x6000 photo.
    resized = tf.image.resize(images, size, "bilinear")
    # mmseg resizes uint8 images, so the resized pixels are whole numbers.
    return normalize(tf.clip_by_value(tf.round(resized), 0.0, 255.0))


def network_logits(model: keras.Model, inputs: tf.Tensor) -> tf.Tensor:
    """Float32 main-head logits of an inference or training-heads model."""
    outputs = model(inputs, training=False)
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs
    return tf.cast(logits, tf.float32)


def logits_at_size(logits: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """Bilinear (align_corners=False) resize of [B, h, w, C] logits to `size` (H, W)."""
    return tf.image.resize(logits, size, "bilinear")


# Float32 logits at the original size that `labels_at_size` holds per view at once (a band of
# rows; at least one row: 3.6 MB for a 6000-pixel-wide image with 150 classes). Small bands
# stay in cache: on a loaded 2-core EPYC, 3000x3000 labels from 512x512x150 logits took 13 s
# with 4 MiB bands, 27 s with 16 MiB, 48 s with 64 MiB and 66 s (5.4 GB) at full size.
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


def labels_at_size(views: Sequence[tf.Tensor], size: tf.Tensor) -> tf.Tensor:
    """Int32 [B, H, W] argmax of the mean of `views` (logits [B, h, w, C], any h, w each)
    resized to `size` (H, W): the labels of `logits_at_size`, averaged, argmax, exactly.

    Works through bands of rows holding about BAND_BYTES of logits per view, because the
    full-size logits take H * W * C * 4 bytes per view: 21.6 GB for a 6000x6000 image with
    ADE20K's 150 classes.
    """
    shape = tf.shape(views[0])
    row_bytes = 4 * tf.reduce_prod(tf.cast(tf.stack([shape[0], size[1], shape[3]]), tf.int64))
    band = tf.cast(tf.maximum(BAND_BYTES // row_bytes, 1), tf.int32)
    count = (size[0] + band - 1) // band

    def body(index: tf.Tensor, bands: tf.TensorArray) -> tuple[tf.Tensor, tf.TensorArray]:
        top = index * band
        bottom = tf.minimum(top + band, size[0])
        rows = [resized_rows(view, size, top, bottom) for view in views]
        labels = tf.argmax(tf.add_n(rows) / len(views), axis=-1, output_type=tf.int32)
        return index + 1, bands.write(index, tf.transpose(labels, [1, 0, 2]))

    bands = tf.TensorArray(tf.int32, size=count, infer_shape=False)
    _, bands = tf.while_loop(lambda index, _: index < count, body, (tf.constant(0), bands))
    return tf.transpose(bands.concat(), [1, 0, 2])


class Predictor:
    """Turns uint8 RGB images of any size into logits or label maps at that size.

    The defaults are the whole-image protocol. `ratios` and `flip` add multi-scale and
    horizontally flipped views; `window=(crop, stride)` runs each view in sliding windows.
    `jit_compile` compiles the network with XLA, once per distinct input size.
    """

    def __init__(self, model: keras.Model, scale: tuple[int, int],
                 ratios: Sequence[float] = (1.0,), flip: bool = False,
                 window: tuple[tuple[int, int], tuple[int, int]] | None = None,
                 jit_compile: bool = False) -> None:
        self._scale = tuple(scale)
        self._ratios = tuple(ratios)
        self._flips = (False, True) if flip else (False,)
        self._window = window
        signature = [tf.TensorSpec([None, None, 3], tf.uint8)]
        self._network = tf.function(lambda inputs: network_logits(model, inputs),
                                    jit_compile=jit_compile)
        self._logits = tf.function(self._compute_logits, input_signature=signature)
        self._labels = tf.function(self._compute_labels, input_signature=signature)

    def _run(self, inputs: tf.Tensor) -> tf.Tensor:
        if self._window is None:
            return self._network(inputs)
        return slide_logits(self._network, inputs, *self._window)

    def _views(self, image: tf.Tensor) -> list[tf.Tensor]:
        """Logits [1, h, w, C] of every view at the network's resolution."""
        views = []
        for ratio in self._ratios:
            inputs = preprocess(image[tf.newaxis], self._scale, ratio)
            for flip in self._flips:
                if flip:
                    views.append(tf.reverse(self._run(tf.reverse(inputs, [2])), [2]))
                else:
                    views.append(self._run(inputs))
        return views

    def _compute_logits(self, image: tf.Tensor) -> tf.Tensor:
        size = tf.shape(image)[:2]
        views = [logits_at_size(logits, size) for logits in self._views(image)]
        return tf.add_n(views)[0] / len(views)

    def _compute_labels(self, image: tf.Tensor) -> tf.Tensor:
        return labels_at_size(self._views(image), tf.shape(image)[:2])[0]

    def logits(self, image: np.ndarray | tf.Tensor) -> tf.Tensor:
        """Float32 logits [H, W, num_classes] for a uint8 [H, W, 3] RGB image (all of them at
        once: `predict` needs far less memory for large images)."""
        return self._logits(tf.convert_to_tensor(image, tf.uint8))

    def predict(self, image: np.ndarray | tf.Tensor) -> np.ndarray:
        """Int32 class ids [H, W] for a uint8 [H, W, 3] RGB image."""
        return self._labels(tf.convert_to_tensor(image, tf.uint8)).numpy()
