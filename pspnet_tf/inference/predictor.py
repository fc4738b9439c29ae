"""Whole-image inference with the evaluation protocol of SPEC.md.

The image is resized keeping its ratio to the test scale, normalised, run through the
model, and the logits are resized back to the ORIGINAL image size before the argmax.
"""

import keras
import numpy as np
import tensorflow as tf

from pspnet_tf.data.transforms import normalize, rescale_keep_ratio


class Predictor:
    """Turns uint8 RGB images of any size into logits or label maps at that size."""

    def __init__(self, model: keras.Model, scale: tuple[int, int]) -> None:
        self._model = model
        self._scale = tuple(scale)
        signature = [tf.TensorSpec([None, None, 3], tf.uint8)]
        self._logits = tf.function(self._compute_logits, input_signature=signature)
        self._labels = tf.function(self._compute_labels, input_signature=signature)

    def _compute_logits(self, image: tf.Tensor) -> tf.Tensor:
        size = tf.shape(image)[:2]
        resized, _ = rescale_keep_ratio(tf.cast(image, tf.float32), None, self._scale)
        # mmseg resizes uint8 images, so the resized pixels are whole numbers.
        resized = tf.clip_by_value(tf.round(resized), 0.0, 255.0)
        outputs = self._model(normalize(resized)[tf.newaxis], training=False)
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs
        return tf.image.resize(tf.cast(logits, tf.float32), size, "bilinear")[0]

    def _compute_labels(self, image: tf.Tensor) -> tf.Tensor:
        return tf.argmax(self._compute_logits(image), axis=-1, output_type=tf.int32)

    def logits(self, image: np.ndarray | tf.Tensor) -> tf.Tensor:
        """Float32 logits [H, W, num_classes] for a uint8 [H, W, 3] RGB image."""
        return self._logits(tf.convert_to_tensor(image, tf.uint8))

    def predict(self, image: np.ndarray | tf.Tensor) -> np.ndarray:
        """Int32 class ids [H, W] for a uint8 [H, W, 3] RGB image."""
        return self._labels(tf.convert_to_tensor(image, tf.uint8)).numpy()
