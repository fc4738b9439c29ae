"""Test-server submissions: names, value ranges and zips for Cityscapes, ADE20K and VOC, a
Cityscapes submission scored by cityscapesScripts' own evaluator, and pspnet-submit end to
end."""

import os
import zipfile

import numpy as np
import pytest
from PIL import Image
from helpers import DEMO_MODEL_FLAGS, assert_refused_in_one_line, run_command, saved_tiny_weights

from pspnet_tf.data.descriptors import CITYSCAPES_LABEL_TO_TRAIN_ID, DATASETS, IGNORE_INDEX
from pspnet_tf.evaluation.metrics import SegmentationMetrics
from pspnet_tf.inference.submission import write_submission

CITIES = {"berlin": ("000000_000019", "000001_000042"), "bonn": ("000002_000007",)}


class ShiftedPredictor:
    """Predicts class (sum of the image's first pixel) % num_classes everywhere, then the
    column index modulo num_classes on the right half: a fixed, known label map."""

    def __init__(self, num_classes):
        self.num_classes = num_classes

    def predict(self, image):
        labels = np.full(image.shape[:2], int(image[0, 0].sum()) % self.num_classes, np.int32)
        half = image.shape[1] // 2
        labels[:, half:] = np.arange(image.shape[1] - half) % self.num_classes
        return labels


def write_images(paths, seed=0, size=(24, 40)):
    rng = np.random.default_rng(seed)
    for path in paths:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(rng.integers(0, 256, size + (3,), dtype=np.uint8)).save(path)


def cityscapes_images(root):
    paths = [os.path.join(root, "leftImg8bit", "test", city, f"{city}_{frame}_leftImg8bit.png")
             for city, frames in CITIES.items() for frame in frames]
    write_images(paths)
    return paths


def test_cityscapes_submission_scores_as_expected_with_cityscapesscripts(tmp_path):
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cs_eval

    paths = cityscapes_images(str(tmp_path / "cityscapes"))
    folder = str(tmp_path / "submission")
    predictor = ShiftedPredictor(19)
    written, archive = write_submission(predictor, "cityscapes", paths, folder, verbose=False)
    assert sorted(os.path.relpath(path, folder) for path in written) == sorted(
        os.path.join(city, f"{city}_{frame}_labelIds.png")
        for city, frames in CITIES.items() for frame in frames)
    with zipfile.ZipFile(archive) as handle:
        assert sorted(handle.namelist()) == sorted(os.path.relpath(path, folder)
                                                   for path in written)

    # Ground truth in label ids: the prediction's train ids with a band of pixels changed,
    # some to other classes, some to labels the benchmark does not evaluate.
    train_to_label = {train: label for label, train in CITYSCAPES_LABEL_TO_TRAIN_ID}
    label_to_train = DATASETS["cityscapes"].label_map
    rng = np.random.default_rng(5)
    metric = SegmentationMetrics(19, from_logits=False)
    ground_truths, predictions = [], []
    for path, image_path in zip(written, paths):
        submitted = np.asarray(Image.open(path))
        assert submitted.dtype == np.uint8
        assert set(np.unique(submitted)) <= set(train_to_label.values())
        train_ids = ShiftedPredictor(19).predict(np.asarray(Image.open(image_path)))
        np.testing.assert_array_equal(label_to_train[submitted], train_ids)
        truth = np.vectorize(train_to_label.get)(train_ids).astype(np.uint8)
        band = rng.random(truth.shape) < 0.3
        truth[band] = rng.choice([7, 8, 11, 26, 0, 4], size=band.sum())  # 0, 4: unevaluated
        gt_path = os.path.join(str(tmp_path), "gtFine", os.path.basename(path))
        os.makedirs(os.path.dirname(gt_path), exist_ok=True)
        Image.fromarray(truth).save(gt_path)
        metric.update_state(label_to_train[truth][np.newaxis], train_ids[np.newaxis])
        ground_truths.append(gt_path)

    args = cs_eval.args
    args.quiet, args.JSONOutput, args.evalInstLevelScore = True, False, False
    args.predictionPath, args.predictionWalk = folder, None
    for gt_path in ground_truths:  # the evaluator finds each prediction by its name
        predictions.append(cs_eval.getPrediction(args, gt_path))
    assert sorted(predictions) == sorted(written)
    results = cs_eval.evaluateImgLists(predictions, ground_truths, args)
    ours = metric.summary(DATASETS["cityscapes"].class_names)["per_class"]
    for name, iou in ours.items():
        theirs = results["classScores"][name]
        if iou is None:
            assert np.isnan(theirs)
        else:
            assert theirs == pytest.approx(iou, abs=1e-9)
    assert results["averageScoreClasses"] == pytest.approx(
        np.mean([iou for iou in ours.values() if iou is not None]), abs=1e-9)


