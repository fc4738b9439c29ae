"""Each augmentation against a plain numpy / OpenCV reference of the mmseg behaviour, and the
fused training window against the step-by-step recipe (tests/transforms_oracle.py)."""

import colorsys

import cv2
import numpy as np
import pytest
import tensorflow as tf

import transforms_oracle as oracle
from pspnet_tf.data import transforms


def _seed(value: int) -> tf.Tensor:
    return tf.constant([value, 17], tf.int64)


def _reference_size(height, width, scale, ratio=1.0):
    """mmseg RandomResize (int-truncated target) + mmcv rescale_size."""
    long_edge, short_edge = int(max(scale) * ratio), int(min(scale) * ratio)
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


@pytest.mark.parametrize("height,width",
                         [(375, 500), (500, 333), (1024, 2048), (17, 9), (128, 128)])
@pytest.mark.parametrize("scale", [(2048, 512), (2048, 1024), (512, 128)])
@pytest.mark.parametrize("ratio", [0.5, 0.73, 0.999, 1.0, 1.61, 2.0])
def test_keep_ratio_size_matches_mmseg(height, width, scale, ratio):
    size = transforms.keep_ratio_size(height, width, scale, ratio)
    assert tuple(int(side) for side in size) == _reference_size(height, width, scale, ratio)


def test_rescale_resizes_image_bilinear_and_label_nearest():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (30, 44, 3)).astype(np.float32)
    label = rng.choice([0, 3, 7, 255], (30, 44)).astype(np.uint8)
    out_image, out_label = oracle.rescale_keep_ratio(image, label, (88, 60))
    height, width = _reference_size(30, 44, (88, 60))
    assert out_image.shape == (height, width, 3) and out_label.shape == (height, width)
    assert out_image.dtype == tf.float32 and out_label.dtype == tf.uint8
    reference = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(out_image.numpy(), reference, atol=1e-2)
    # An exact 2x upscale: nearest neighbour repeats every label pixel.
    np.testing.assert_array_equal(out_label.numpy(), label.repeat(2, axis=0).repeat(2, axis=1))


def test_rescale_label_keeps_its_value_set_when_downscaling():
    label = np.random.default_rng(1).choice([1, 4, 9, 255], (97, 131)).astype(np.uint8)
    image = np.zeros((97, 131, 3), np.uint8)
    _, out_label = oracle.rescale_keep_ratio(image, label, (60, 40))
    assert set(np.unique(out_label.numpy())) <= {1, 4, 9, 255}


def test_rescale_without_label_returns_only_the_image():
    out_image, out_label = oracle.rescale_keep_ratio(np.zeros((10, 20, 3), np.uint8), None,
                                                         (40, 20))
    assert out_label is None and out_image.shape == (20, 40, 3)


def test_random_rescale_stays_in_ratio_range_and_follows_the_seed():
    image, label = np.zeros((40, 60, 3), np.uint8), np.zeros((40, 60), np.uint8)
    low, high = _reference_size(40, 60, (120, 80), 0.5), _reference_size(40, 60, (120, 80), 2.0)
    heights = []
    for seed in range(12):
        first, _ = oracle.random_rescale(image, label, (120, 80), (0.5, 2.0), seed=_seed(seed))
        again, _ = oracle.random_rescale(image, label, (120, 80), (0.5, 2.0), seed=_seed(seed))
        assert first.shape == again.shape
        assert low[0] <= first.shape[0] <= high[0]
        heights.append(first.shape[0])
    assert len(set(heights)) > 6


@pytest.mark.parametrize("seed", range(8))
def test_nearest_indices_reproduce_tensorflow_nearest_resize(seed):
    rng = np.random.default_rng(seed)
    height, width = rng.integers(1, 400, 2)
    label = rng.integers(0, 256, (height, width)).astype(np.uint8)
    for new_height, new_width in rng.integers(1, 1200, (4, 2)):
        full = tf.image.resize(label[..., None], (new_height, new_width), "nearest")[..., 0]
        rows = transforms.nearest_indices(height, new_height)
        cols = transforms.nearest_indices(width, new_width)
        np.testing.assert_array_equal(label[rows.numpy()][:, cols.numpy()], full)


