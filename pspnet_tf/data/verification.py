"""Checks a dataset on disk before anyone spends GPU hours on it; never modifies the data.

`verify` decodes every listed image and label of the given splits and lists EVERY problem
with its file name, with per-split counts and per-class pixel frequencies (`format_report`);
`pspnet-verify` (cli/verify.py) is its command.

It also recognises the common mask mistakes (`_mask_findings`), each as ONE line naming a few
files, what the masks look like and the fix: errors (counted as problems) where training
would silently learn nothing or cannot read the masks, warnings where the data may be right.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os

import numpy as np
from PIL import Image

from pspnet_tf.data.datasets import SegmentationDataset, open_dataset
from pspnet_tf.data.descriptors import IGNORE_INDEX
from pspnet_tf.errors import UserError


@dataclasses.dataclass
class SplitReport:
    """What verify found in one split: sample count, problems and label pixel counts."""

    split: str
    num_samples: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)
    class_names: tuple[str, ...] = ()
    pixel_counts: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    ignored_pixels: int = 0
    warnings: list[str] = dataclasses.field(default_factory=list)
    mask_problems: list[str] = dataclasses.field(default_factory=list)  # also in `problems`


COLOUR_MASK = "colour mask"
_SHOWN_FILES = 3
# Masks check_training_masks reads at training start (evenly spread over the split).
TRAINING_CHECK_MASKS = 64
_COLOUR_MODES = ("RGB", "RGBA")
# Names that say class 0 is the unlabelled or background class (compared in lower case).
_BACKGROUND_NAMES = ("background", "bg", "unlabeled", "unlabelled", "void", "other", "others",
                     "none", "clutter", "ignore", "_background_")


def _files(paths: list[str]) -> str:
    """A few of `paths` and how many there are, for a one-line message."""
    more = f" and {len(paths) - _SHOWN_FILES} more" if len(paths) > _SHOWN_FILES else ""
    return f"{', '.join(paths[:_SHOWN_FILES])}{more}"


def _is_colour_mask(path: str) -> bool:
    """Whether the label file at `path` is a 3- or 4-channel colour image."""
    try:
        with Image.open(path) as label:
            return label.mode in _COLOUR_MODES
    except OSError:
        return False


def _check_sample(dataset: SegmentationDataset, index: int) -> tuple[str | None, np.ndarray]:
    """(problem or None, bincount of the label over 0..255) for one sample; the problem of a
    colour mask is COLOUR_MASK, so that all of them become one line."""
    sample = dataset.samples[index]
    missing = [path for path in (sample.image_path, sample.label_path)
               if not os.path.isfile(path)]
    if missing:
        return f"missing file {' and '.join(missing)}", np.zeros(256, np.int64)
    try:
        _, label = dataset.load(index)
    except UserError as error:
        problem = COLOUR_MASK if _is_colour_mask(sample.label_path) else str(error)
        return problem, np.zeros(256, np.int64)
    return None, np.bincount(label.ravel(), minlength=256)


def verify_split(dataset: SegmentationDataset,
                 indices: list[int] | None = None) -> SplitReport:
    """Decodes and checks every sample of `dataset` (or those at `indices`) in parallel,
    collecting all problems and the mask findings."""
    indices = list(range(len(dataset.samples))) if indices is None else indices
    counts = np.zeros(256, np.int64)
    report = SplitReport(dataset.split, len(indices), class_names=dataset.class_names)
    colour_masks, present = [], {}
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        for index, (problem, sample_counts) in zip(
                indices, pool.map(lambda i: _check_sample(dataset, i), indices)):
            path = dataset.samples[index].label_path
            if problem == COLOUR_MASK:
                colour_masks.append(path)
            elif problem:
                report.problems.append(problem)
            else:
                present[path] = sample_counts > 0
            counts += sample_counts
    report.pixel_counts = counts[:dataset.num_classes]
    report.ignored_pixels = int(counts[IGNORE_INDEX])
    _mask_findings(dataset, report, colour_masks, present)
    report.problems[:0] = report.mask_problems
    return report


def check_training_masks(dataset: SegmentationDataset,
                         max_masks: int = TRAINING_CHECK_MASKS) -> list[str]:
    """verify's mask findings on at most `max_masks` masks spread evenly over the split,
    cheap enough for training start: raises a UserError for the first error found (0/255
    binary or colour masks) and returns the warnings. Files that fail for other reasons are
    left to the input pipeline (and --skip_bad_samples)."""
    total = len(dataset.samples)
    indices = np.unique(np.linspace(0, total - 1, min(total, max_masks)).astype(int)).tolist()
    report = verify_split(dataset, indices)
    if report.mask_problems:
        raise UserError(f"{dataset.name} split {dataset.split!r}, checking {len(indices)} of "
                        f"{total} masks: {report.mask_problems[0]}")
    return report.warnings


def _mask_findings(dataset: SegmentationDataset, report: SplitReport, colour_masks: list[str],
                   present: dict[str, np.ndarray]) -> None:
    """Adds one line per common mask mistake: mask problems for 0/255 binary masks (every
    foreground pixel would be ignored) and colour masks (unreadable); warnings for masks
    holding only class 0 and ignore, and for a folder dataset whose 0 looks like "unlabelled" (unless its
    raw 0 is already read as ignore, as with reduce_zero_label)."""
    if colour_masks:
        report.mask_problems.append(
            f"{len(colour_masks)} masks are RGB colour images ({_files(colour_masks)}); masks "
            "must hold class ids (8-bit grayscale or palette PNG): list each class's colour in "
            "classes.txt and convert them with pspnet-prepare folder_masks --mask_fix=colours "
            "--data_root=... --output=NEW_FOLDER")
    if not present:
        return
    binary = dataset.num_classes == 2 and report.pixel_counts[1] == 0 and report.ignored_pixels
    if binary:
        report.mask_problems.insert(0, (
            f"every mask holds only 0 and {IGNORE_INDEX} ({_files(list(present))}): these look "
            f"like 0/{IGNORE_INDEX} binary masks, so every foreground pixel would be ignored and "
            f"training would learn {dataset.class_names[0]!r} only; convert them "
            f"({IGNORE_INDEX} -> 1) with "
            f"pspnet-prepare folder_masks --mask_fix=binary --data_root=... --output=NEW_FOLDER"))
    else:
        zero_and_ignore = [path for path, values in present.items()
                           if values[IGNORE_INDEX] and not values[1:IGNORE_INDEX].any()]
        if zero_and_ignore:
            report.warnings.append(
                f"{len(zero_and_ignore)} masks hold only class 0 and ignore ({IGNORE_INDEX}) "
                f"({_files(zero_and_ignore)}); if {IGNORE_INDEX} marks a foreground class "
                "there, save it as that class's id")
    first = dataset.class_names[0]
    already_shifted = dataset.label_map[0] == IGNORE_INDEX  # raw 0 is read as ignore
    if (dataset.name == "folder" and len(present) > 1 and not binary and not already_shifted
            and all(values[0] for values in present.values())
            and first.lower() not in _BACKGROUND_NAMES):
        report.warnings.append(
            f"every mask holds class 0 ({first!r}) and classes.txt names no background class: "
            "if 0 means unlabelled there, make classes.txt list the classes of ids 1.. and "
            f"shift the ids (0 -> {IGNORE_INDEX}, k -> k-1) with pspnet-prepare folder_masks "
            "--mask_fix=reduce_zero_label --data_root=... --output=NEW_FOLDER")


def verify(dataset_name: str, data_root: str, splits: list[str],
           num_classes: int | None = None, reduce_zero_label: bool = False) -> list[SplitReport]:
    """One report per split; a split that cannot be opened at all becomes one problem.
    `reduce_zero_label` checks the labels as training reads them with that shift."""
    reports = []
    for split in splits:
        try:
            dataset = open_dataset(dataset_name, data_root, split)
        except UserError as error:
            reports.append(SplitReport(split, problems=[str(error)]))
            continue
        if reduce_zero_label:
            dataset.reduce_zero_label()
        report = verify_split(dataset)
        if num_classes is not None and num_classes != dataset.num_classes:
            report.problems.insert(0, f"--num_classes={num_classes} but {dataset_name} has "
                                      f"{dataset.num_classes} classes")
        reports.append(report)
    return reports


def format_report(report: SplitReport) -> str:
    """Counts, per-class pixel frequencies (fraction of labelled pixels), problems and
    warnings."""
    labelled = int(report.pixel_counts.sum())
    header = (f"split {report.split}: {report.num_samples} samples, {len(report.problems)} "
              f"problems, {labelled} labelled pixels, {report.ignored_pixels} ignored "
              f"({IGNORE_INDEX})")
    lines = [header]
    if labelled:
        width = max(len(name) for name in report.class_names)
        lines.append(f"  {'class':<{width}}  {'pixels':>12}  fraction")
        for name, count in zip(report.class_names, report.pixel_counts):
            lines.append(f"  {name:<{width}}  {int(count):>12}  {count / labelled:.4f}")
    lines.extend(f"  problem: {problem}" for problem in report.problems)
    lines.extend(f"  warning: {warning}" for warning in report.warnings)
    return "\n".join(lines)
