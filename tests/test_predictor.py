"""Inference modes (whole, sliding window, multi-scale + flip), saved predictions, pictures."""

import os

import numpy as np
import pytest
import tensorflow as tf
from absl import flags as absl_flags
from PIL import Image
from helpers import randomise, tiny_model

from pspnet_tf.cli.inference_flags import define_mode_flags, predictor_from_flags
from pspnet_tf.config import RuntimeConfig
from pspnet_tf.data.datasets import Sample, SegmentationDataset, get_dataset
from pspnet_tf.data.demo import generate_demo_dataset
from pspnet_tf.errors import UserError
from pspnet_tf.evaluation.evaluator import evaluate
from pspnet_tf.inference.modes import predictor_for
from pspnet_tf.inference.outputs import CITYSCAPES_LABEL_IDS_DIR, PredictionWriter
from pspnet_tf.inference.predictor import Predictor
from pspnet_tf.models import PSPNetPreprocessor
from pspnet_tf.models import prediction as prediction_module
from pspnet_tf.models.prediction import (
    labels_at_size,
    logits_at_size,
    network_logits,
    resized_rows,
)
from pspnet_tf.inference.sliding import slide_logits
from pspnet_tf.inference.visualize import colorize, side_by_side

SCALE = (64, 48)


@pytest.fixture(scope="module")
def model():
    network = tiny_model(num_classes=4)
    randomise(network, seed=5)
    return network


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)


def reference_slide(run, inputs: np.ndarray, crop, stride) -> np.ndarray:
    """mmseg slide_inference written as plain loops."""
    _, height, width, _ = inputs.shape
    rows = max(height - crop[0] + stride[0] - 1, 0) // stride[0] + 1
    columns = max(width - crop[1] + stride[1] - 1, 0) // stride[1] + 1
    total, count = None, np.zeros((1, height, width, 1))
    for row in range(rows):
        for column in range(columns):
            bottom, right = min(row * stride[0] + crop[0], height), min(
                column * stride[1] + crop[1], width)
            top, left = max(bottom - crop[0], 0), max(right - crop[1], 0)
            logits = np.asarray(run(tf.constant(inputs[:, top:bottom, left:right])))
            if total is None:
                total = np.zeros((1, height, width, logits.shape[-1]))
            total[:, top:bottom, left:right] += logits
            count[:, top:bottom, left:right] += 1
    return total / count


def window_mean(crop: tf.Tensor) -> tf.Tensor:
    """A fake network whose output depends on which window it sees."""
    return tf.ones_like(crop) * tf.reduce_mean(crop, axis=[1, 2], keepdims=True)


@pytest.mark.parametrize("size, crop, stride", [
    ((37, 53), (16, 16), (10, 10)), ((37, 53), (20, 30), (20, 30)), ((12, 9), (16, 16), (10, 10)),
    ((40, 40), (16, 16), (12, 12)),
])
def test_sliding_windows_match_mmseg_loops(size, crop, stride):
    inputs = np.random.default_rng(1).normal(size=(1, *size, 3)).astype("float32")
    slid = slide_logits(tf.function(window_mean), tf.constant(inputs), crop, stride)
    np.testing.assert_allclose(slid, reference_slide(window_mean, inputs, crop, stride),
                               rtol=1e-5, atol=1e-6)
    # Every pixel is covered: windows of an identity network average back to the input.
    identity = slide_logits(tf.identity, tf.constant(inputs), crop, stride)
    np.testing.assert_allclose(identity, inputs, atol=1e-6)


def eager_whole_logits(model, image: np.ndarray, scale) -> np.ndarray:
    """The whole-image protocol step by step, without Predictor's compiled function."""
    logits = network_logits(model, PSPNetPreprocessor(scale)(image[np.newaxis]))
    return logits_at_size(logits, image.shape[:2])[0].numpy()


def test_one_window_covering_the_image_is_the_whole_image_protocol(model, image):
    slid = Predictor(model, SCALE, window=((64, 64), (40, 40))).logits(image)
    np.testing.assert_allclose(slid, eager_whole_logits(model, image, SCALE), atol=1e-5)


def test_slide_mode_averages_model_windows_like_mmseg(model, image):
    crop, stride = (24, 24), (16, 16)
    predictor = Predictor(model, SCALE, window=(crop, stride))
    resized = PSPNetPreprocessor(SCALE)(image[np.newaxis]).numpy()
    expected = reference_slide(lambda crop_: network_logits(model, crop_), resized, crop, stride)
    expected = logits_at_size(tf.constant(expected, tf.float32), image.shape[:2])[0]
    np.testing.assert_allclose(predictor.logits(image), expected, rtol=1e-4, atol=1e-4)