def test_window_class_counts_count_the_gathered_window():
    rng = np.random.default_rng(3)
    label = rng.choice([0, 1, 7, 255], (40, 50)).astype(np.uint8)
    for new_height, new_width, top, left, size in [(97, 120, 5, 9, 30), (40, 50, 3, 0, 20),
                                                   (61, 77, 0, 40, 37)]:
        rows = transforms.nearest_indices(40, new_height)[top:top + size]
        cols = transforms.nearest_indices(50, new_width)[left:left + size]
        window = label[rows.numpy()][:, cols.numpy()]
        expected = np.bincount(window.ravel(), minlength=256)[:255]
        counts = transforms.window_class_counts(tf.constant(label), rows, cols)
        np.testing.assert_array_equal(counts, expected)


def _coordinate_image(height: int, width: int) -> np.ndarray:
    """Pixels that say where they came from, to check that image and label are cut alike."""
    rows, cols = np.mgrid[:height, :width]
    return np.stack([rows, cols, np.zeros_like(rows)], axis=2).astype(np.float32)


def _reference_acceptable(label: np.ndarray, cat_max_ratio: float) -> bool:
    values, counts = np.unique(label, return_counts=True)
    counts = counts[values != 255]
    return len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio


def test_random_crop_cuts_image_and_label_alike():
    image = _coordinate_image(50, 70)
    label = (np.arange(50)[:, None] + np.arange(70)[None] * 3).astype(np.uint8) % 200
    for seed in range(5):
        crop_image, crop_label = oracle.random_crop(image, label, (20, 30), seed=_seed(seed))
        crop_image = crop_image.numpy().astype(int)
        assert crop_image.shape == (20, 30, 3)
        top, left = crop_image[0, 0, 0], crop_image[0, 0, 1]
        np.testing.assert_array_equal(crop_label, label[top:top + 20, left:left + 30])
        np.testing.assert_array_equal(crop_image, image[top:top + 20, left:left + 30])


def test_random_crop_of_a_small_image_keeps_what_exists():
    image, label = _coordinate_image(12, 50), np.ones((12, 50), np.uint8)
    crop_image, crop_label = oracle.random_crop(image, label, (20, 30), seed=_seed(0))
    assert crop_image.shape == (12, 30, 3) and crop_label.shape == (12, 30)


@pytest.mark.parametrize("seed", range(40))
def test_crop_acceptance_matches_mmseg_check(seed):
    rng = np.random.default_rng(seed)
    label = rng.choice([0, 1, 2, 255], (8, 8), p=rng.dirichlet([0.3] * 4)).astype(np.uint8)
    for ratio in (0.5, 0.75, 0.9):
        counts = oracle.class_counts(tf.constant(label))
        accepted = bool(transforms._acceptable_crop(counts, ratio))
        assert accepted == _reference_acceptable(label, ratio)


def test_random_crop_respects_cat_max_ratio_when_possible():
    """Left half class 1, right half class 2 plus ignored rows: only middle windows qualify."""
    label = np.where(np.arange(40)[None] < 20, 1, 2).repeat(40, axis=0).astype(np.uint8)
    label[:10] = 255
    image = _coordinate_image(40, 40)
    checked, unchecked = [], []
    for seed in range(20):
        _, crop = oracle.random_crop(image, label, (20, 20), 0.75, seed=_seed(seed))
        checked.append(_reference_acceptable(crop.numpy(), 0.75))
        _, crop = oracle.random_crop(image, label, (20, 20), 1.0, seed=_seed(seed))
        unchecked.append(_reference_acceptable(crop.numpy(), 0.75))
    assert all(checked)
    assert not all(unchecked)


def test_random_flip_flips_image_and_label_together():
    image = _coordinate_image(6, 9)
    label = np.arange(54, dtype=np.uint8).reshape(6, 9)
    flipped = 0
    for seed in range(20):
        out_image, out_label = oracle.random_flip(image, label, seed=_seed(seed))
        out_image, out_label = out_image.numpy(), out_label.numpy()
        if np.array_equal(out_label, label):
            np.testing.assert_array_equal(out_image, image)
        else:
            np.testing.assert_array_equal(out_label, label[:, ::-1])
            np.testing.assert_array_equal(out_image, image[:, ::-1])
            flipped += 1
    assert 3 <= flipped <= 17


def test_photometric_distortion_range_and_determinism():
    image = np.random.default_rng(0).uniform(0, 255, (16, 16, 3)).astype(np.float32)
    outputs = [oracle.photometric_distortion(image, seed=_seed(seed)).numpy()
               for seed in range(32)]
    again = oracle.photometric_distortion(image, seed=_seed(5)).numpy()
    np.testing.assert_array_equal(outputs[5], again)
    assert all(out.dtype == np.float32 and out.min() >= 0 and out.max() <= 255 for out in outputs)
    changed = sum(not np.allclose(out, image, atol=1e-3) for out in outputs)
    assert 24 <= changed <= 31  # all four steps skipped with probability 1/16


