"""The evaluation report folder: the confusion matrix and per-class scores as CSV, the two
plots (pspnet_tf.evaluation.plots) and report.md with the worst images of the split.

Markdown rather than HTML: GitHub, GitLab, VS Code and Jupyter render it with its pictures,
and it stays a readable, diffable text file in a terminal.

Every file is written atomically; with `exclusive` (evaluate.py) none may exist already, so
an earlier report is never replaced.
"""

from __future__ import annotations

import csv
import dataclasses
import heapq
import os
from collections.abc import Callable, Sequence

import cv2
import numpy as np
from PIL import Image

from pspnet_tf.atomic import prepare_folder, write_atomically
from pspnet_tf.data.descriptors import IGNORE_INDEX
from pspnet_tf.evaluation import plots
from pspnet_tf.evaluation.metrics import iou_per_class
from pspnet_tf.inference.visualize import overlay

CONFUSION_CSV = "confusion_matrix.csv"
NORMALISED_CSV = "confusion_matrix_normalized.csv"
PER_CLASS_CSV = "per_class.csv"
HEATMAP_PNG = "confusion_matrix.png"
IOU_PNG = "per_class_iou.png"
REPORT_MD = "report.md"
WORST_DIR = "worst"
SCORES = ("precision", "recall", "F1", "Dice")
_PANEL_SIDE = 512  # longest side of each picture in a worst-image panel
_GAP = 4


@dataclasses.dataclass(frozen=True)
class ScoredImage:
    """One evaluated image, downscaled for its panel, with its own mIoU."""

    miou: float
    index: int
    image: np.ndarray
    label: np.ndarray
    prediction: np.ndarray


def image_miou(label: np.ndarray, prediction: np.ndarray, num_classes: int) -> float:
    """Mean IoU of one image over the classes in its labels or prediction (ignored pixels
    left out); NaN for an image without labelled pixels."""
    # Ignored labels left out; out-of-range values, which SegmentationMetrics refuses, too.
    labelled = (label < num_classes) & (prediction >= 0) & (prediction < num_classes)
    pairs = label[labelled].astype(np.int64) * num_classes + prediction[labelled]
    confusion = np.bincount(pairs, minlength=num_classes * num_classes)
    iou = iou_per_class(confusion.reshape(num_classes, num_classes))
    return float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else float("nan")


def _downscaled(array: np.ndarray, interpolation: int) -> np.ndarray:
    factor = _PANEL_SIDE / max(array.shape[:2])
    if factor >= 1:
        return array
    size = (max(1, round(array.shape[1] * factor)), max(1, round(array.shape[0] * factor)))
    return cv2.resize(array, size, interpolation=interpolation)


class WorstImages:
    """An `evaluate(on_sample=...)` callback keeping the `count` images with the lowest mIoU
    (downscaled to _PANEL_SIDE pixels, so memory stays bounded on large images)."""

    def __init__(self, count: int, num_classes: int) -> None:
        self._count = count
        self._num_classes = num_classes
        self._heap: list[tuple[float, int, ScoredImage]] = []

    def __call__(self, index: int, image: np.ndarray, label: np.ndarray,
                 prediction: np.ndarray) -> None:
        miou = image_miou(label, prediction, self._num_classes)
        if self._count == 0 or np.isnan(miou):
            return
        if len(self._heap) == self._count and -self._heap[0][0] <= miou:
            return  # not among the worst
        scored = ScoredImage(miou, index, _downscaled(image, cv2.INTER_AREA),
                             _downscaled(label.astype(np.uint8), cv2.INTER_NEAREST),
                             _downscaled(prediction.astype(np.uint8), cv2.INTER_NEAREST))
        entry = (-miou, -index, scored)  # a max-heap on mIoU: the best of the worst on top
        if len(self._heap) < self._count:
            heapq.heappush(self._heap, entry)
        else:
            heapq.heapreplace(self._heap, entry)

    def worst(self) -> list[ScoredImage]:
        """The kept images, lowest mIoU first (ties: dataset order)."""
        return [entry[2] for entry in sorted(self._heap, key=lambda e: (-e[0], -e[1]))]


def panel(scored: ScoredImage, palette: np.ndarray) -> np.ndarray:
    """image | ground truth overlay | prediction overlay, side by side on white."""
    pictures = [scored.image, overlay(scored.image, scored.label, palette),
                overlay(scored.image, scored.prediction, palette)]
    gap = np.full((scored.image.shape[0], _GAP, 3), 255, np.uint8)
    return np.concatenate([pictures[0], gap, pictures[1], gap, pictures[2]], axis=1)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100.0 * value:.2f}"


def _csv_writer(rows: list[list]) -> Callable[[str], None]:
    def write(path: str) -> None:
        with open(path, "w", newline="") as handle:
            csv.writer(handle).writerows(rows)
    return write


