"""PSPNet's test-time preprocessing as a Keras layer: the keep-ratio resize to the test scale
and the normalisation of docs/recipe.md (mmsegmentation's test pipeline).

`Predictor`, the SavedModel export and the LiteRT/ONNX graph all run this layer, so they
give the network the same inputs; the data pipeline's training transforms share its
`keep_ratio_size` and `normalize`.
"""

from typing import Any

import keras
import tensorflow as tf

from pspnet_tf.data.transforms import keep_ratio_size, normalize
from pspnet_tf.models.layers import PACKAGE


@keras.saving.register_keras_serializable(package=PACKAGE)
class PSPNetPreprocessor(keras.layers.Layer):
    """uint8 RGB images [B, H, W, 3] or one image [H, W, 3] (or float32 holding whole numbers
    0..255) -> normalised images at the keep-ratio size of `scale` (LONG, SHORT edge) times
    `ratio`, of the same rank, in the compute dtype of the layer's dtype policy (the
    normalisation itself runs in float32).

    `call(images, ratio=1.0, size=None)`: `size` (height, width) overrides the computed
    size, for graphs with static shapes (`network_size` gives it as Python ints).
    """

    def __init__(self, scale: tuple[int, int] = (2048, 512), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scale = tuple(int(edge) for edge in scale)

    def network_size(self, height: Any, width: Any, ratio: Any = 1.0) -> tuple[Any, Any]:
        """The (height, width) the network sees for an image of (height, width)."""
        return keep_ratio_size(height, width, self.scale, ratio)

    def call(self, images: tf.Tensor, ratio: Any = 1.0,
             size: tf.Tensor | tuple[int, int] | None = None) -> tf.Tensor:
        _check_rank(images.shape.rank)
        if size is None:
            shape = tf.shape(images)
            size = tf.stack(self.network_size(shape[-3], shape[-2], ratio))
        # The resize kernel reads uint8 itself (the same float32 result as casting first) and
        # so never holds a float copy of the full image.
        resized = tf.image.resize(images, size, "bilinear")
        # mmseg resizes uint8 images, so the resized pixels are whole numbers.
        normalized = normalize(tf.clip_by_value(tf.round(resized), 0.0, 255.0))
        return tf.cast(normalized, self.compute_dtype)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        _check_rank(len(input_shape))
        height, width = input_shape[-3:-1]
        if height is not None and width is not None:
            height, width = (int(edge) for edge in self.network_size(height, width))
        return (*input_shape[:-3], height, width, 3)

    def get_config(self) -> dict:
        return {**super().get_config(), "scale": list(self.scale)}


def _check_rank(rank: int | None) -> None:
    if rank not in (None, 3, 4):
        raise ValueError("PSPNetPreprocessor takes images [B, H, W, 3] or one image "
                         f"[H, W, 3]; got a tensor of rank {rank}")
