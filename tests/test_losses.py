"""SegmentationCrossEntropy against a numpy reference, and its gradient under MirroredStrategy."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from pspnet_tf.models.losses import SegmentationCrossEntropy
from helpers import report_from_two_cpu_replicas, two_cpu_replicas


def reference_loss(labels, logits, ignore_index=255):
    """Plain numpy: mean of -log softmax(logits)[label] over pixels not ignored."""
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    valid = labels != ignore_index
    picked = np.take_along_axis(log_probs, np.where(valid, labels, 0)[..., None], -1)[..., 0]
    return -picked[valid].mean()


def random_batch(rng, shape=(2, 5, 6), num_classes=4, ignored_fraction=0.3):
    labels = rng.integers(0, num_classes, size=shape)
    labels[rng.random(shape) < ignored_fraction] = 255
    logits = rng.normal(scale=3.0, size=shape + (num_classes,)).astype(np.float32)
    return labels, logits


def test_matches_numpy_reference_with_ignored_pixels():
    rng = np.random.default_rng(0)
    labels, logits = random_batch(rng)
    assert (labels == 255).any() and (labels != 255).any()
    loss = SegmentationCrossEntropy()(labels, logits)
    assert loss.shape == ()
    np.testing.assert_allclose(float(loss), reference_loss(labels, logits), rtol=1e-6)


def test_accepts_labels_with_channel_axis_and_custom_ignore_index():
    rng = np.random.default_rng(1)
    labels, logits = random_batch(rng)
    labels[labels == 255] = 0
    labels[0, 0, :3] = 7
    loss = SegmentationCrossEntropy(ignore_index=7)(labels[..., None].astype(np.uint8), logits)
    np.testing.assert_allclose(float(loss), reference_loss(labels, logits, 7), rtol=1e-6)


def test_all_ignored_gives_exact_zero_and_zero_gradient():
    rng = np.random.default_rng(2)
    _, logits = random_batch(rng)
    labels = np.full(logits.shape[:-1], 255)
    logits = tf.Variable(logits)
    with tf.GradientTape() as tape:
        loss = SegmentationCrossEntropy()(labels, logits)
    gradient = tape.gradient(loss, logits).numpy()
    assert float(loss) == 0.0
    assert np.all(np.isfinite(gradient)) and not gradient.any()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_logits_are_computed_in_float32(dtype):
    rng = np.random.default_rng(3)
    labels, logits = random_batch(rng, shape=(2, 16, 16), num_classes=21)
    low = tf.cast(logits, dtype)
    loss = SegmentationCrossEntropy()(labels, low)
    assert loss.dtype == tf.float32
    rounded = tf.cast(low, tf.float32).numpy()
    np.testing.assert_allclose(float(loss), reference_loss(labels, rounded), rtol=1e-6)


def test_rejects_sample_weight_and_other_reductions():
    rng = np.random.default_rng(4)
    labels, logits = random_batch(rng)
    with pytest.raises(ValueError, match="sample weights"):
        SegmentationCrossEntropy()(labels, logits, sample_weight=np.ones(2))
    with pytest.raises(ValueError, match="reduction"):
        SegmentationCrossEntropy(reduction="sum")


def test_config_round_trip():
    loss = SegmentationCrossEntropy(ignore_index=0, name="aux_loss")
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(clone, SegmentationCrossEntropy)
    assert (clone.ignore_index, clone.name) == (0, "aux_loss")


def test_fit_gradient_under_two_replica_mirrored_strategy():
    """One fit step on 2 replicas moves the weights like PyTorch DDP would.

    Expected update: lr * mean over replicas of the gradient of each replica's own
    mean-over-valid-pixels loss (the replicas get different numbers of valid pixels).
    """
    report = report_from_two_cpu_replicas(__file__, timeout=120)
    assert report["replicas"] == 2
    # A delta read back as (after - before) in float32 is only known to the spacing of
    # the weights themselves (their initial values are random): allow two of those
    # spacings on top of the relative tolerance, nothing more.
    delta_resolution = 2 * np.array(report["weight_spacing"])
    error = np.abs(np.subtract(report["distributed_delta"], report["expected_delta"]))
    allowed = 1e-5 * np.abs(report["expected_delta"]) + delta_resolution
    assert np.all(error <= allowed), (error - allowed).max()
    np.testing.assert_allclose(report["reported_loss"], report["expected_loss"], rtol=1e-5)


def mmseg_ohem_weight(labels, logits, thresh, min_kept, ignore_index=255):
    """mmseg's OHEMPixelSampler.sample (thresh branch), transcribed in PyTorch, NCHW."""
    import torch
    import torch.nn.functional as F
    seg_logit = torch.from_numpy(np.moveaxis(logits, -1, 1).astype(np.float64))
    seg_label = torch.from_numpy(labels).long()
    batch_kept = min_kept * seg_label.size(0)
    valid_mask = seg_label != ignore_index
    seg_weight = seg_logit.new_zeros(size=seg_label.size())
    valid_seg_weight = seg_weight[valid_mask]
    seg_prob = F.softmax(seg_logit, dim=1)
    tmp_seg_label = seg_label.clone().unsqueeze(1)
    tmp_seg_label[tmp_seg_label == ignore_index] = 0
    seg_prob = seg_prob.gather(1, tmp_seg_label).squeeze(1)
    sort_prob, _ = seg_prob[valid_mask].sort()
    if sort_prob.numel() > 0:
        min_threshold = sort_prob[min(batch_kept, sort_prob.numel() - 1)]
    else:
        min_threshold = 0.0
    threshold = max(min_threshold, thresh)
    valid_seg_weight[seg_prob[valid_mask] < threshold] = 1.
    seg_weight[valid_mask] = valid_seg_weight
    return seg_weight.numpy()


