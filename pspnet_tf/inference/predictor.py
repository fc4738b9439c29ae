"""Inference with the evaluation protocols of docs/recipe.md: whole image, sliding window, multi-scale.

The image is resized keeping its ratio to the test scale (times each ratio), normalised, run
through the model (whole, or in overlapping windows), and the logits of every view are resized
back to the ORIGINAL image size and averaged before the argmax. The exported serving graph
(pspnet_tf.inference.export) calls the same `preprocess` and `logits_at_size`, so it gives the
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
    size = tf.stack(keep_ratio_size(shape[1], shape[2], scale, ratio))
    resized = tf.image.resize(tf.cast(images, tf.float32), size, "bilinear")
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

    def _compute_logits(self, image: tf.Tensor) -> tf.Tensor:
        size = tf.shape(image)[:2]
        views = []
        for ratio in self._ratios:
            inputs = preprocess(image[tf.newaxis], self._scale, ratio)
            for flip in self._flips:
                if flip:
                    logits = tf.reverse(self._run(tf.reverse(inputs, [2])), [2])
                else:
                    logits = self._run(inputs)
                views.append(logits_at_size(logits, size))
        return tf.add_n(views)[0] / len(views)

    def _compute_labels(self, image: tf.Tensor) -> tf.Tensor:
        return tf.argmax(self._compute_logits(image), axis=-1, output_type=tf.int32)

    def logits(self, image: np.ndarray | tf.Tensor) -> tf.Tensor:
        """Float32 logits [H, W, num_classes] for a uint8 [H, W, 3] RGB image."""
        return self._logits(tf.convert_to_tensor(image, tf.uint8))

    def predict(self, image: np.ndarray | tf.Tensor) -> np.ndarray:
        """Int32 class ids [H, W] for a uint8 [H, W, 3] RGB image."""
        return self._labels(tf.convert_to_tensor(image, tf.uint8)).numpy()
