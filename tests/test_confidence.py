"""Confidence maps (the top class's probability) and the confidence threshold: computed in bands
by `build_segmentation`, returned by Predictor and PSPNetSegmenter, written as PNGs and drawn as
unknown pixels."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from helpers import varied_model

from pspnet_tf.errors import ParameterError
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