def test_photometric_distortion_keeps_grey_grey():
    """Saturation and hue cannot colour a grey image; brightness/contrast move it uniformly."""
    grey = np.full((4, 4, 3), 100.0, np.float32)
    for seed in range(16):
        out = oracle.photometric_distortion(grey, seed=_seed(seed)).numpy()
        np.testing.assert_allclose(out, np.full_like(out, out[0, 0, 0]), atol=1e-3)
        assert 100.0 * 0.5 - 32 - 1e-3 <= out[0, 0, 0] <= (100.0 + 32) * 1.5 + 1e-3


def test_photometric_hue_shift_is_bounded():
    colour = np.array(colorsys.hsv_to_rgb(0.5, 0.5, 0.6)) * 255.0
    image = np.tile(colour.astype(np.float32), (4, 4, 1))
    limit = transforms.HUE_DELTA_DEGREES / 360.0
    shifts = []
    for seed in range(32):
        out = oracle.photometric_distortion(image, seed=_seed(seed)).numpy()[0, 0] / 255.0
        hue = colorsys.rgb_to_hsv(*np.clip(out, 0, 1))[0]
        shifts.append(abs(hue - 0.5))
    assert max(shifts) <= limit + 0.01 and max(shifts) > limit / 4


def test_normalize_matches_numpy():
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3)).astype(np.uint8)
    expected = (image - np.array([123.675, 116.28, 103.53])) / np.array([58.395, 57.12, 57.375])
    np.testing.assert_allclose(transforms.normalize(image), expected, rtol=1e-5, atol=1e-5)


def test_pad_fills_bottom_right_with_zero_and_ignore():
    image = np.random.default_rng(0).normal(size=(5, 7, 3)).astype(np.float32)
    label = np.full((5, 7), 3, np.uint8)
    out_image, out_label = oracle.pad_to_size(image, label, (8, 9))
    np.testing.assert_array_equal(out_image, np.pad(image, [(0, 3), (0, 2), (0, 0)]))
    np.testing.assert_array_equal(out_label,
                                  np.pad(label, [(0, 3), (0, 2)], constant_values=255))
    same_image, _ = oracle.pad_to_size(image, label, (5, 7))
    np.testing.assert_array_equal(same_image, image)


def _step_by_step(image, label, scale, crop_size, seeds):
    """Recipe steps 1-6 (docs/recipe.md) one transform at a time."""
    image, label = oracle.random_rescale(image, label, scale, (0.5, 2.0), seed=seeds[0])
    image, label = oracle.random_crop(image, label, crop_size, 0.75, seed=seeds[1])
    image, label = oracle.random_flip(image, label, seed=seeds[2])
    image = transforms.normalize(oracle.photometric_distortion(image, seed=seeds[3]))
    return oracle.pad_to_size(image, label, crop_size)


@pytest.mark.parametrize("shape", [(375, 500), (60, 41), (20, 500), (7, 5)])
def test_random_train_window_equals_the_step_by_step_recipe(shape):
    """Same windows, flips and draws: labels bit-identical, images within float rounding;
    ratios 0.5-2 both shrink and enlarge, and small images need padding."""
    rng = np.random.default_rng(shape[0])
    image = rng.integers(0, 256, (*shape, 3)).astype(np.uint8)
    label = rng.choice([0, 1, 2, 255], shape, p=[0.7, 0.1, 0.1, 0.1]).astype(np.uint8)
    crop_size = (48, 56)
    for seed in range(6):
        seeds = [_seed(seed * 4 + step) for step in range(4)]
        fast_image, fast_label = transforms.random_train_window(
            image, label, (160, 64), crop_size, (0.5, 2.0), 0.75, rescale_seed=seeds[0],
            crop_seed=seeds[1], flip_seed=seeds[2], photometric_seed=seeds[3])
        slow_image, slow_label = _step_by_step(image, label, (160, 64), crop_size, seeds)
        assert fast_image.shape == (*crop_size, 3) and fast_label.dtype == tf.uint8
        np.testing.assert_array_equal(fast_label, slow_label)
        # 0.01 of a 0..255 step, in normalised units
        np.testing.assert_allclose(fast_image, slow_image, atol=0.01 / 57.0)