def test_multiscale_flip_averages_the_logits_of_every_view(model, image):
    ratios = (0.5, 1.25)
    views = []
    for ratio in ratios:
        scale = (int(SCALE[0] * ratio), int(SCALE[1] * ratio))
        views.append(eager_whole_logits(model, image, scale))
        views.append(eager_whole_logits(model, image[:, ::-1].copy(), scale)[:, ::-1])
    multiscale = Predictor(model, SCALE, ratios=ratios, flip=True)
    np.testing.assert_allclose(multiscale.logits(image), np.mean(views, axis=0), atol=1e-5)
    assert multiscale.predict(image).shape == image.shape[:2]


def full_size_labels(views: list[tf.Tensor], size) -> np.ndarray:
    """The labels as computed before banding: every view's logits resized at once."""
    resized = tf.add_n([logits_at_size(view, size) for view in views]) / len(views)
    return tf.argmax(resized, axis=-1, output_type=tf.int32).numpy()


# (network h, w), (original H, W), classes, views: up- and downsampling, odd sizes, one row
@pytest.mark.parametrize("source, size, classes, views", [
    ((5, 7), (37, 53), 4, 1), ((64, 48), (301, 203), 21, 3), ((13, 11), (9, 7), 3, 2),
    ((48, 40), (97, 131), 150, 1), ((60, 40), (90, 17), 5, 12), ((1, 1), (5, 5), 3, 1),
    ((40, 30), (40, 30), 6, 2),
])
@pytest.mark.parametrize("band_bytes", [1, prediction_module.BAND_BYTES])
def test_labels_in_bands_equal_the_full_size_argmax(monkeypatch, source, size, classes, views,
                                                    band_bytes):
    monkeypatch.setattr(prediction_module, "BAND_BYTES", band_bytes)
    rng = np.random.default_rng(sum(size) + classes)
    logits = [tf.constant(rng.standard_normal((2, *source, classes)), tf.float32)
              for _ in range(views)]
    banded = tf.function(labels_at_size)(logits, tf.constant(size))
    np.testing.assert_array_equal(banded, full_size_labels(logits, tf.constant(size)))
    # The rows themselves are the resize kernel's values bit for bit.
    top = size[0] // 3
    rows = resized_rows(logits[0], tf.constant(size), tf.constant(top), tf.constant(size[0]))
    np.testing.assert_array_equal(rows, logits_at_size(logits[0], size)[:, top:])


@pytest.mark.parametrize("options", [
    {}, {"ratios": (0.5, 1.25), "flip": True}, {"window": ((24, 24), (16, 16))}])
def test_predictor_labels_are_the_argmax_of_its_full_size_logits(monkeypatch, model, options):
    monkeypatch.setattr(prediction_module, "BAND_BYTES", 4 * 61 * 4 * 5)  # bands of 5 rows
    image = np.random.default_rng(8).integers(0, 256, (43, 61, 3), dtype=np.uint8)
    predictor = Predictor(model, SCALE, **options)
    expected = tf.argmax(predictor.logits(image), axis=-1, output_type=tf.int32)
    np.testing.assert_array_equal(predictor.predict(image), expected)


@pytest.mark.parametrize("mode", ["whole", "slide", "multiscale"])
def test_xla_compiled_network_gives_the_same_logits(model, image, mode):
    options = {"crop": (24, 24), "stride": (16, 16), "ratios": (0.5, 1.25), "flip": True}
    plain = predictor_for(model, SCALE, mode, **options).logits(image)
    compiled = predictor_for(model, SCALE, mode, jit_compile=True, **options).logits(image)
    np.testing.assert_allclose(compiled, plain, rtol=1e-4, atol=1e-4)


def mode_flags(*args: str) -> absl_flags.FlagValues:
    """evaluate.py's and predict.py's --mode flags, parsed from `args`."""
    values = absl_flags.FlagValues()
    define_mode_flags(values)
    values(["test", *args])
    return values


@pytest.mark.parametrize("args, message", [
    (("--mode=slide", "--crop=24"), "--crop=24"),
    (("--mode=slide", "--stride=0,8"), "--stride=0,8"),
    (("--mode=multiscale", "--ratios=1.0,big"), "--ratios=1.0,big"),
])
def test_malformed_mode_flags_name_the_flag(model, args, message):
    with pytest.raises(UserError, match=message):
        predictor_from_flags(model, SCALE, RuntimeConfig(), values=mode_flags(*args))


