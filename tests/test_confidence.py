"""Confidence maps (the top class's probability) and the confidence threshold: computed in bands
by `build_segmentation`, returned by Predictor and PSPNetSegmenter, written as PNGs and drawn as
unknown pixels."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from helpers import DEMO_MODEL_FLAGS, DEMO_SCALE, assert_refused_in_one_line, run_command, saved
from helpers import varied_model

from pspnet_tf.errors import ParameterError
from pspnet_tf.inference.export import METADATA_FILE
from pspnet_tf.inference.modes import predictor_for
from pspnet_tf.inference.predictor import Predictor
from pspnet_tf.inference.visualize import (IGNORE_COLOUR, colorize, overlay, save_confidence_png,
                                           side_by_side)
from pspnet_tf.models import PSPNetPreprocessor
from pspnet_tf.models import prediction as prediction_module
from pspnet_tf.models.prediction import (CONFIDENCE, SEGMENTATION, build_segmentation,
                                         labels_at_size, logits_at_size, network_logits)

SCALE = (64, 48)
PALETTE = np.array([[200, 0, 0], [0, 200, 0], [0, 0, 200], [200, 200, 0], [0, 200, 200]],
                   np.uint8)


def softmax_max(logits: np.ndarray) -> np.ndarray:
    """The largest softmax probability along the last axis, in float64 NumPy."""
    logits = np.asarray(logits, np.float64)
    exponentials = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (exponentials / exponentials.sum(axis=-1, keepdims=True)).max(axis=-1)


def threshold_between(confidence: np.ndarray) -> float:
    """A threshold near the median confidence, far (1e-4) from every pixel's confidence, so
    that float differences between two graphs flip no pixel."""
    values = np.unique(confidence)
    gaps = np.flatnonzero(np.diff(values) > 1e-4)
    middle = gaps[np.argmin(np.abs(gaps - len(values) // 2))]
    return float((values[middle] + values[middle + 1]) / 2)


@pytest.fixture(scope="module")
def model():
    return varied_model(seed=3)


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(4).integers(0, 256, (43, 61, 3), dtype=np.uint8)


@pytest.mark.parametrize("band_bytes", [1, prediction_module.BAND_BYTES])
def test_banded_confidence_is_the_softmax_max_of_the_mean_resized_logits(monkeypatch,
                                                                        band_bytes):
    monkeypatch.setattr(prediction_module, "BAND_BYTES", band_bytes)
    rng = np.random.default_rng(1)
    size = (37, 29)
    views = [tf.constant(3 * rng.standard_normal((2, 9, 7, 6)), tf.float32) for _ in range(3)]
    labels, confidence = tf.function(labels_at_size)(views, tf.constant(size), True)
    mean = np.mean([logits_at_size(view, size).numpy() for view in views], axis=0)
    assert confidence.dtype == tf.float32 and confidence.shape == (2, *size)
    np.testing.assert_allclose(confidence, softmax_max(mean), rtol=1e-6, atol=1e-7)
    # The labels are those of the call without confidence, bit for bit.
    np.testing.assert_array_equal(labels, labels_at_size(views, tf.constant(size)))


@pytest.mark.parametrize("options", [
    {}, {"ratios": (0.5, 1.25), "flip": True}, {"window": ((24, 24), (16, 16))}])
def test_predictor_confidence_is_the_softmax_max_of_its_logits(monkeypatch, model, image,
                                                               options):
    monkeypatch.setattr(prediction_module, "BAND_BYTES", 4 * 61 * 5 * 5)  # bands of 5 rows
    predictor = Predictor(model, SCALE, **options)
    labels, confidence = predictor.predict_with_confidence(image)
    assert confidence.dtype == np.float32 and confidence.shape == image.shape[:2]
    np.testing.assert_allclose(confidence, softmax_max(predictor.logits(image)), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_array_equal(labels, predictor.predict(image))


def test_confidence_of_the_whole_image_protocol_step_by_step(model, image):
    logits = network_logits(model, PSPNetPreprocessor(SCALE)(image[np.newaxis]))
    expected = softmax_max(logits_at_size(logits, image.shape[:2])[0].numpy())
    _, confidence = Predictor(model, SCALE).predict_with_confidence(image)
    np.testing.assert_allclose(confidence, expected, rtol=1e-5, atol=1e-6)
    assert confidence.max() - confidence.min() > 0.05  # a map worth thresholding


def test_unbanded_outputs_equal_the_banded_ones(model, image):
    network = lambda inputs: network_logits(model, inputs)  # noqa: E731
    outputs = (SEGMENTATION, CONFIDENCE)
    banded = build_segmentation(network, PSPNetPreprocessor(SCALE), outputs=outputs)
    whole = build_segmentation(network, PSPNetPreprocessor(SCALE), outputs=outputs,
                               banded=False)
    images = tf.constant(image[np.newaxis])
    np.testing.assert_array_equal(banded(images)[SEGMENTATION], whole(images)[SEGMENTATION])
    np.testing.assert_allclose(banded(images)[CONFIDENCE], whole(images)[CONFIDENCE],
                               rtol=1e-6, atol=1e-7)


def test_threshold_labels_less_confident_pixels_255(model, image):
    labels, confidence = Predictor(model, SCALE).predict_with_confidence(image)
    threshold = float(np.median(confidence))
    predictor = Predictor(model, SCALE, confidence_threshold=threshold)
    expected = np.where(confidence < threshold, 255, labels)
    assert 0.3 < np.mean(expected == 255) < 0.7
    np.testing.assert_array_equal(predictor.predict(image), expected)
    thresholded, same_confidence = predictor.predict_with_confidence(image)
    np.testing.assert_array_equal(thresholded, expected)
    np.testing.assert_array_equal(same_confidence, confidence)


def test_segmenter_returns_the_predictors_confidence_and_threshold(model, image):
    labels, confidence = Predictor(model, SCALE).predict_with_confidence(image)
    threshold = float(np.median(confidence))
    model.scale = SCALE  # the segmenter's test scale, which `segment` resizes to
    np.testing.assert_array_equal(model.segment(image), labels)
    got_labels, got_confidence = model.segment_with_confidence(image)
    np.testing.assert_array_equal(got_labels, labels)
    np.testing.assert_allclose(got_confidence, confidence, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(model.segment(image, confidence_threshold=threshold),
                                  np.where(confidence < threshold, 255, labels))


@pytest.mark.parametrize("threshold", [-0.1, 1.5])
def test_a_threshold_outside_0_1_names_the_parameter(model, threshold):
    with pytest.raises(ParameterError, match=r"^confidence_threshold must be in \[0, 1\]"):
        Predictor(model, SCALE, confidence_threshold=threshold)


@pytest.mark.parametrize("kind, dtype, top", [("8bit", np.uint8, 255),
                                              ("16bit", np.uint16, 65535)])
def test_confidence_png_holds_the_rounded_scaled_probability(tmp_path, kind, dtype, top):
    confidence = np.array([[0.0, 0.2, 0.5], [1 / 3, 0.999, 1.0]], np.float32)
    path = str(tmp_path / "confidence.png")
    save_confidence_png(confidence, kind, path)
    with Image.open(path) as saved:
        values = np.asarray(saved)
    assert values.dtype == dtype
    expected = {255: [[0, 51, 128], [85, 255, 255]],
                65535: [[0, 13107, 32768], [21845, 65469, 65535]]}[top]
    np.testing.assert_array_equal(values, expected)


def test_unknown_pixels_are_black_in_pictures_and_named_in_the_legend():
    image = np.full((30, 20, 3), 120, np.uint8)
    labels = np.zeros((30, 20), np.int32)
    labels[:, 10:] = 255
    np.testing.assert_array_equal(colorize(labels, PALETTE)[:, 10:], np.broadcast_to(
        IGNORE_COLOUR, (30, 10, 3)))
    blended = overlay(image, labels, PALETTE, alpha=0.5)
    np.testing.assert_array_equal(blended[:, 10:], 60)  # half the image, half black
    assert (blended[:, :10] == np.round(0.5 * 120 + 0.5 * PALETTE[0])).all()
    picture = side_by_side(image, labels, ("a", "b", "c", "d", "e"), PALETTE)
    legend = picture[:, 40:]
    assert (legend[6:20, 6:20] == PALETTE[0]).all()  # class 0's swatch, then unknown's
    assert (legend[26:40, 6:20] == IGNORE_COLOUR).all()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A 5-class model (the demo dataset's, as DEMO_MODEL_FLAGS say) and its weights file."""
    return saved(varied_model(seed=3), tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def photo(tmp_path_factory, image):
    path = tmp_path_factory.mktemp("inputs") / "photo.png"
    Image.fromarray(image).save(path)
    return str(path)


def test_predict_writes_confidence_pngs_and_draws_unknown_pixels_black(weights, image, photo,
                                                                       tmp_path):
    model, weights_file = weights
    labels, confidence = predictor_for(model, DEMO_SCALE).predict_with_confidence(image)
    threshold = threshold_between(confidence)
    output = tmp_path / "predicted"
    result = run_command("pspnet-predict", *DEMO_MODEL_FLAGS, f"--weights={weights_file}",
                         f"--input={photo}", f"--output={output}", "--confidence=16bit",
                         f"--confidence_threshold={threshold}", "--side_by_side")
    assert result.returncode == 0, result.stderr[-3000:]
    unknown = confidence < threshold
    assert 0.2 < unknown.mean() < 0.8
    with Image.open(output / "confidence" / "photo.png") as saved_confidence:
        np.testing.assert_array_equal(np.asarray(saved_confidence),
                                      np.round(confidence.astype(np.float64) * 65535))
    with Image.open(output / "labels" / "photo.png") as saved_labels:
        np.testing.assert_array_equal(np.asarray(saved_labels), np.where(unknown, 255, labels))
    with Image.open(output / "overlays" / "photo.png") as picture:
        blended = np.asarray(picture)
    np.testing.assert_array_equal(blended[unknown], np.round(0.5 * image[unknown]))
    with Image.open(output / "side_by_side" / "photo.png") as picture:
        coloured = np.asarray(picture)[:image.shape[0], image.shape[1]:2 * image.shape[1]]
    assert (coloured[unknown] == IGNORE_COLOUR).all()
    assert not (coloured[~unknown] == IGNORE_COLOUR).all(axis=-1).any()  # no black class


def test_predict_8bit_confidence_leaves_the_labels_as_they_were(weights, image, photo,
                                                                tmp_path):
    model, weights_file = weights
    labels, confidence = predictor_for(model, DEMO_SCALE).predict_with_confidence(image)
    result = run_command("pspnet-predict", *DEMO_MODEL_FLAGS, f"--weights={weights_file}",
                         f"--input={photo}", f"--output={tmp_path}", "--confidence=8bit")
    assert result.returncode == 0, result.stderr[-3000:]
    with Image.open(tmp_path / "confidence" / "photo.png") as saved_confidence:
        assert saved_confidence.mode == "L"
        np.testing.assert_array_equal(np.asarray(saved_confidence),
                                      np.round(confidence.astype(np.float64) * 255))
    with Image.open(tmp_path / "labels" / "photo.png") as saved_labels:
        np.testing.assert_array_equal(np.asarray(saved_labels), labels)
    assert sorted(os.listdir(tmp_path)) == ["confidence", "labels", "overlays"]


def test_saved_model_serves_confidence_and_the_exported_threshold(weights, tmp_path):
    model, weights_file = weights
    images = np.random.default_rng(6).integers(0, 256, (2, 37, 53, 3), dtype=np.uint8)
    predictor = predictor_for(model, DEMO_SCALE)
    labels, confidence = zip(*(predictor.predict_with_confidence(image) for image in images))
    labels, confidence = np.stack(labels), np.stack(confidence)
    threshold = threshold_between(confidence)
    result = run_command("pspnet-export", *DEMO_MODEL_FLAGS, f"--weights={weights_file}",
                         f"--export_dir={tmp_path}", "--with_confidence",
                         f"--confidence_threshold={threshold}")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "1" / METADATA_FILE) as handle:
        metadata = json.load(handle)
    assert {name: metadata[name] for name in ("confidence_threshold", "unknown_label")} == {
        "confidence_threshold": threshold, "unknown_label": 255}
    loaded = tf.saved_model.load(str(tmp_path / "1"))
    for name in ("serving_default", "serve_encoded"):
        outputs = loaded.signatures[name].structured_outputs
        assert {key: spec.dtype for key, spec in outputs.items()} == {
            "segmentation": tf.uint8, "confidence": tf.float32}
    served = loaded.signatures["serving_default"](images=tf.constant(images))
    png = loaded.signatures["serve_png"](image_bytes=tf.constant(
        [tf.io.encode_png(image).numpy() for image in images]))["segmentation_png_bytes"]
    np.testing.assert_array_equal(tf.io.decode_png(png[0])[..., 0], served["segmentation"][0])
    np.testing.assert_allclose(served["confidence"], confidence, rtol=1e-5, atol=1e-6)
    expected = np.where(confidence < threshold, 255, labels)
    assert 0.2 < np.mean(expected == 255) < 0.8
    np.testing.assert_array_equal(served["segmentation"], expected)


def test_a_threshold_for_a_single_file_export_is_one_error_line(weights, tmp_path):
    result = run_command("pspnet-export", *DEMO_MODEL_FLAGS, f"--weights={weights[1]}",
                         "--format=onnx", f"--output={tmp_path / 'm.onnx'}",
                         "--confidence_threshold=0.5")
    assert_refused_in_one_line(result, "--confidence_threshold is for --format=saved_model")
    assert not os.listdir(tmp_path)
