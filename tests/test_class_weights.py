"""Class weights and OHEM in training: auto weights counted once from the training masks,
kept in the run directory and reused on resume; bad per-class lists refused in one line."""

import glob
import json
import os

import numpy as np
import pytest
from PIL import Image

from helpers import TINY, run_command
from pspnet_tf.errors import UserError
from pspnet_tf.training.class_weights import inverse_log_weights, parse_class_weights

NUM_DEMO_CLASSES = 5


def test_inverse_log_weights_follow_enet_formula_normalised():
    counts = np.array([900, 90, 10, 0])
    p = counts / counts.sum()
    raw = np.array([1 / np.log(1.02 + f) for f in p])
    weights = inverse_log_weights(counts)
    np.testing.assert_allclose(weights, raw / (p * raw).sum(), rtol=1e-12)
    np.testing.assert_allclose((p * weights).sum(), 1.0, rtol=1e-12)
    assert weights[3] == weights.max() and weights[0] == weights.min()


@pytest.mark.parametrize("text", ["1,2", "1,2,x", "1,-1,1", "1,nan,1"])
def test_bad_class_weight_lists_are_refused_naming_the_parameter(text):
    with pytest.raises(UserError, match="class_weights=.* 3 non-negative numbers"):
        parse_class_weights(text, 3)
    assert parse_class_weights("", 3) is None
    assert parse_class_weights("1,0.5,2", 3) == [1.0, 0.5, 2.0]


def demo_train_counts(demo_root):
    """Pixel counts of the demo training masks, read with PIL."""
    counts = np.zeros(256, np.int64)
    for path in glob.glob(os.path.join(demo_root, "SegmentationClass", "train_*.png")):
        counts += np.bincount(np.asarray(Image.open(path)).ravel(), minlength=256)
    return counts[:NUM_DEMO_CLASSES]


def test_auto_class_weights_with_ohem_are_stored_and_reused_on_resume(demo_root, tmp_path):
    run_dir = str(tmp_path / "run")
    args = [*TINY, "--epochs=1", f"--data_root={demo_root}", f"--run_dir={run_dir}",
            "--class_weights=auto", "--ohem_threshold=0.7", "--ohem_min_kept=100"]
    result = run_command("pspnet-train", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.load(open(os.path.join(run_dir, "class_weights.json")))
    np.testing.assert_allclose(saved["weights"],
                               inverse_log_weights(demo_train_counts(demo_root)), rtol=1e-12)
    config = json.load(open(os.path.join(run_dir, "config.json")))["optimizer"]
    assert (config["class_weights"], config["ohem_threshold"], config["ohem_min_kept"]) == (
        "auto", 0.7, 100)
    # A resume reuses the stored weights (here edited, so that reuse is visible).
    saved["weights"] = [2.0] * NUM_DEMO_CLASSES
    json.dump(saved, open(os.path.join(run_dir, "class_weights.json"), "w"))
    from pspnet_tf.config import ExperimentConfig
    from pspnet_tf.data.splits import load_split
    from pspnet_tf.training.class_weights import resolve_class_weights
    cfg = ExperimentConfig.from_json(open(os.path.join(run_dir, "config.json")).read())
    assert resolve_class_weights("auto", load_split(cfg, "train"), run_dir) == [2.0] * 5


def test_auto_weights_count_the_training_masks(demo_root):
    from pspnet_tf.config import ExperimentConfig
    from pspnet_tf.data.splits import load_split
    from pspnet_tf.training.class_weights import pixel_counts
    cfg = ExperimentConfig.from_fields(dataset="demo", data_root=demo_root, num_classes=5)
    np.testing.assert_array_equal(pixel_counts(load_split(cfg, "train")),
                                  demo_train_counts(demo_root))
