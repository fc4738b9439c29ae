"""One-time conversions of downloaded datasets into the layouts the readers use.

`prepare_voc_aug` writes the VOC "trainaug" labels and split, `prepare_cityscapes` trainId
labels, `prepare_folder_masks` a copy of a folder dataset with fixed masks; `pspnet-prepare`
(cli/prepare.py) is their command, which also
writes TFRecord shards (data/tfrecord.py). They only add files: originals are never
touched, label files already written are kept (so an interrupted run can simply be
repeated; `prepare_folder_masks` instead refuses a non-empty output folder), and a different
existing split file or shard index is an error.
"""

from __future__ import annotations

import concurrent.futures
import glob
import os
import pathlib
import shutil
from collections.abc import Callable, Iterable

import numpy as np
from PIL import Image

from pspnet_tf.atomic import write_atomically
from pspnet_tf.data.descriptors import (
    DATASETS,
    FOLDER_CLASS_FILE,
    REDUCE_ZERO_LABEL_MAP,
    read_class_file,
    voc_palette,
)
from pspnet_tf.data.layouts import Sample, folder_samples
from pspnet_tf.errors import ParameterError, UserError

VOC_AUG_LABEL_DIR = "SegmentationClassAug"
TRAINAUG_SPLIT = "trainaug"
_MAX_LISTED = 3


def _read_ids(path: str, parameter: str) -> list[str]:
    if not os.path.isfile(path):
        raise ParameterError("split file {path} not found; check {%s}" % parameter, path=path)
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
    raise ParameterError("{sbd_root}={path} holds no dataset/cls/ folder; point it at the "
                         "extracted benchmark_RELEASE folder", path=sbd_root)


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
    voc_train = _read_ids(os.path.join(split_dir, "train.txt"), "voc_root")
    voc_val = set(_read_ids(os.path.join(split_dir, "val.txt"), "voc_root"))
    sbd_dir = _sbd_dataset_dir(sbd_root)
    sbd_ids = (_read_ids(os.path.join(sbd_dir, "train.txt"), "sbd_root")
               + _read_ids(os.path.join(sbd_dir, "val.txt"), "sbd_root"))
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
        raise ParameterError("no gtFine/*/*/*{suffix} under {path}; {data_root} must be the "
                             "Cityscapes folder holding gtFine/", suffix=prepared.raw_suffix,
                             path=data_root)

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


MASK_FIXES = ("binary", "colours", "reduce_zero_label")


def _fixed_mask(path: str, fix: str, palette: np.ndarray) -> np.ndarray:
    """The class ids of the mask at `path` after `fix` (one of MASK_FIXES)."""
    with Image.open(path) as mask:
        mode = mask.mode
        if fix == "colours":
            if mode not in ("RGB", "RGBA"):
                raise UserError(f"mask {path} has image mode {mode}, not RGB colours; "
                                "convert it with a fix other than colours")
            rgb = np.array(mask.convert("RGB"))
        elif mode not in ("P", "L"):
            raise UserError(f"mask {path} has image mode {mode}; the {fix} fix needs 8-bit "
                            "grayscale or palette masks (use the colours fix for RGB masks)")
        else:
            values = np.array(mask)
    if fix == "binary":
        return np.where(values == 255, 1, values).astype(np.uint8)
    if fix == "reduce_zero_label":
        return REDUCE_ZERO_LABEL_MAP[values]
    codes = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    known = (palette[:, 0].astype(np.int32) << 16) | (palette[:, 1].astype(np.int32) << 8) \
        | palette[:, 2]
    ids = np.full(codes.shape, 255, np.uint8)
    for class_id, code in enumerate(known):
        ids[codes == code] = class_id
    unknown = np.unique(codes[ids == 255])
    if unknown.size:
        colours = [f"{c >> 16},{(c >> 8) & 255},{c & 255}" for c in unknown[:_MAX_LISTED]]
        raise UserError(f"mask {path} holds colours {', '.join(colours)} that classes.txt does "
                        f"not list ({unknown.size} unknown); add them to classes.txt as "
                        "'name<TAB>r,g,b' lines")
    return ids


def prepare_folder_masks(data_root: str, output: str, fix: str) -> dict[str, int]:
    """Writes a copy of the `folder` dataset under `data_root` to the NEW folder `output`,
    with every mask fixed by `fix`: "binary" (255 -> 1, for 0/255 binary masks), "colours"
    (RGB colours -> class ids through classes.txt's colours, or the VOC colour map when it
    gives none; an unlisted colour is an error naming the file) or "reduce_zero_label"
    (0 -> 255 = ignore, k -> k-1). Images and classes.txt are copied unchanged. Returns counts.
    """
    if fix not in MASK_FIXES:
        raise UserError(f"fix must be one of {', '.join(MASK_FIXES)} (got {fix!r})")
    if os.path.isdir(output) and os.listdir(output) or os.path.isfile(output):
        raise UserError(f"output {output} exists and is not empty; name a new folder "
                        "(masks are never converted in place)")
    class_file = os.path.join(data_root, FOLDER_CLASS_FILE)
    _, palette = read_class_file(class_file)
    images_dir = os.path.join(data_root, "images")
    splits = sorted(os.listdir(images_dir)) if os.path.isdir(images_dir) else []
    samples = [(split, sample) for split in splits
               if os.path.isdir(os.path.join(images_dir, split))
               for sample in folder_samples(data_root, split)]
    if not samples:
        raise UserError(f"{data_root} holds no images/<split>/ folders; data_root must be a "
                        "folder dataset (images/, masks/, classes.txt)")
    missing = [sample.label_path for _, sample in samples if not os.path.isfile(sample.label_path)]
    if missing:
        raise UserError(f"{len(missing)} masks are missing (first: "
                        f"{', '.join(missing[:_MAX_LISTED])}); nothing was written")

    def copy(source: str, target: str) -> None:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        write_atomically(target, lambda temporary: shutil.copyfile(source, temporary))

    def convert(split: str, sample: Sample) -> Callable[[], bool]:
        def job() -> bool:
            ids = _fixed_mask(sample.label_path, fix, palette)
            name = os.path.basename(sample.label_path)
            os.makedirs(os.path.join(output, "masks", split), exist_ok=True)
            _save_png(os.path.join(output, "masks", split, name), ids, None)
            copy(sample.image_path, os.path.join(output, "images", split,
                                                 os.path.basename(sample.image_path)))
            return True
        return job

    written = _run_parallel(convert(split, sample) for split, sample in samples)
    copy(class_file, os.path.join(output, FOLDER_CLASS_FILE))
    return {"images": len(samples), "written": written, "kept": 0}
