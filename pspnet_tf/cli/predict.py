"""Segments images with trained weights and writes label maps, overlays and side-by-sides.

`python predict.py --flagfile=configs/voc_r50.cfg --weights=runs/voc_r50/final_weights.h5
--input='photos/*.jpg' --output=predictions` writes, per input image <stem>:
  <output>/labels/<stem>.png        class ids as a palette PNG in the dataset's colours
  <output>/overlays/<stem>.png      the prediction blended over the image
  <output>/side_by_side/<stem>.png  image | prediction | legend (with --side_by_side)
  <output>/confidence/<stem>.png    the top class's probability p as a gray PNG,
                                    round(p * 255) or round(p * 65535) (--confidence=8bit|16bit)
--confidence_threshold=T labels pixels with p < T as 255 (unknown, black in the pictures).
Unreadable inputs are reported and skipped. Existing outputs stop the command before any
work unless --overwrite replaces them; each file is created exclusively, so a second
process writing the same names stops with one `error: ...` line instead of replacing the
first one's results.

Exit status: 0 when every input was predicted; 1 when some inputs were skipped as unreadable
(the others are predicted; --allow_skips makes this 0); 2 for a user error, including
inputs none of which is readable and outputs that already exist; 4 for a fault of the
machine (a full disk, a read-only or unwritable --output, a path too long), with one
`error: ...` line naming the path and what to do.
"""

import collections
import contextlib
import functools
import os
import sys

import keras
from absl import flags
from PIL import Image

import keras
from absl import flags
from PIL import Image

from pspnet_tf.cli import app
from pspnet_tf.cli.flag_groups import define
from pspnet_tf.cli.inference_flags import (
    define_confidence_threshold_flag,
    define_prediction_command_flags,
    model_from_flags,
    predictor_from_flags,
)
from pspnet_tf.config import config_from_flags
from pspnet_tf.data.images import read_image
from pspnet_tf.errors import EnvironmentFault, UserError
from pspnet_tf.inference.images import find_inputs
from pspnet_tf.inference.outputs import make_output_folders, save_output, stem
from pspnet_tf.inference.visualize import (
    CONFIDENCE_PNGS,
    overlay,
    save_confidence_png,
    save_label_png,
    side_by_side,
)

# What to do about an input that cannot be read or decoded (`read_image`'s remedy).
PREDICT_REMEDY = "replace the file or leave it out of --input"

define_prediction_command_flags()
define_confidence_threshold_flag()
define("data", flags.DEFINE_string, "input", None, "An image, a folder of images, or a quoted "
       "glob ('photos/**/*.jpg'); any format OpenCV reads (JPEG, PNG, GIF, BMP, TIFF, WebP, "
       "...), any size, gray, RGBA or 16-bit.")
define("output", flags.DEFINE_string, "output", None,
       "Folder for labels/, overlays/, side_by_side/ and confidence/.")
define("output", flags.DEFINE_boolean, "side_by_side", False, "Also write image | prediction "
       "| legend of the classes present.")
define("output", flags.DEFINE_enum, "confidence", "off", ["off", *CONFIDENCE_PNGS], "Also write "
       "confidence/<stem>.png, the top class's probability p per pixel as a gray PNG: "
       "round(p * 255) in 8 bits or round(p * 65535) in 16 bits.")
define("output", flags.DEFINE_boolean, "overwrite", False, "Replace outputs that already "
       "exist (otherwise the command stops before writing anything).")
define("output", flags.DEFINE_boolean, "allow_skips", False, "Exit with status 0, not 1, when "
       "some inputs were skipped as unreadable (an --input with no readable image stays an "
       "error).")
define("output", flags.DEFINE_float, "alpha", 0.5, "Weight of the class colours in the "
       "overlay.", lower_bound=0.0, upper_bound=1.0)
flags.mark_flags_as_required(["input", "output"])


