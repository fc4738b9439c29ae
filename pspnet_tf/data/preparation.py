"""One-time conversions of downloaded datasets into the layouts the readers use.

`prepare_voc_aug` writes the VOC "trainaug" labels and split, `prepare_cityscapes` trainId
labels; `pspnet-prepare` (cli/prepare.py) is their command, which also
writes TFRecord shards (data/tfrecord.py). They only add files: originals are never
touched, label files already written are kept (so an interrupted run can simply be
repeated), and a different existing split file or shard index is an error.
"""

from __future__ import annotations

import concurrent.futures
import glob
import os
import pathlib
from collections.abc import Callable, Iterable

import numpy as np
from PIL import Image

from pspnet_tf.atomic import write_atomically
from pspnet_tf.data.descriptors import DATASETS, voc_palette
from pspnet_tf.errors import UserError

VOC_AUG_LABEL_DIR = "SegmentationClassAug"
TRAINAUG_SPLIT = "trainaug"
_MAX_LISTED = 3


def _read_ids(path: str, flag: str) -> list[str]:
    if not os.path.isfile(path):
        raise UserError(f"split file {path} not found; check {flag}")
    with open(path) as handle:
        return [line.strip() for line in handle if line.strip()]


def _save_png(path: str, values: np.ndarray, palette: np.ndarray | None) -> None:
    image = Image.fromarray(np.asarray(values, np.uint8))
    if palette is not None:
        image.putpalette(palette.tobytes())  # an L image becomes P with the values as indices
    write_atomically(path, lambda target: image.save(target, format="PNG"))


def read_sbd_mat(path: str) -> np.ndarray:
    """The class-index map of an SBD `cls/*.mat` file (struct GTcls, field Segmentation)."""
    from scipy import io as scipy_io  # only this command needs scipy

    try:
        mat = scipy_io.loadmat(path)
        return np.asarray(mat["GTcls"]["Segmentation"][0][0], np.uint8)
    except (OSError, ValueError, KeyError, IndexError, TypeError) as error:
        raise UserError(f"cannot read SBD label {path} ({error}); re-download SBD") from None


def _read_label_indices(path: str) -> np.ndarray:
    with Image.open(path) as label:
        if label.mode not in ("P", "L"):
            raise UserError(f"label {path} has mode {label.mode}; expected a VOC palette PNG")
        return np.array(label)


def _run_parallel(jobs: Iterable[Callable[[], bool]]) -> int:
    """Runs the jobs on all cores; returns how many did work (True)."""
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        return sum(future.result() for future in [pool.submit(job) for job in jobs])


def _sbd_dataset_dir(sbd_root: str) -> str:
    """Accepts benchmark_RELEASE/ or benchmark_RELEASE/dataset/."""
    for candidate in (os.path.join(sbd_root, "dataset"), sbd_root):
        if os.path.isdir(os.path.join(candidate, "cls")):
            return candidate
    raise UserError(f"--sbd_root={sbd_root} holds no dataset/cls/ folder; point it at the "
                    "extracted benchmark_RELEASE folder")


def _write_split(path: str, ids: list[str]) -> bool:
    """Writes the split file; an identical one is kept, a different one is an error."""
    text = "".join(f"{image_id}\n" for image_id in ids)
    if os.path.exists(path):
        with open(path) as handle:
            if handle.read() == text:
                return False
        raise UserError(f"{path} exists with other ids; move it away to rebuild it "
                        "(nothing was changed)")
    write_atomically(path, lambda target: pathlib.Path(target).write_text(text))
    return True


def prepare_voc_aug(voc_root: str, sbd_root: str) -> dict[str, int]:
    """Writes VOC2012/SegmentationClassAug/*.png and ImageSets/Segmentation/trainaug.txt.

    trainaug = (VOC train + SBD train + SBD val) - VOC val, sorted. VOC-train ids keep VOC's
    own labels (with their 255 borders); the other ids get SBD's converted .mat labels.
    Returns counts: images in the split, labels written, labels already there.
    """
    split_dir = os.path.join(voc_root, "ImageSets", "Segmentation")
    voc_train = _read_ids(os.path.join(split_dir, "train.txt"), "--voc_root (the VOC2012 folder)")
    voc_val = set(_read_ids(os.path.join(split_dir, "val.txt"), "--voc_root"))
    sbd_dir = _sbd_dataset_dir(sbd_root)
    sbd_ids = (_read_ids(os.path.join(sbd_dir, "train.txt"), "--sbd_root")
               + _read_ids(os.path.join(sbd_dir, "val.txt"), "--sbd_root"))
    ids = sorted((set(voc_train) | set(sbd_ids)) - voc_val)
    voc_train_set = set(voc_train)
    sources = {image_id: os.path.join(voc_root, "SegmentationClass", f"{image_id}.png")
               if image_id in voc_train_set else os.path.join(sbd_dir, "cls", f"{image_id}.mat")
               for image_id in ids}
    missing = [path for image_id in ids
               for path in (os.path.join(voc_root, "JPEGImages", f"{image_id}.jpg"),
                            sources[image_id]) if not os.path.isfile(path)]
    if missing:
        raise UserError(f"{len(missing)} trainaug images/labels are missing (first: "
                        f"{', '.join(missing[:_MAX_LISTED])}); complete the VOC/SBD downloads")
    out_dir = os.path.join(voc_root, VOC_AUG_LABEL_DIR)
    os.makedirs(out_dir, exist_ok=True)
    palette = voc_palette(256)

    def convert(image_id: str) -> Callable[[], bool]:
        def job() -> bool:
            target = os.path.join(out_dir, f"{image_id}.png")
            if os.path.exists(target):
                return False
            source = sources[image_id]
            values = (read_sbd_mat(source) if source.endswith(".mat")
                      else _read_label_indices(source))
            _save_png(target, values, palette)
            return True
        return job

    written = _run_parallel(convert(image_id) for image_id in ids)
    _write_split(os.path.join(split_dir, f"{TRAINAUG_SPLIT}.txt"), ids)
    return {"images": len(ids), "written": written, "kept": len(ids) - written}


def prepare_cityscapes(data_root: str) -> dict[str, int]:
    """Writes *_gtFine_labelTrainIds.png beside every gtFine *_gtFine_labelIds.png."""
    cityscapes = DATASETS["cityscapes"]
    prepared = cityscapes.prepared_labels
    sources = sorted(glob.glob(os.path.join(data_root, "gtFine", "*", "*",
                                            f"*{prepared.raw_suffix}")))
    if not sources:
        raise UserError(f"no gtFine/*/*/*{prepared.raw_suffix} under {data_root}; "
                        "--data_root must be the Cityscapes folder holding gtFine/")

    def convert(source: str) -> Callable[[], bool]:
        def job() -> bool:
            target = prepared.path(source)
            if os.path.exists(target):
                return False
            _save_png(target, cityscapes.label_map[_read_label_indices(source)], None)
            return True
        return job

    written = _run_parallel(convert(source) for source in sources)
    return {"images": len(sources), "written": written, "kept": len(sources) - written}
