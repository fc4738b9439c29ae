"""The evaluation modes of evaluate.py and predict.py and the Predictor each builds.

`whole` is the protocol of the published results (docs/recipe.md); `slide` runs overlapping
crop-sized windows on the resized image; `multiscale` averages the logits of several resize
ratios (and their mirror images).
"""

from collections.abc import Sequence

import keras

from pspnet_tf.errors import UserError
from pspnet_tf.inference.predictor import Predictor
from pspnet_tf.models.winograd_conversion import inference_network

MODES = ("whole", "slide", "multiscale")
DEFAULT_CROP = (512, 512)
DEFAULT_STRIDE = (341, 341)
DEFAULT_RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def predictor_for(model: keras.Model, scale: tuple[int, int], mode: str = "whole", *,
                  crop: tuple[int, int] = DEFAULT_CROP,
                  stride: tuple[int, int] = DEFAULT_STRIDE,
                  ratios: Sequence[float] = DEFAULT_RATIOS, flip: bool = True,
                  jit_compile: bool = False, confidence_threshold: float = 0.0,
                  winograd: bool | None = None) -> Predictor:
    """The Predictor of `mode` on `inference_network(model, winograd)`, a copy of `model` with
    its BatchNorms folded into the convolutions and, with `winograd` (None:
    `winograd_by_default()`), its large 3x3 convolutions computed by Winograd: `whole` at
    the test `scale`; `slide` with `crop`-sized windows every `stride` pixels (height,
    width); `multiscale` averaging the logits of `ratios` of `scale` (and their mirror
    images with `flip`). `jit_compile` compiles the network with XLA; `confidence_threshold`
    > 0 labels pixels of lower top-class probability 255."""
    if mode not in MODES:
        raise UserError(f"unknown inference mode {mode!r}; choose one of {', '.join(MODES)}")
    options: dict = {}
    if mode == "slide":
        options["window"] = (tuple(crop), tuple(stride))
    elif mode == "multiscale":
        options.update(ratios=tuple(ratios), flip=flip)
    return Predictor(inference_network(model, winograd), scale, jit_compile=jit_compile,
                     confidence_threshold=confidence_threshold, **options)