def mmseg_loss(labels, logits, class_weights=None, seg_weight=None, ignore_index=255):
    """mmseg's cross_entropy(avg_non_ignore=True): torch's per-pixel weighted CE times the
    sampler's weight, summed over the number of labelled pixels."""
    import torch
    import torch.nn.functional as F
    weight = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float64)
    per_pixel = F.cross_entropy(torch.from_numpy(np.moveaxis(logits, -1, 1).astype(np.float64)),
                                torch.from_numpy(labels).long(), weight=weight,
                                reduction="none", ignore_index=ignore_index).numpy()
    if seg_weight is not None:
        per_pixel = per_pixel * seg_weight
    return per_pixel.sum() / (labels != ignore_index).sum()


def test_class_weights_match_torch_weighted_cross_entropy():
    rng = np.random.default_rng(6)
    labels, logits = random_batch(rng)
    weights = [0.5, 2.0, 1.0, 3.5]
    loss = SegmentationCrossEntropy(class_weights=weights)(labels, logits)
    np.testing.assert_allclose(float(loss), mmseg_loss(labels, logits, weights), rtol=1e-6)


@pytest.mark.parametrize("thresh,min_kept", [(0.7, 5), (0.3, 0), (0.3, 20), (0.05, 1000)])
def test_ohem_matches_mmseg_sampler(thresh, min_kept):
    """Both branches of mmseg's rule: the threshold alone, and raised to keep min_kept per
    image (more than the batch has: every labelled pixel but the easiest-ranked one)."""
    rng = np.random.default_rng(7)
    labels, logits = random_batch(rng, shape=(2, 8, 9))
    seg_weight = mmseg_ohem_weight(labels, logits, thresh, min_kept)
    assert 0 < seg_weight.sum() < (labels != 255).sum()
    for class_weights in (None, [0.5, 2.0, 1.0, 3.5]):
        loss = SegmentationCrossEntropy(class_weights=class_weights, ohem_threshold=thresh,
                                        ohem_min_kept=min_kept)(labels, logits)
        np.testing.assert_allclose(
            float(loss), mmseg_loss(labels, logits, class_weights, seg_weight), rtol=1e-6)


