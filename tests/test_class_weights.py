"""Class weights and OHEM in training: auto weights counted once from the training masks,
kept in the run directory and reused on resume; bad per-class lists refused in one line."""

import glob
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from helpers import TINY, Killed, h5_weights, run_command
from pspnet_tf.errors import UserError
from pspnet_tf.training import class_weights
from pspnet_tf.training.checkpoints import CheckpointKeeper
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


@pytest.mark.slow  # three tiny runs in this process, over a minute on a loaded 2-core CPU
def test_auto_weights_are_read_back_by_a_run_resumed_through_the_trainer(
        demo_root, tmp_path, monkeypatch):
    """Killed mid-epoch after a checkpoint (helpers.Killed), the rerun reads
    class_weights.json instead of counting the masks again, leaves it as it was, and ends
    with the weights of an uninterrupted run."""
    args = [*TINY, f"--data_root={demo_root}", "--class_weights=auto"]
    whole = str(tmp_path / "whole")
    result = run_command("pspnet-train", *args, f"--run_dir={whole}")
    assert result.returncode == 0, result.stderr[-3000:]

    run_dir = str(tmp_path / "killed")
    args += [f"--run_dir={run_dir}", "--checkpoint_every_steps=1"]
    save = CheckpointKeeper.save

    def save_then_die_at_step_2(keeper):
        path = save(keeper)
        if keeper.step == 2:
            raise Killed
        return path

    monkeypatch.setattr(CheckpointKeeper, "save", save_then_die_at_step_2)
    with pytest.raises(Killed):
        run_command("pspnet-train", *args)
    monkeypatch.undo()
    stored = open(os.path.join(run_dir, "class_weights.json"), "rb").read()

    def recount(dataset):
        raise AssertionError("a resumed run counted the class pixels again")

    monkeypatch.setattr(class_weights, "pixel_counts", recount)
    result = run_command("pspnet-train", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in open(os.path.join(run_dir, "train.log")).read()
    assert open(os.path.join(run_dir, "class_weights.json"), "rb").read() == stored
    assert stored == open(os.path.join(whole, "class_weights.json"), "rb").read()
    expected = h5_weights(os.path.join(whole, "final_weights.h5"))
    got = h5_weights(os.path.join(run_dir, "final_weights.h5"))
    assert got.keys() == expected.keys()
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=1e-6, err_msg=name)


@pytest.mark.slow  # two tiny runs in this process, over a minute on a loaded 2-core CPU
def test_a_rerun_of_a_start_that_never_checkpointed_counts_the_weights_again(
        demo_root, tmp_path, monkeypatch):
    """A start stopped before its first checkpoint trained with none of its class_weights.json;
    the rerun (after the user fixed a mask, say) counts the masks it will train on."""
    root = tmp_path / "data"
    shutil.copytree(demo_root, root)
    run_dir = str(tmp_path / "run")
    args = [*TINY, "--epochs=1", f"--data_root={root}", f"--run_dir={run_dir}",
            "--class_weights=auto"]

    def killed_before_saving(keeper):
        raise Killed

    monkeypatch.setattr(CheckpointKeeper, "save", killed_before_saving)
    with pytest.raises(Killed):
        run_command("pspnet-train", *args)
    monkeypatch.undo()
    first = json.load(open(os.path.join(run_dir, "class_weights.json")))["weights"]
    np.testing.assert_allclose(first, inverse_log_weights(demo_train_counts(root)), rtol=1e-12)
    assert not os.path.exists(os.path.join(run_dir, "checkpoints"))

    mask = sorted(glob.glob(os.path.join(root, "SegmentationClass", "train_*.png")))[0]
    with Image.open(mask) as image:
        values, palette = np.array(image), image.getpalette()
    values[values != 255] = 4  # every labelled pixel of this mask: class 4
    fixed = Image.fromarray(values, mode="P")
    fixed.putpalette(palette)
    fixed.save(mask)
    result = run_command("pspnet-train", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    again = json.load(open(os.path.join(run_dir, "class_weights.json")))["weights"]
    np.testing.assert_allclose(again, inverse_log_weights(demo_train_counts(root)), rtol=1e-12)
    assert not np.allclose(again, first)


def test_auto_weights_count_the_training_masks(demo_root):
    from pspnet_tf.config import ExperimentConfig
    from pspnet_tf.data.splits import load_split
    from pspnet_tf.training.class_weights import pixel_counts
    cfg = ExperimentConfig.from_fields(dataset="demo", data_root=demo_root, num_classes=5)
    np.testing.assert_array_equal(pixel_counts(load_split(cfg, "train")),
                                  demo_train_counts(demo_root))