def test_ade20k_submission_is_labels_plus_one_named_as_the_images(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    paths = [str(root / "images" / "testing" / f"ADE_test_0000000{i}.jpg") for i in (1, 2)]
    write_images(paths)
    samples = DATASETS["ade20k"].list_samples(str(root), "test")  # "test" is "testing"
    assert [sample.image_path for sample in samples] == paths
    written, archive = write_submission(ShiftedPredictor(150), "ade20k", paths,
                                        str(tmp_path / "ade"), verbose=False)
    assert [os.path.basename(path) for path in written] == ["ADE_test_00000001.png",
                                                            "ADE_test_00000002.png"]
    for path, image_path in zip(written, paths):
        submitted = Image.open(path)
        assert submitted.mode == "L"
        values = np.asarray(submitted)
        expected = ShiftedPredictor(150).predict(np.asarray(Image.open(image_path))) + 1
        np.testing.assert_array_equal(values, expected)
        assert 1 <= values.min() and values.max() <= 150
    assert zipfile.ZipFile(archive).namelist() == ["ADE_test_00000001.png",
                                                   "ADE_test_00000002.png"]


def test_voc_submission_is_palette_pngs_in_the_comp6_layout(tmp_path):
    paths = [str(tmp_path / "VOC2012" / "JPEGImages" / f"2008_00000{i}.jpg") for i in (1, 3)]
    write_images(paths)
    written, archive = write_submission(ShiftedPredictor(21), "voc", paths,
                                        str(tmp_path / "voc"), verbose=False)
    names = [f"results/VOC2012/Segmentation/comp6_test_cls/2008_00000{i}.png" for i in (1, 3)]
    assert [os.path.relpath(path, tmp_path / "voc") for path in written] == names
    submitted = Image.open(written[0])
    assert submitted.mode == "P"
    palette = np.asarray(submitted.getpalette()[:63]).reshape(21, 3)
    np.testing.assert_array_equal(palette, DATASETS["voc"].palette)
    values = np.asarray(submitted)
    assert values.max() <= 20 and IGNORE_INDEX not in values
    assert zipfile.ZipFile(archive).namelist() == names


def test_folder_datasets_have_no_server_and_a_used_output_is_refused(tmp_path):
    paths = [str(tmp_path / "a.png")]
    write_images(paths)
    with pytest.raises(Exception, match="no test server"):
        write_submission(ShiftedPredictor(2), "folder", paths, str(tmp_path / "out"))
    used = tmp_path / "used"
    used.mkdir()
    (used / "old.png").write_bytes(b"kept")
    with pytest.raises(Exception, match="not empty"):
        write_submission(ShiftedPredictor(21), "voc", paths, str(used))
    assert os.listdir(used) == ["old.png"]


def test_pspnet_submit_writes_a_voc_submission_and_refuses_a_second_run(tmp_path):
    _, weights = saved_tiny_weights(tmp_path, seed=3, num_classes=21)
    root = tmp_path / "VOC2012"
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "test.txt").write_text("2009_000001\n2009_000002\n")
    write_images([str(root / "JPEGImages" / f"2009_00000{i}.jpg") for i in (1, 2)])
    output = str(tmp_path / "submission")
    flags = [*DEMO_MODEL_FLAGS, "--dataset=voc", "--num_classes=21", f"--data_root={root}", f"--weights={weights}",
             f"--output={output}"]
    result = run_command("pspnet-submit", *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"2 voc test predictions written to {output}, zipped as {output}.zip" in result.stdout
    folder = os.path.join(output, "results", "VOC2012", "Segmentation", "comp6_test_cls")
    assert sorted(os.listdir(folder)) == ["2009_000001.png", "2009_000002.png"]
    again = run_command("pspnet-submit", *flags)
    assert_refused_in_one_line(again, "--output")
