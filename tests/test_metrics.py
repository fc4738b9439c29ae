"""SegmentationMetrics against plain numpy, inside Keras, and on 2 mirrored replicas."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from pspnet_tf.evaluation.metrics import SegmentationMetrics
from pspnet_tf.evaluation.tables import format_table
from pspnet_tf.models.losses import SegmentationCrossEntropy
from helpers import report_from_two_cpu_replicas, two_cpu_replicas

NUM_CLASSES = 6
ABSENT = 4  # never in the labels, never predicted
ONLY_PREDICTED = 5  # predicted sometimes, never in the labels
NAMES = [f"class{i}" for i in range(NUM_CLASSES)]
MIRRORED_BATCHES = {"seed": 7, "count": 3, "shape": (4, 9, 7)}


def make_batches(seed, count=3, shape=(2, 9, 7)):
    """Labels with ignored pixels plus logits whose argmax never picks class ABSENT."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        labels = rng.choice([0, 1, 2, 3], size=shape)
        labels[rng.random(shape) < 0.2] = 255
        logits = rng.normal(size=shape + (NUM_CLASSES,)).astype(np.float32)
        logits[..., ABSENT] = -100.0
        logits[..., ONLY_PREDICTED] -= 1.0
        batches.append((labels, logits))
    return batches


def reference_scores(batches):
    """Whole-dataset scores with boolean masks, written independently of the metric."""
    labels = np.concatenate([b[0].ravel() for b in batches])
    predictions = np.concatenate([b[1].argmax(-1).ravel() for b in batches])
    keep = labels != 255
    labels, predictions = labels[keep], predictions[keep]
    iou, recall = [], []
    for c in range(NUM_CLASSES):
        intersection = np.sum((labels == c) & (predictions == c))
        union = np.sum((labels == c) | (predictions == c))
        iou.append(intersection / union if union else np.nan)
        recall.append(intersection / np.sum(labels == c) if np.sum(labels == c) else np.nan)
    with np.errstate(all="ignore"):
        return {
            "iou": np.array(iou),
            "mIoU": np.nanmean(iou),
            "aAcc": np.mean(labels == predictions),
            "mAcc": np.nanmean(recall),
            "confusion": np.array(
                [[np.sum((labels == t) & (predictions == p)) for p in range(NUM_CLASSES)]
                 for t in range(NUM_CLASSES)]
            ),
        }


def accumulate(metric, batches):
    for labels, logits in batches:
        metric.update_state(labels, logits)
    return metric


def test_matches_numpy_over_several_batches():
    batches = make_batches(0)
    expected = reference_scores(batches)
    metric = accumulate(SegmentationMetrics(NUM_CLASSES), batches)

    np.testing.assert_array_equal(metric.confusion_matrix(), expected["confusion"])
    iou = metric.per_class_iou()
    assert np.isnan(iou[ABSENT]) and not np.isnan(iou[ONLY_PREDICTED]) and iou[ONLY_PREDICTED] == 0
    np.testing.assert_allclose(iou, expected["iou"], rtol=1e-12)
    np.testing.assert_allclose(float(metric.result()), expected["mIoU"], rtol=1e-6)

    summary = metric.summary(NAMES)
    assert summary["mIoU"] == pytest.approx(expected["mIoU"], rel=1e-12)
    assert summary["aAcc"] == pytest.approx(expected["aAcc"], rel=1e-12)
    assert summary["mAcc"] == pytest.approx(expected["mAcc"], rel=1e-12)
    assert summary["per_class"][NAMES[ABSENT]] is None
    assert summary["per_class"][NAMES[0]] == pytest.approx(expected["iou"][0], rel=1e-12)


def test_whole_dataset_differs_from_mean_of_per_batch_scores():
    batches = make_batches(1)
    whole = float(accumulate(SegmentationMetrics(NUM_CLASSES), batches).result())
    per_batch = [
        float(accumulate(SegmentationMetrics(NUM_CLASSES), [b]).result()) for b in batches
    ]
    assert whole == pytest.approx(reference_scores(batches)["mIoU"], rel=1e-6)
    assert whole != pytest.approx(np.mean(per_batch), rel=1e-6)


