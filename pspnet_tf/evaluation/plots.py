"""The evaluation's two pictures: the row-normalised confusion-matrix heatmap and the
per-class IoU bar chart, drawn with matplotlib (the `[report]` extra).

matplotlib is imported on first use and drawn through `matplotlib.figure.Figure` with the
Agg canvas, so the process's global backend and pyplot state are never touched. Figures
grow with the class count (a fixed size per class), so that ADE20K's 150 class names stay
legible; beyond MAX_TICK_LABELS classes every n-th name is shown.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

REPORT_EXTRA = "pip install 'pspnet-tf[report]'"
MAX_TICK_LABELS = 200
_INCHES_PER_CLASS = 0.16  # a 6-point name per row or column
_DPI = 100
_ANNOTATED_CLASSES = 25  # up to this many classes, the heatmap's cells show their value


def plots_available() -> bool:
    """True when matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _font_size(num_classes: int) -> float:
    return 6.0 if num_classes > 40 else 9.0


def _ticks(num_classes: int) -> np.ndarray:
    return np.arange(0, num_classes, math.ceil(num_classes / MAX_TICK_LABELS))


def confusion_heatmap(confusion: np.ndarray, class_names: Sequence[str], path: str,
                      title: str) -> None:
    """Writes the confusion matrix [ground truth, prediction] as a PNG heatmap, each row
    normalised to the ground-truth pixels of its class (the diagonal is the recall)."""
    confusion = np.asarray(confusion, np.float64)
    count = len(class_names)
    rows = confusion.sum(axis=1, keepdims=True)
    normalised = np.divide(confusion, rows, out=np.zeros_like(confusion), where=rows > 0)
    side = max(6.0, 3.0 + _INCHES_PER_CLASS * count)
    figure = _figure(side + 1.5, side)
    axes = figure.add_subplot()
    image = axes.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    figure.colorbar(image, ax=axes, shrink=0.6, label="fraction of the ground-truth row")
    ticks, size = _ticks(count), _font_size(count)
    names = [class_names[index] for index in ticks]
    axes.set_xticks(ticks, names, rotation=90, fontsize=size)
    axes.set_yticks(ticks, names, fontsize=size)
    axes.set_xlabel("prediction")
    axes.set_ylabel("ground truth")
    axes.set_title(title)
    if count <= _ANNOTATED_CLASSES:
        for (row, column), value in np.ndenumerate(normalised):
            if value >= 0.005:
                axes.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=7,
                          color="white" if value > 0.5 else "black")
    figure.savefig(path, format="png")


def iou_bars(per_class: dict[str, float | None], path: str, title: str) -> None:
    """Writes the per-class IoU as a horizontal bar chart PNG, best class on top, classes
    without pixels (IoU undefined) at the bottom marked n/a, the mIoU as a dashed line."""
    items = sorted(per_class.items(), key=lambda item: -1.0 if item[1] is None else item[1],
                   reverse=True)
    count = len(items)
    figure = _figure(8.0, max(3.0, 1.5 + _INCHES_PER_CLASS * count))
    axes = figure.add_subplot()
    values = [0.0 if value is None else value for _, value in items]
    positions = np.arange(count)
    axes.barh(positions, values, color="tab:blue")
    ticks, size = _ticks(count), _font_size(count)
    axes.set_yticks(ticks, [items[index][0] for index in ticks], fontsize=size)
    axes.set_ylim(count - 0.5, -0.5)
    for position, (_, value) in enumerate(items):
        label = "n/a" if value is None else f"{100 * value:.1f}"
        axes.text((value or 0.0) + 0.01, position, label, va="center", fontsize=size)
    defined = [value for _, value in items if value is not None]
    if defined:
        mean = float(np.mean(defined))
        axes.axvline(mean, color="tab:red", linestyle="--", label=f"mIoU {100 * mean:.2f}")
        axes.legend(loc="lower right")
    axes.set_xlim(0.0, 1.08)
    axes.set_xlabel("IoU")
    axes.set_title(title)
    figure.savefig(path, format="png")
