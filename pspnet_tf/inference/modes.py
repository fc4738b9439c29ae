"""The evaluation modes of evaluate.py and predict.py: their flags and the Predictor each builds.

`whole` is the protocol of the published results (docs/recipe.md); `slide` runs overlapping
crop-sized windows on the resized image; `multiscale` averages the logits of several resize
ratios (and their mirror images).
"""

from collections.abc import Sequence
from typing import Any

import keras
from absl import flags

from pspnet_tf.errors import UserError
from pspnet_tf.inference.predictor import Predictor
from pspnet_tf.models.folding import fold_batchnorm

MODES = ("whole", "slide", "multiscale")
DEFAULT_RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def define_mode_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines --mode, --crop, --stride, --ratios and --flip (call once, from an entry point)."""
    flags.DEFINE_enum("mode", "whole", MODES,
                      "Inference protocol: whole image at the test scale, slide (windows of "
                      "--crop every --stride pixels), or multiscale (--ratios, --flip).",
                      flag_values=flag_values)
    flags.DEFINE_list("crop", ["512", "512"], "Sliding-window size as HEIGHT,WIDTH "
                      "(--mode=slide; published: 512,512, Cityscapes 769,769).",
                      flag_values=flag_values)
    flags.DEFINE_list("stride", ["341", "341"], "Sliding-window step as HEIGHT,WIDTH "
                      "(--mode=slide; about 2/3 of --crop, Cityscapes 513,513).",
                      flag_values=flag_values)
    flags.DEFINE_list("ratios", [str(ratio) for ratio in DEFAULT_RATIOS],
                      "Multiples of --scale whose logits are averaged (--mode=multiscale).",
                      flag_values=flag_values)
    flags.DEFINE_boolean("flip", True, "Also average horizontally flipped views "
                         "(--mode=multiscale).", flag_values=flag_values)


def _numbers(name: str, values: Sequence[str], kind: type, count: int | None) -> tuple:
    try:
        numbers = tuple(kind(value) for value in values)
    except ValueError:
        numbers = ()
    if not numbers or (count and len(numbers) != count) or min(numbers) <= 0:
        amount = f"{count} positive" if count else "positive"
        raise UserError(f"--{name}={','.join(values)} must be {amount} numbers separated by "
                        f"commas, e.g. --{name}=" + {"ratios": "0.5,1.0,1.5"}.get(name, "512,512"))
    return numbers


def predictor_from_flags(model: keras.Model, scale: tuple[int, int],
                         values: Any = None) -> Predictor:
    """The Predictor for the parsed --mode and --jit_compile flags (UserError for malformed
    values), on a copy of `model` with its BatchNorms folded into the convolutions."""
    values = values or flags.FLAGS
    options: dict[str, Any] = {}
    if values.mode == "slide":
        options["window"] = (_numbers("crop", values.crop, int, 2),
                             _numbers("stride", values.stride, int, 2))
    elif values.mode == "multiscale":
        options.update(ratios=_numbers("ratios", values.ratios, float, None), flip=values.flip)
    return Predictor(fold_batchnorm(model), scale, jit_compile=values.jit_compile, **options)
