"""Checks a dataset on disk before anyone spends GPU hours on it; never modifies the data.

`verify` decodes every listed image and label of the given splits and lists EVERY problem
with its file name, with per-split counts and per-class pixel frequencies (`format_report`);
`pspnet-verify` (cli/verify.py) is its command.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os

import numpy as np

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


def _check_sample(dataset: SegmentationDataset, index: int) -> tuple[str | None, np.ndarray]:
    """(problem or None, bincount of the label over 0..255) for one sample."""
    sample = dataset.samples[index]
    missing = [path for path in (sample.image_path, sample.label_path)
               if not os.path.isfile(path)]
    if missing:
        return f"missing file {' and '.join(missing)}", np.zeros(256, np.int64)
    try:
        _, label = dataset.load(index)
    except UserError as error:
        return str(error), np.zeros(256, np.int64)
    return None, np.bincount(label.ravel(), minlength=256)


def verify_split(dataset: SegmentationDataset) -> SplitReport:
    """Decodes and checks every sample of `dataset` (in parallel), collecting all problems."""
    counts = np.zeros(256, np.int64)
    report = SplitReport(dataset.split, len(dataset.samples), class_names=dataset.class_names)
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        for problem, sample_counts in pool.map(lambda i: _check_sample(dataset, i),
                                               range(len(dataset.samples))):
            if problem:
                report.problems.append(problem)
            counts += sample_counts
    report.pixel_counts = counts[:dataset.num_classes]
    report.ignored_pixels = int(counts[IGNORE_INDEX])
    return report


def verify(dataset_name: str, data_root: str, splits: list[str],
           num_classes: int | None = None) -> list[SplitReport]:
    """One report per split; a split that cannot be opened at all becomes one problem."""
    reports = []
    for split in splits:
        try:
            dataset = open_dataset(dataset_name, data_root, split)
        except UserError as error:
            reports.append(SplitReport(split, problems=[str(error)]))
            continue
        report = verify_split(dataset)
        if num_classes is not None and num_classes != dataset.num_classes:
            report.problems.insert(0, f"--num_classes={num_classes} but {dataset_name} has "
                                      f"{dataset.num_classes} classes")
        reports.append(report)
    return reports


def format_report(report: SplitReport) -> str:
    """Counts, per-class pixel frequencies (fraction of labelled pixels) and problems."""
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
    return "\n".join(lines)