def test_predicted_labels_and_channel_axis():
    batches = make_batches(2)
    metric = SegmentationMetrics(NUM_CLASSES, from_logits=False)
    for labels, logits in batches:
        metric.update_state(labels[..., None].astype(np.uint8), logits.argmax(-1))
    expected = reference_scores(batches)["confusion"]
    np.testing.assert_array_equal(metric.confusion_matrix(), expected)


def test_summary_is_json_and_table_shows_percentages():
    metric = accumulate(SegmentationMetrics(NUM_CLASSES), make_batches(3))
    summary = metric.summary(NAMES)
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary
    table = format_table(summary)
    for name in NAMES:
        assert name in table
    assert f"{100 * summary['mIoU']:.2f}" in table
    assert f"{100 * summary['aAcc']:.2f}" in table
    assert f"{100 * summary['mAcc']:.2f}" in table
    assert "n/a" in table  # class ABSENT
    with pytest.raises(ValueError, match="class names"):
        metric.summary(NAMES[:-1])


def test_empty_and_reset():
    metric = accumulate(SegmentationMetrics(NUM_CLASSES), make_batches(4))
    assert metric.confusion_matrix().sum() > 0
    metric.reset_state()
    assert metric.confusion_matrix().sum() == 0
    assert np.isnan(float(metric.result()))
    assert metric.summary(NAMES) == {
        "mIoU": None, "aAcc": None, "mAcc": None, "mDice": None,
        "per_class": dict.fromkeys(NAMES),
        "per_class_scores": {name: dict.fromkeys(("precision", "recall", "F1", "Dice"))
                             for name in NAMES},
        "confusion_matrix": [[0] * NUM_CLASSES] * NUM_CLASSES,
    }


def test_counts_stay_exact_beyond_float32_and_int32():
    metric = SegmentationMetrics(2, from_logits=False)
    (confusion,) = [v for v in metric.variables if tuple(v.shape) == (2, 2)]
    big = 2**40 + 1
    confusion.assign(np.array([[big, 0], [0, 0]], dtype=np.int64))
    metric.update_state(np.zeros((1, 3, 1)), np.zeros((1, 3, 1)))
    assert metric.confusion_matrix()[0, 0] == big + 3


def test_out_of_range_labels_are_rejected():
    metric = SegmentationMetrics(3, from_logits=False)
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_classes"):
        metric.update_state(np.array([[[0, 3]]]), np.array([[[0, 1]]]))

    # XLA drops the assertion; the counted pixels still poison every readout.
    metric = SegmentationMetrics(3, from_logits=False)
    tf.function(metric.update_state, jit_compile=True)(
        tf.constant([[[0, 3, 255]]]), tf.constant([[[0, 1, 2]]])
    )
    assert np.isnan(float(metric.result()))
    with pytest.raises(ValueError, match="1 pixels"):
        metric.summary(["a", "b", "c"])


def test_rejects_sample_weight_and_round_trips_config():
    metric = SegmentationMetrics(NUM_CLASSES, ignore_index=0, name="val_miou", from_logits=False)
    with pytest.raises(ValueError, match="sample weights"):
        metric.update_state(np.zeros((1, 2, 2)), np.zeros((1, 2, 2)), sample_weight=np.ones(1))
    clone = keras.metrics.deserialize(keras.metrics.serialize(metric))
    assert isinstance(clone, SegmentationMetrics)
    assert (clone.num_classes, clone.ignore_index, clone.name, clone.from_logits) == (
        NUM_CLASSES, 0, "val_miou", False,
    )


def dict_output_model():
    """Per-pixel logits from a 1x1 conv plus an auxiliary output, like the PSPNet trainer."""
    inputs = keras.Input((9, 7, 3))
    logits = keras.layers.Conv2D(NUM_CLASSES, 1, name="logits")(inputs)
    aux = keras.layers.Conv2D(NUM_CLASSES, 1, name="aux")(inputs)
    return keras.Model(inputs, {"logits": logits, "aux": aux})


