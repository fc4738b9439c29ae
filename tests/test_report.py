"""The evaluation report: per-class scores against boolean-mask formulas, the CSV files, the
plots at 5 and at ADE20K's 150 classes, the worst images, and the report without
matplotlib."""

import ast
import csv
import os

import numpy as np
import pytest
from PIL import Image
from helpers import run_python

from pspnet_tf.atomic import DestinationTaken
from pspnet_tf.data.descriptors import ADE20K_CLASS_NAMES, DATASETS, IGNORE_INDEX
from pspnet_tf.evaluation import plots, report
from pspnet_tf.evaluation.metrics import SegmentationMetrics

SCORE_NAMES = ("precision", "recall", "F1", "Dice")


def summary_of(labels, predictions, class_names):
    metric = SegmentationMetrics(len(class_names), from_logits=False)
    metric.update_state(labels[np.newaxis], predictions[np.newaxis])
    return metric.summary(class_names)


def random_pair(num_classes, shape=(60, 80), seed=0, absent=None):
    """Labels with ignored pixels, predictions right 60% of the time; class `absent` is in
    neither."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, shape)
    predictions = np.where(rng.random(shape) < 0.6, labels, rng.integers(0, num_classes, shape))
    if absent is not None:
        labels[labels == absent] = 0
        predictions[predictions == absent] = 1
    labels[rng.random(shape) < 0.1] = IGNORE_INDEX
    return labels, predictions


def test_per_class_scores_match_their_formulas_on_pixel_masks():
    names = [f"c{index}" for index in range(5)]
    labels, predictions = random_pair(5, absent=3)
    summary = summary_of(labels, predictions, names)
    keep = labels != IGNORE_INDEX
    for index, name in enumerate(names):
        truth, predicted = (labels == index) & keep, (predictions == index) & keep
        tp = np.sum(truth & predicted)
        fp, fn = np.sum(~truth & predicted), np.sum(truth & ~predicted)
        scores = summary["per_class_scores"][name]
        if index == 3:
            assert scores == dict.fromkeys(SCORE_NAMES)
            continue
        precision, recall = tp / (tp + fp), tp / (tp + fn)
        assert scores["precision"] == pytest.approx(precision, rel=1e-12)
        assert scores["recall"] == pytest.approx(recall, rel=1e-12)
        assert scores["F1"] == pytest.approx(2 * precision * recall / (precision + recall),
                                             rel=1e-12)
        assert scores["Dice"] == pytest.approx(2 * tp / (truth.sum() + predicted.sum()),
                                               rel=1e-12)
    dice = [summary["per_class_scores"][name]["Dice"] for name in names if name != "c3"]
    assert summary["mDice"] == pytest.approx(np.mean(dice), rel=1e-12)
    counts = np.asarray(summary["confusion_matrix"])
    assert counts.sum() == keep.sum() and counts[1, 2] == np.sum(keep & (labels == 1)
                                                                 & (predictions == 2))


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def test_report_at_150_classes_writes_csvs_readable_plots_and_the_worst_images(tmp_path):
    names = list(ADE20K_CLASS_NAMES)
    labels, predictions = random_pair(150, shape=(120, 160), seed=1)
    summary = summary_of(labels, predictions, names)
    worst = report.WorstImages(2, 150)
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, labels.shape + (3,), dtype=np.uint8)
    for index, right in enumerate((0.9, 0.2, 0.5, 0.1)):
        guess = np.where(rng.random(labels.shape) < right, labels, predictions)
        worst(index, image, labels, guess)
    folder = str(tmp_path / "ade")
    written = report.write_report(summary, folder, "tiny on validation", exclusive=True,
                                  worst=worst.worst(), num_worst=2,
                                  image_names=[f"/data/img{i}.jpg" for i in range(4)],
                                  palette=DATASETS["ade20k"].palette)
    assert sorted(os.path.relpath(path, folder) for path in written) == sorted([
        "confusion_matrix.csv", "confusion_matrix_normalized.csv", "per_class.csv",
        "confusion_matrix.png", "per_class_iou.png", "report.md",
        "worst/01_img3.png", "worst/02_img1.png"])

    counts = read_csv(os.path.join(folder, "confusion_matrix.csv"))
    assert counts[0][1:] == names and [row[0] for row in counts[1:]] == names
    np.testing.assert_array_equal(np.array([row[1:] for row in counts[1:]], int),
                                  summary["confusion_matrix"])
    normalised = np.array([row[1:] for row in read_csv(
        os.path.join(folder, "confusion_matrix_normalized.csv"))[1:]], float)
    np.testing.assert_allclose(normalised.sum(axis=1), 1.0, atol=1e-4)
    per_class = read_csv(os.path.join(folder, "per_class.csv"))
    assert per_class[0] == ["class", "IoU", *SCORE_NAMES, "ground_truth_pixels",
                            "predicted_pixels"]
    assert float(per_class[1][1]) == pytest.approx(summary["per_class"]["wall"], abs=1e-6)

    # A fixed size per class: 150 names get a picture several times a small one's size.
    heatmap = Image.open(os.path.join(folder, "confusion_matrix.png")).size
    bars = Image.open(os.path.join(folder, "per_class_iou.png")).size
    assert heatmap[0] > 2000 and heatmap[1] > 2000 and bars[1] > 2000
    panel = Image.open(os.path.join(folder, "worst", "01_img3.png"))
    assert panel.size == (3 * 160 + 2 * 4, 120)

    markdown = open(os.path.join(folder, "report.md")).read()
    assert "![confusion matrix](confusion_matrix.png)" in markdown
    assert markdown.index("worst/01_img3.png") < markdown.index("worst/02_img1.png")
    assert "| sky |" in markdown
    with pytest.raises(DestinationTaken):  # exclusive: an earlier report stays
        report.write_report(summary, folder, "again", exclusive=True)


def test_worst_images_keeps_the_lowest_miou_and_downscales_large_images():
    labels = np.zeros((1000, 600), np.uint8)
    labels[:, 300:] = 1
    worst = report.WorstImages(2, 2)
    image = np.zeros((1000, 600, 3), np.uint8)
    for index, wrong_columns in enumerate((0, 200, 100, 300)):
        prediction = labels.copy()
        prediction[:, 300 - wrong_columns:300] = 1
        worst(index, image, labels, prediction)
    worst(4, image, np.full_like(labels, IGNORE_INDEX), labels)  # no labelled pixel: skipped
    shifted = np.roll(np.where(labels == 1, IGNORE_INDEX, labels), 5, axis=1)
    assert report.image_miou(labels, shifted, 2) == pytest.approx(
        np.mean([295 / 300, 0.0]))  # ignore-valued predictions are left out, not a crash
    kept = worst.worst()
    assert [scored.index for scored in kept] == [3, 1]
    assert kept[0].miou == pytest.approx(report.image_miou(labels, np.ones_like(labels), 2))
    assert kept[0].image.shape == (512, 307, 3) and kept[0].label.shape == (512, 307)


def test_report_without_matplotlib_writes_tables_and_says_how_to_get_plots(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(plots, "plots_available", lambda: False)
    labels, predictions = random_pair(3)
    summary = summary_of(labels, predictions, ["a", "b", "c"])
    written = report.write_report(summary, str(tmp_path), "no plots", exclusive=False)
    assert sorted(os.path.basename(path) for path in written) == [
        "confusion_matrix.csv", "confusion_matrix_normalized.csv", "per_class.csv", "report.md"]
    output = capsys.readouterr().out.strip().splitlines()
    assert output == ["plots skipped: the confusion-matrix and IoU plots need matplotlib "
                      "(pip install 'pspnet-tf[report]')"]
    assert "pspnet-tf[report]" in open(tmp_path / "report.md").read()


def test_plots_leave_matplotlibs_global_backend_alone(tmp_path):
    """Drawn on Figure objects: plots.py never imports pyplot, which owns the global
    backend, and drawing leaves the backend as it was (a fresh process; Keras itself imports
    pyplot, so `import pspnet_tf` does too)."""
    path = str(tmp_path / "bars.png")
    imported = [node for node in ast.walk(ast.parse(open(plots.__file__).read()))
                if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert not any("pyplot" in (getattr(node, "module", None) or "")
                   or any("pyplot" in alias.name for alias in node.names) for node in imported)
    result = run_python("-c", "import matplotlib; from pspnet_tf.evaluation import plots; "
                        "before = matplotlib.rcParams._get_backend_or_none(); "
                        f"plots.iou_bars({{'a': 0.5, 'b': None}}, {path!r}, 'two'); "
                        "print(matplotlib.rcParams._get_backend_or_none() == before)")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "True"
    assert Image.open(path).size[1] >= 300
