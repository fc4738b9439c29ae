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

import functools
from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from pspnet_tf.inference.sliding import slide_logits
from pspnet_tf.models.prediction import (
    CONFIDENCE,
    LOGITS,
    SEGMENTATION,
    build_segmentation,
    network_logits,
)
from pspnet_tf.models.preprocessing import PSPNetPreprocessor


class Predictor:
    """Turns uint8 RGB images of any size into logits or label maps at that size.

    The defaults are the whole-image protocol. `ratios` and `flip` add multi-scale and
    horizontally flipped views; `window=(crop, stride)` runs each view in sliding windows.
    `jit_compile` compiles the network with XLA, once per distinct input size. With
    `confidence_threshold` T > 0 the label maps hold 255 ("unknown") where the top class's
    probability is below T.
    """

    def __init__(self, model: keras.Model, scale: tuple[int, int],
                 ratios: Sequence[float] = (1.0,), flip: bool = False,
                 window: tuple[tuple[int, int], tuple[int, int]] | None = None,
                 jit_compile: bool = False, confidence_threshold: float = 0.0) -> None:
        self._window = window
        signature = [tf.TensorSpec([None, None, 3], tf.uint8)]
        # autograph=False: the loops here are tf.while_loop already (and Keras does not convert
        # the model either); converting the call tree was much of the first image's time.
        self._network = tf.function(lambda inputs: network_logits(model, inputs),
                                    jit_compile=jit_compile, autograph=False)
        preprocessor = PSPNetPreprocessor(scale)
        self._functions = {}
        for outputs in ((LOGITS,), (SEGMENTATION,), (SEGMENTATION, CONFIDENCE)):
            segment = build_segmentation(self._run, preprocessor, tuple(ratios), flip,
                                         outputs=outputs,
                                         confidence_threshold=confidence_threshold)
            self._functions[outputs] = tf.function(functools.partial(self._one, segment),
                                                   input_signature=signature, autograph=False)

    def _run(self, inputs: tf.Tensor) -> tf.Tensor:
        if self._window is None:
            return self._network(inputs)
        return slide_logits(self._network, inputs, *self._window)

    @staticmethod
    def _one(segment: Callable[[tf.Tensor], dict[str, tf.Tensor]], image: tf.Tensor
             ) -> dict[str, tf.Tensor]:
        """`segment`'s outputs for one image [H, W, 3] (the batch of one taken off)."""
        return {name: value[0] for name, value in segment(image[tf.newaxis]).items()}

    def _outputs(self, outputs: tuple[str, ...], image: np.ndarray | tf.Tensor
                 ) -> dict[str, tf.Tensor]:
        return self._functions[outputs](tf.convert_to_tensor(image, tf.uint8))

    def logits(self, image: np.ndarray | tf.Tensor) -> tf.Tensor:
        """Float32 logits [H, W, num_classes] for a uint8 [H, W, 3] RGB image (all of them at
        once: `predict` needs far less memory for large images)."""
        return self._outputs((LOGITS,), image)[LOGITS]

    def predict(self, image: np.ndarray | tf.Tensor) -> np.ndarray:
        """Int32 class ids [H, W] for a uint8 [H, W, 3] RGB image."""
        return self._outputs((SEGMENTATION,), image)[SEGMENTATION].numpy()

    def predict_with_confidence(self, image: np.ndarray | tf.Tensor
                                ) -> tuple[np.ndarray, np.ndarray]:
        """(`predict(image)`, float32 [H, W] confidence): the top class's probability, the
        softmax of the mean logits at the image's size, computed a band of rows at a time
        as the labels are (no full-size probabilities)."""
        found = self._outputs((SEGMENTATION, CONFIDENCE), image)
        return found[SEGMENTATION].numpy(), found[CONFIDENCE].numpy()
