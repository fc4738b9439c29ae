"""The single-file deployment graph that LiteRT, ONNX and OpenVINO export convert.

The graph keeps the serving contract of `serving_default`: input `images`, uint8
[1, H, W, 3] RGB; output `segmentation`, [1, H, W] (int32 here: the SavedModel's uint8 is
for the size of a reply over the network); keep-ratio resize to the test
scale, normalisation, the network (BatchNorms folded), logits resized back to the input size
and argmax inside. For a fixed input size every size is computed here in Python, so the
graph holds no float64 size arithmetic (which LiteRT has no builtin kernels for) and every
shape in it is static; the LiteRT converter then turns the einsums and matrix products of
the pyramid layers into fully-connected and batch-matmul ops. (Frozen, the network alone also
converts with unknown H, W and ran within 6.6e-7 of Keras on the tiny test model, so the
layers need no second formulation.)
"""

import keras
import tensorflow as tf

from pspnet_tf.models.folding import fold_batchnorm
from pspnet_tf.models.prediction import SEGMENTATION, build_segmentation, network_logits
from pspnet_tf.models.preprocessing import PSPNetPreprocessor


def segmentation_function(model: keras.Model, scale: tuple[int, int],
                          input_size: tuple[int, int] | None = None) -> tf.Module:
    """A module whose tf.function `segment` maps `images` uint8 [1, H, W, 3] to
    {"segmentation": int32 [1, H, W]}.

    With `input_size` (H, W) the graph is built for that size only, with static shapes;
    without it H and W are dynamic. The pixels are cast to float32 before the resize (the
    same values the uint8 kernel gives; converters have no uint8 bilinear resize), and the
    labels come from one resize of the logits to the input size (the LiteRT and ONNX op sets
    have no TensorArray loop for `labels_at_size`'s bands, so memory grows with
    H * W * classes as in evaluate.py's `logits`).
    """
    network = fold_batchnorm(model)
    # Unbanded: the op sets have no TensorArray loop. For a static input size
    # `build_segmentation` computes the sizes in Python, not in float64 graph arithmetic.
    labels = build_segmentation(lambda inputs: network_logits(network, inputs),
                                PSPNetPreprocessor(scale), banded=False)
    height, width = input_size if input_size else (None, None)
    spec = tf.TensorSpec([1, height, width, 3], tf.uint8, name="images")

    @tf.function(input_signature=[spec])
    def segment(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"segmentation": labels(tf.cast(images, tf.float32))[SEGMENTATION]}

    module = tf.Module()
    module.network, module.segment = network, segment  # the converters find the weights here
    return module