def test_ohem_keeps_exactly_mmseg_pixels_and_no_ignored_ones():
    from pspnet_tf.models.losses import ohem_keep_mask
    rng = np.random.default_rng(8)
    labels, logits = random_batch(rng, shape=(3, 6, 7), ignored_fraction=0.5)
    valid = labels != 255
    kept = ohem_keep_mask(tf.constant(logits), tf.constant(np.where(valid, labels, 0)),
                          tf.constant(valid), 0.4, 4).numpy()
    np.testing.assert_array_equal(kept, mmseg_ohem_weight(labels, logits, 0.4, 4) == 1)
    assert not kept[~valid].any()


def test_ohem_with_everything_ignored_is_zero_with_zero_gradient():
    rng = np.random.default_rng(9)
    _, logits = random_batch(rng)
    logits = tf.Variable(logits)
    with tf.GradientTape() as tape:
        loss = SegmentationCrossEntropy(ohem_threshold=0.7)(np.full(logits.shape[:-1], 255),
                                                             logits)
    gradient = tape.gradient(loss, logits).numpy()
    assert float(loss) == 0.0 and np.all(np.isfinite(gradient)) and not gradient.any()


def test_ohem_threshold_one_without_weights_is_the_plain_loss():
    rng = np.random.default_rng(10)
    labels, logits = random_batch(rng)
    np.testing.assert_allclose(float(SegmentationCrossEntropy(ohem_threshold=1.0)(labels, logits)),
                               reference_loss(labels, logits), rtol=1e-6)


def test_weighted_ohem_config_round_trip():
    loss = SegmentationCrossEntropy(class_weights=[1.0, 2.0], ohem_threshold=0.7,
                                    ohem_min_kept=50)
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert (clone.class_weights, clone.ohem_threshold, clone.ohem_min_kept) == ([1.0, 2.0], 0.7, 50)
    with pytest.raises(ValueError, match="ohem_threshold"):
        SegmentationCrossEntropy(ohem_threshold=1.5)


def _tiny_model(num_classes):
    inputs = keras.Input((4, 4, 3))
    return keras.Model(inputs, keras.layers.Conv2D(num_classes, 1, name="conv")(inputs))


def _distributed_fit_report():
    """Runs in a fresh process (see helpers.report_from_two_cpu_replicas)."""
    strategy = two_cpu_replicas()
    rng = np.random.default_rng(5)
    images = rng.normal(size=(4, 4, 4, 3)).astype(np.float32)
    labels = rng.integers(0, 3, size=(4, 4, 4))
    labels[:2][rng.random((2, 4, 4)) < 0.6] = 255  # first replica's half: fewer valid pixels
    lr = 0.5

    initial = _tiny_model(3).get_weights()
    model = _tiny_model(3)
    model.set_weights(initial)
    per_half = []
    for half in (slice(0, 2), slice(2, 4)):
        with tf.GradientTape() as tape:
            loss = SegmentationCrossEntropy()(labels[half], model(images[half]))
        per_half.append((float(loss), tape.gradient(loss, model.trainable_weights)))
    expected_delta = [-lr * 0.5 * (a + b).numpy() for a, b in zip(per_half[0][1], per_half[1][1])]

    with strategy.scope():
        model = _tiny_model(3)
        model.set_weights(initial)
        model.compile(optimizer=keras.optimizers.SGD(lr), loss=SegmentationCrossEntropy())
    history = model.fit(images, labels, batch_size=4, epochs=1, shuffle=False, verbose=0)
    distributed_delta = [after - before for after, before in zip(model.get_weights(), initial)]
    return {
        "replicas": strategy.num_replicas_in_sync,
        "distributed_delta": np.concatenate([d.ravel() for d in distributed_delta]).tolist(),
        "expected_delta": np.concatenate([d.ravel() for d in expected_delta]).tolist(),
        "weight_spacing": np.concatenate(
            [np.spacing(np.maximum(abs(a), abs(b))).ravel()
             for a, b in zip(model.get_weights(), initial)]
        ).tolist(),
        "reported_loss": history.history["loss"][-1],
        "expected_loss": 0.5 * (per_half[0][0] + per_half[1][0]),
    }


if __name__ == "__main__":
    print(json.dumps(_distributed_fit_report()))
