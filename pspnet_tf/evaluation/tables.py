"""The evaluation summary as people and scripts read it: a per-class IoU table on stdout
and a JSON file (evaluate.py's metrics file, train.py's run_dir/metrics.json)."""

import json
import pathlib
from typing import Any

from pspnet_tf.atomic import write_atomically


def format_table(summary: dict[str, Any]) -> str:
    """Render a `SegmentationMetrics.summary()` dict as a per-class IoU table (percent)."""
    per_class = summary["per_class"]
    width = max([len("Class"), len("mIoU")] + [len(name) for name in per_class])
    lines = [f"{'Class':<{width}}  {'IoU':>6}", "-" * (width + 8)]
    lines += [f"{name:<{width}}  {_percent(iou):>6}" for name, iou in per_class.items()]
    lines.append("-" * (width + 8))
    lines += [f"{key:<{width}}  {_percent(summary[key]):>6}" for key in ("mIoU", "aAcc", "mAcc")]
    return "\n".join(lines)


def write_json(summary: dict, path: str) -> None:
    """Writes a JSON file atomically (never a half-written file)."""
    write_atomically(path, lambda target: pathlib.Path(target).write_text(
        json.dumps(summary, indent=2)))


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100.0 * value:.2f}"