def keras_evaluate_report(strategy, jit_compile="auto"):
    """mIoU from compiled metrics in fit and evaluate next to a numpy reference."""
    rng = np.random.default_rng(6)
    images = rng.normal(size=(8, 9, 7, 3)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, size=(8, 9, 7))
    labels[rng.random(labels.shape) < 0.2] = 255
    with strategy.scope():
        model = dict_output_model()
        model.compile(
            optimizer="sgd",
            loss={"logits": SegmentationCrossEntropy(), "aux": SegmentationCrossEntropy()},
            loss_weights={"logits": 1.0, "aux": 0.4},
            metrics={"logits": [SegmentationMetrics(NUM_CLASSES)]},
            jit_compile=jit_compile,
        )
    targets = {"logits": labels, "aux": labels}
    history = model.fit(
        images, targets, batch_size=4, epochs=1, verbose=0, validation_data=(images, targets)
    )
    logits = model.predict(images, batch_size=4, verbose=0)["logits"]
    evaluated = model.evaluate(images, targets, batch_size=4, verbose=0, return_dict=True)
    (key,) = [k for k in evaluated if k.endswith("mIoU")]
    return {
        "expected": float(reference_scores([(labels, logits)])["mIoU"]),
        "evaluated": float(evaluated[key]),
        "validated_in_fit": float(history.history[f"val_{key}"][-1]),
    }


@pytest.mark.parametrize("jit_compile", [False, True])  # GPUs default to XLA
def test_keras_fit_and_evaluate_on_dict_output_model(jit_compile):
    report = keras_evaluate_report(tf.distribute.get_strategy(), jit_compile)
    assert report["evaluated"] == pytest.approx(report["expected"], rel=1e-6)
    assert report["validated_in_fit"] == pytest.approx(report["expected"], rel=1e-6)


def test_two_replica_mirrored_strategy_matches_single_device():
    report = report_from_two_cpu_replicas(__file__, timeout=150)
    expected = reference_scores(make_batches(**MIRRORED_BATCHES))
    assert report["replicas"] == 2
    np.testing.assert_array_equal(report["confusion"], expected["confusion"])
    assert report["result"] == pytest.approx(expected["mIoU"], rel=1e-6)
    assert report["in_replica_results"] == pytest.approx([expected["mIoU"]] * 2, rel=1e-6)
    assert report["after_reset"] == 0
    keras_report = report["keras"]
    assert keras_report["evaluated"] == pytest.approx(keras_report["expected"], rel=1e-6)
    assert keras_report["validated_in_fit"] == pytest.approx(keras_report["expected"], rel=1e-6)


def _mirrored_report():
    """Runs in a fresh process (see helpers.report_from_two_cpu_replicas)."""
    strategy = two_cpu_replicas()
    batches = make_batches(**MIRRORED_BATCHES)
    with strategy.scope():
        metric = SegmentationMetrics(NUM_CLASSES)

    @tf.function
    def step(labels, logits):
        def replica_fn(labels, logits):
            metric.update_state(labels, logits)
            return metric.result()

        return strategy.run(replica_fn, args=(labels, logits))

    dataset = tf.data.Dataset.from_tensor_slices(
        (np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]))
    ).batch(4)
    for labels, logits in strategy.experimental_distribute_dataset(dataset):
        in_replica = step(labels, logits)
    report = {
        "replicas": strategy.num_replicas_in_sync,
        "confusion": metric.confusion_matrix().tolist(),
        "result": float(metric.result()),
        "in_replica_results": [float(r) for r in strategy.experimental_local_results(in_replica)],
    }
    metric.reset_state()
    report["after_reset"] = int(metric.confusion_matrix().sum())
    report["keras"] = keras_evaluate_report(strategy)
    return report


if __name__ == "__main__":
    print(json.dumps(_mirrored_report()))