def test_mode_flags_build_the_matching_predictor(model, image):
    slide = predictor_from_flags(model, SCALE, RuntimeConfig(), values=mode_flags("--mode=slide", "--crop=64,64"))
    np.testing.assert_allclose(slide.logits(image), eager_whole_logits(model, image, SCALE),
                               atol=1e-5)


def test_an_unknown_mode_is_a_user_error(model):
    with pytest.raises(UserError, match="unknown inference mode 'tiles'"):
        predictor_for(model, SCALE, "tiles")


class ConstantPredictor:
    """Not a Predictor: anything with .predict must do for evaluate()."""

    def predict(self, image: np.ndarray) -> np.ndarray:
        return np.zeros(image.shape[:2], np.int32)


def test_evaluate_accepts_any_predictor_and_saves_palette_pngs(tmp_path):
    root = str(tmp_path / "demo")
    generate_demo_dataset(root, num_train=1, num_val=3, image_size=24)
    dataset = get_dataset("demo", root, "val")
    folder = str(tmp_path / "predictions")
    summary = evaluate(ConstantPredictor(), dataset, verbose=False,
                       on_sample=PredictionWriter(dataset, folder))
    labels = [dataset.read_label(sample.label_path) for sample in dataset.samples]
    valid = np.concatenate([label[label != 255] for label in labels])
    assert summary["aAcc"] == pytest.approx(np.mean(valid == 0))
    for sample, label in zip(dataset.samples, labels):
        name = os.path.splitext(os.path.basename(sample.image_path))[0] + ".png"
        with Image.open(os.path.join(folder, name)) as saved:
            assert saved.mode == "P" and saved.size == label.shape[::-1]
            assert not np.asarray(saved).any()
            assert saved.getpalette()[3:6] == list(dataset.palette[1])
    with pytest.raises(UserError, match="not empty"):
        PredictionWriter(dataset, folder)


def test_save_predictions_that_is_a_file_is_refused(tmp_path):
    dataset = SegmentationDataset("demo", "val", ("a", "b"), np.zeros((2, 3), np.uint8),
                                  [Sample("a.jpg", "a.png")])
    path = tmp_path / "predictions"
    path.write_text("notes")
    with pytest.raises(UserError, match=r"^save_predictions=.*cannot be created as a folder"):
        PredictionWriter(dataset, str(path))
    assert path.read_text() == "notes"


def test_cityscapes_predictions_are_also_written_as_label_ids(tmp_path):
    image_path = "x/leftImg8bit/val/aachen/aachen_000000_000019_leftImg8bit.png"
    palette = np.zeros((19, 3), np.uint8)
    dataset = SegmentationDataset("cityscapes", "val", tuple(map(str, range(19))), palette,
                                  [Sample(image_path, "unused.png")])
    writer = PredictionWriter(dataset, str(tmp_path))
    prediction = np.array([[0, 1, 18], [13, 10, 2]], np.int32)
    writer(0, np.zeros((2, 3, 3), np.uint8), prediction, prediction)
    label_ids = np.asarray(Image.open(
        tmp_path / CITYSCAPES_LABEL_IDS_DIR / "aachen" / "aachen_000000_000019_labelIds.png"))
    np.testing.assert_array_equal(label_ids, [[7, 8, 33], [26, 23, 11]])
    train_ids = np.asarray(Image.open(tmp_path / "aachen_000000_000019_leftImg8bit.png"))
    np.testing.assert_array_equal(train_ids, prediction)


def test_side_by_side_shows_image_prediction_and_legend_of_present_classes():
    palette = np.array([[0, 0, 0], [250, 10, 10], [10, 250, 10], [10, 10, 250]], np.uint8)
    image = np.full((9, 11, 3), 100, np.uint8)
    labels = np.zeros((9, 11), np.int32)
    labels[:, 6:] = 2
    picture = side_by_side(image, labels, ("a", "b", "c", "d"), palette)
    assert picture.shape[0] >= 9 and picture.shape[1] > 22
    np.testing.assert_array_equal(picture[:9, :11], image)
    np.testing.assert_array_equal(picture[:9, 11:22], colorize(labels, palette))
    legend = picture[:, 22:].reshape(-1, 3)
    colours = {tuple(colour) for colour in legend}
    assert (10, 250, 10) in colours and (250, 10, 10) not in colours