def _output_paths(paths: list[str], output: str, with_side_by_side: bool,
                  with_confidence: bool) -> list[dict]:
    """Per input, where each kind of output goes; inputs must have distinct file stems."""
    counts = collections.Counter(stem(path) for path in paths)
    clashes = [path for path in paths if counts[stem(path)] > 1]
    if clashes:
        raise UserError(f"--input names several images with the stem {stem(clashes[0])!r} "
                        f"({', '.join(clashes[:3])}); their outputs would share a name, so "
                        "predict them into separate --output folders")
    kinds = (["labels", "overlays"] + (["side_by_side"] if with_side_by_side else [])
             + (["confidence"] if with_confidence else []))
    return [{kind: os.path.join(output, kind, f"{stem(path)}.png") for kind in kinds}
            for path in paths]


def _predict_all(paths: list[str], outputs: list[dict], predictor, class_names, palette,
                 skipped: list[str], written: list[str]) -> None:
    """Predicts each input into its `outputs`, appending unreadable inputs to `skipped` and
    the files created to `written`."""
    values = flags.FLAGS
    progress = keras.utils.Progbar(len(paths), unit_name="image")
    for done, (path, targets) in enumerate(zip(paths, outputs), 1):
        try:
            image = read_image(path, PREDICT_REMEDY)
        except UserError as error:
            print(f"\nskipped: {error}", file=sys.stderr)
            skipped.append(path)
        else:
            if "confidence" in targets:
                labels, confidence = predictor.predict_with_confidence(image)
            else:
                labels = predictor.predict(image)
            pictures = {
                "labels": functools.partial(save_label_png, labels, palette),
                "overlays": Image.fromarray(overlay(image, labels, palette, values.alpha)).save,
            }
            if "side_by_side" in targets:
                pictures["side_by_side"] = Image.fromarray(
                    side_by_side(image, labels, class_names, palette)).save
            if "confidence" in targets:
                pictures["confidence"] = functools.partial(save_confidence_png, confidence,
                                                           values.confidence)
            for kind, write in pictures.items():
                # Created exclusively unless --overwrite: another run's files are never
                # replaced.
                save_output(targets[kind], write, values.overwrite)
                written.append(targets[kind])
        progress.update(done)


def main(argv: list[str]) -> None:
    values = flags.FLAGS
    loaded = model_from_flags(config_from_flags())
    class_names, palette = loaded.classes()
    paths = find_inputs(values.input)
    outputs = _output_paths(paths, values.output, values.side_by_side,
                            values.confidence != "off")
    existing = [path for targets in outputs for path in targets.values() if os.path.exists(path)]
    if existing and not values.overwrite:
        raise UserError(f"{len(existing)} outputs already exist (first: {existing[0]}); pass "
                        "--overwrite to replace them or choose another --output")
    make_output_folders([path for targets in outputs for path in targets.values()], "output")
    predictor = predictor_from_flags(loaded.model, loaded.config.data.scale,
                                     loaded.config.runtime)
    skipped: list[str] = []
    written: list[str] = []
    try:
        _predict_all(paths, outputs, predictor, class_names, palette, skipped, written)
    except EnvironmentFault:
        # A full disk or a folder gone read-only: this run's partial results are removed, so
        # that the same command, rerun once the fault is fixed, starts clean instead of
        # stopping on its own outputs.
        for path in written:
            with contextlib.suppress(OSError):
                os.remove(path)
        raise
    if len(skipped) == len(paths):
        raise UserError(f"--input={values.input} holds no readable image ({len(paths)} "
                        f"unreadable: {', '.join(paths[:3])}); pass images OpenCV can decode")
    print(f"{len(paths) - len(skipped)} of {len(paths)} images predicted into {values.output}")
    if skipped:
        print(f"{len(skipped)} unreadable inputs skipped: {', '.join(skipped)}", file=sys.stderr)
        if not values.allow_skips:
            sys.exit(1)


def run() -> None:
    """The `pspnet-predict` command."""
    app.run(main)

