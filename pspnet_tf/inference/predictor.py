"""Inference with the evaluation protocols of docs/recipe.md: whole image, sliding window,
multi-scale.

The image is resized keeping its ratio to the test scale (times each ratio) and normalised
(`PSPNetPreprocessor`), run through the model (whole, or in overlapping windows), and the
logits of every view are resized back to the ORIGINAL image size and averaged before the
argmax. That composition is `build_segmentation` (pspnet_tf.models.prediction), whose label
maps come from `labels_at_size`: the resize, mean and argmax one band of rows at a time. The
exported serving graph (pspnet_tf.inference.export) is built by the same function, so it
gives the same labels as this class.
"""

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from pspnet_tf.inference.sliding import slide_logits
from pspnet_tf.models.prediction import LOGITS, SEGMENTATION, build_segmentation, network_logits
from pspnet_tf.models.preprocessing import PSPNetPreprocessor


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
        self._window = window
        signature = [tf.TensorSpec([None, None, 3], tf.uint8)]
        # autograph=False: the loops here are tf.while_loop already (and Keras does not convert
        # the model either); converting the call tree was much of the first image's time.
        self._network = tf.function(lambda inputs: network_logits(model, inputs),
                                    jit_compile=jit_compile, autograph=False)
        preprocessor = PSPNetPreprocessor(scale)
        self._segment = {output: build_segmentation(self._run, preprocessor, tuple(ratios), flip,
                                                    outputs=(output,))
                         for output in (LOGITS, SEGMENTATION)}
        self._logits = tf.function(lambda image: self._one(LOGITS, image),
                                   input_signature=signature, autograph=False)
        self._labels = tf.function(lambda image: self._one(SEGMENTATION, image),
                                   input_signature=signature, autograph=False)

    def _run(self, inputs: tf.Tensor) -> tf.Tensor:
        if self._window is None:
            return self._network(inputs)
        return slide_logits(self._network, inputs, *self._window)

    def _one(self, output: str, image: tf.Tensor) -> tf.Tensor:
        """`output` of one image [H, W, 3] (the batch of one taken off)."""
        return self._segment[output](image[tf.newaxis])[output][0]

    def logits(self, image: np.ndarray | tf.Tensor) -> tf.Tensor:
        """Float32 logits [H, W, num_classes] for a uint8 [H, W, 3] RGB image (all of them at
        once: `predict` needs far less memory for large images)."""
        return self._logits(tf.convert_to_tensor(image, tf.uint8))

    def predict(self, image: np.ndarray | tf.Tensor) -> np.ndarray:
        """Int32 class ids [H, W] for a uint8 [H, W, 3] RGB image."""
        return self._labels(tf.convert_to_tensor(image, tf.uint8)).numpy()
