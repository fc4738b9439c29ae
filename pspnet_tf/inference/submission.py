"""Test-server submissions: a split without labels predicted into the format each benchmark
server takes, plus a zip of it.

- cityscapes: `<city>/<city>_<seq>_<frame>_labelIds.png`, 8-bit label ids (train ids mapped
  back; the server, like cityscapesscripts' evaluator, finds each image's file by its
  `<city>_<seq>_<frame>` prefix);
- ade20k: `<image stem>.png`, 8-bit class index + 1 (1..150; the scene-parsing format);
- voc: `results/VOC2012/Segmentation/comp6_test_cls/<image id>.png`, palette PNGs of class
  ids (comp6: trained with data beyond VOC, as trainaug's SBD labels are).

Files are created exclusively in a new or empty folder, the zip beside it (`<folder>.zip`).
"""

from __future__ import annotations

import functools
import os
import zipfile
from collections.abc import Callable, Sequence

import keras
import numpy as np
from PIL import Image

from pspnet_tf.atomic import check_can_create, prepare_folder
from pspnet_tf.data.descriptors import DATASETS
from pspnet_tf.data.images import read_image
from pspnet_tf.errors import UserError
from pspnet_tf.inference.outputs import save_output, stem, train_id_to_label_id
from pspnet_tf.inference.visualize import save_label_png

VOC_RESULTS_DIR = os.path.join("results", "VOC2012", "Segmentation", "comp6_test_cls")
SUBMISSION_DATASETS = ("cityscapes", "ade20k", "voc")
_REMEDY = "replace the file: a submission needs a prediction for every test image"


def _cityscapes(image_path: str) -> tuple[str, Callable[[np.ndarray, str], None]]:
    city = os.path.basename(os.path.dirname(image_path))
    name = f"{stem(image_path).removesuffix('_leftImg8bit')}_labelIds.png"
    table = train_id_to_label_id()
    return (os.path.join(city, name),
            lambda labels, path: Image.fromarray(table[labels.astype(np.uint8)]).save(path))


def _ade20k(image_path: str) -> tuple[str, Callable[[np.ndarray, str], None]]:
    return (f"{stem(image_path)}.png",
            lambda labels, path: Image.fromarray((labels + 1).astype(np.uint8)).save(path))


def _voc(image_path: str) -> tuple[str, Callable[[np.ndarray, str], None]]:
    palette = DATASETS["voc"].palette
    return (os.path.join(VOC_RESULTS_DIR, f"{stem(image_path)}.png"),
            lambda labels, path: save_label_png(labels, palette, path))


_FORMATS = {"cityscapes": _cityscapes, "ade20k": _ade20k, "voc": _voc}


def submission_files(dataset: str, image_paths: Sequence[str]) -> list[str]:
    """The submission's file paths (relative to its folder), one per image, in order."""
    if dataset not in _FORMATS:
        raise UserError(f"--dataset={dataset} has no test server; submissions are written for "
                        f"{', '.join(SUBMISSION_DATASETS)}")
    names = [_FORMATS[dataset](path)[0] for path in image_paths]
    if len(set(names)) != len(names):
        raise UserError(f"the {dataset} test split names several images alike "
                        f"({names[0]}...); keep one image per name")
    return names


def check_submission_folder(folder: str, dataset: str, image_paths: Sequence[str]) -> str:
    """Checks, before any prediction, that `folder` holds no file, `<folder>.zip` does not
    exist and both can be written (creating the submission's folders); returns the zip's
    path."""
    archive = os.path.normpath(folder) + ".zip"
    if any(files for _, _, files in os.walk(folder)):  # empty folders (an earlier check's) do
        raise UserError(f"--output={folder} is not empty; pass a new or empty folder (nothing "
                        "was written)")
    if os.path.exists(archive):
        raise UserError(f"{archive} exists; move it or pass another --output (nothing was "
                        "written)")
    for name in sorted({os.path.dirname(name) for name in
                        submission_files(dataset, image_paths)}):
        prepare_folder(os.path.join(folder, name), f"--output={folder}")
    check_can_create(archive)
    return archive


def write_submission(predictor, dataset: str, image_paths: Sequence[str], folder: str,
                     verbose: bool = True) -> tuple[list[str], str]:
    """Predicts every image of `image_paths` (a `predictor` with `.predict(image) -> ids`, a
    model for `dataset`'s classes) into `folder` in the `dataset` server's format and zips
    it; returns the files written and the zip's path."""
    archive = check_submission_folder(folder, dataset, image_paths)
    progress = keras.utils.Progbar(len(image_paths), verbose=1 if verbose else 0,
                                   unit_name="image")
    written = []
    for done, image_path in enumerate(image_paths, 1):
        name, write = _FORMATS[dataset](image_path)
        labels = predictor.predict(read_image(image_path, _REMEDY))
        path = os.path.join(folder, name)
        save_output(path, functools.partial(write, labels))
        written.append(path)
        progress.update(done)

    def zip_folder(target: str) -> None:
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as handle:
            for path in written:
                handle.write(path, os.path.relpath(path, folder))
    save_output(archive, zip_folder)
    return written, archive