def _csv_files(summary: dict) -> dict[str, list[list]]:
    """The three CSV files' rows."""
    names = list(summary["per_class"])
    counts = np.asarray(summary["confusion_matrix"], np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    header = ["ground truth \\ prediction", *names]
    per_class = [["class", "IoU", *SCORES, "ground_truth_pixels", "predicted_pixels"]]
    for index, name in enumerate(names):
        scores = summary["per_class_scores"][name]
        values = [summary["per_class"][name], *(scores[key] for key in SCORES)]
        per_class.append([name, *("" if value is None else f"{value:.6f}" for value in values),
                          int(totals[index, 0]), int(counts[:, index].sum())])
    return {
        CONFUSION_CSV: [header, *([name, *row] for name, row in zip(names, counts.tolist()))],
        NORMALISED_CSV: [header, *([name, *(f"{value:.6f}" for value in row)]
                                   for name, row in zip(names, normalised))],
        PER_CLASS_CSV: per_class,
    }


def _markdown(summary: dict, title: str, with_plots: bool, worst: Sequence[tuple[str, float]],
              num_worst: int) -> str:
    lines = [f"# {title}", "",
             "| mIoU | aAcc | mAcc | mDice |", "| ---: | ---: | ---: | ---: |",
             "| " + " | ".join(_percent(summary[key])
                              for key in ("mIoU", "aAcc", "mAcc", "mDice")) + " |", ""]
    if with_plots:
        lines += ["## Confusion matrix (rows: ground truth, normalised per row)", "",
                  f"![confusion matrix]({HEATMAP_PNG})", "", "## IoU per class", "",
                  f"![IoU per class]({IOU_PNG})", ""]
    else:
        lines += [f"(plots not drawn: they need matplotlib, `{plots.REPORT_EXTRA}`)", ""]
    lines += ["## Scores per class (percent)", "",
              f"Counts: [{CONFUSION_CSV}]({CONFUSION_CSV}), row-normalised: "
              f"[{NORMALISED_CSV}]({NORMALISED_CSV}), this table: "
              f"[{PER_CLASS_CSV}]({PER_CLASS_CSV}).", "",
              "| class | IoU | precision | recall | F1 | Dice |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, iou in summary["per_class"].items():
        scores = summary["per_class_scores"][name]
        lines.append(f"| {name} | {_percent(iou)} | "
                     + " | ".join(_percent(scores[key]) for key in SCORES) + " |")
    if num_worst:
        lines += ["", f"## The {len(worst)} images with the lowest mIoU", "",
                  "Each row: image | ground truth | prediction (class colours over the image; "
                  "ignored pixels black).", ""]
        for rank, (file_name, miou) in enumerate(worst, 1):
            lines += [f"{rank}. `{file_name}`: mIoU {_percent(miou)}", "",
                      f"   ![{file_name}]({WORST_DIR}/{file_name})", ""]
    return "\n".join(lines) + "\n"


def write_report(summary: dict, folder: str, title: str, *, exclusive: bool,
                 worst: Sequence[ScoredImage] = (), num_worst: int = 0,
                 image_names: Sequence[str] = (), palette: np.ndarray | None = None
                 ) -> list[str]:
    """Writes the report of a `SegmentationMetrics.summary()` into `folder` (created if need
    be); returns the paths written. `worst` (from WorstImages, `image_names[scored.index]` naming
    each) adds their panels in palette colours under worst/. Without matplotlib the plots
    are left out and one line says how to get them."""
    written: list[str] = []
    prepare_folder(folder, f"the report folder {folder}")

    def save(name: str, write: Callable[[str], None]) -> None:
        path = os.path.join(folder, name)
        write_atomically(path, write, suffix=os.path.splitext(name)[1], exclusive=exclusive)
        written.append(path)

    for name, rows in _csv_files(summary).items():
        save(name, _csv_writer(rows))
    with_plots = plots.plots_available()
    if with_plots:
        names = list(summary["per_class"])
        save(HEATMAP_PNG, lambda path: plots.confusion_heatmap(
            summary["confusion_matrix"], names, path, f"{title}: confusion matrix"))
        save(IOU_PNG, lambda path: plots.iou_bars(summary["per_class"], path,
                                                  f"{title}: IoU per class"))
    else:
        print(f"plots skipped: the confusion-matrix and IoU plots need matplotlib "
              f"({plots.REPORT_EXTRA})")
    entries = []
    if worst:
        prepare_folder(os.path.join(folder, WORST_DIR), f"the report folder {folder}")
    for rank, scored in enumerate(worst, 1):
        stem = os.path.splitext(os.path.basename(image_names[scored.index]))[0]
        file_name = f"{rank:02d}_{stem}.png"
        picture = Image.fromarray(panel(scored, palette))
        save(os.path.join(WORST_DIR, file_name), picture.save)
        entries.append((file_name, scored.miou))
    markdown = _markdown(summary, title, with_plots, entries, num_worst)

    def write_markdown(path: str) -> None:
        with open(path, "w") as handle:
            handle.write(markdown)
    save(REPORT_MD, write_markdown)
    return written
