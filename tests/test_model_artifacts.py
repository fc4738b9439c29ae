"""Self-describing models: final_model.keras carries its classes, palette, dataset and scale,
and evaluate.py, predict.py and export.py given only --model=PATH.keras give exactly what
the --flagfile + --weights path gives; flags given still override."""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from PIL import Image
from test_models import randomise, tiny_model

from pspnet_tf import SegmentationModel, save_weights
from pspnet_tf.config import ExperimentConfig, config_from_flags, define_flags
from pspnet_tf.data.demo import DEMO_CLASS_NAMES, DEMO_PALETTE, generate_demo_dataset
from pspnet_tf.errors import UserError
from pspnet_tf.inference.artifacts import save_final_model
from pspnet_tf.inference.loading import define_model_flags, model_from_flags
from pspnet_tf.training.trainer import load_split

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCALE = (48, 40)
FLAGS = ["--flagfile=configs/demo.cfg", "--psp_channels=16", "--aux_channels=8",
         f"--scale={SCALE[0]},{SCALE[1]}"]


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, os.path.join(ROOT, script), *args], check=False,
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """(data root, weights .h5, model .keras) of one tiny randomised demo PSPNet, the .keras
    written as train.py writes final_model.keras."""
    folder = tmp_path_factory.mktemp("artifacts")
    data_root = str(folder / "demo")
    generate_demo_dataset(data_root, num_train=2, num_val=3, image_size=44)
    model = tiny_model(num_classes=len(DEMO_PALETTE), training_heads=True)
    randomise(model, seed=13)
    weights, keras_file = str(folder / "final_weights.h5"), str(folder / "final_model.keras")
    save_weights(model, weights)
    config = ExperimentConfig(dataset="demo", data_root=data_root, num_classes=5,
                              backbone="resnet18_v1c", psp_channels=16, aux_channels=8,
                              scale=SCALE)
    save_final_model(model, config, load_split(config, "val"), keras_file)
    return data_root, weights, keras_file


def parsed(*args: str) -> flags.FlagValues:
    values = flags.FlagValues()
    define_flags(values)
    define_model_flags(values)
    values(["test", *args])
    return values


def loaded(*args: str):
    values = parsed(*args)
    return model_from_flags(config_from_flags(values), values)


def test_the_model_file_describes_itself_and_flags_override_it(artifacts):
    data_root, _, keras_file = artifacts
    described = loaded(f"--model={keras_file}")
    assert isinstance(described.model, SegmentationModel)
    assert (described.config.dataset, described.config.data_root) == ("demo", data_root)
    assert described.config.num_classes == 5 and described.config.scale == SCALE
    names, palette = described.classes()
    assert names == tuple(DEMO_CLASS_NAMES)
    np.testing.assert_array_equal(palette, DEMO_PALETTE)
    overridden = loaded(f"--model={keras_file}", "--scale=64,32", "--data_root=elsewhere")
    assert overridden.config.scale == (64, 32) and overridden.config.data_root == "elsewhere"


@pytest.mark.parametrize("args, message", [
    ((), "either --model"),
    (("--model=m.keras", "--weights=w.h5"), "not both"),
    (("--model=missing.keras",), "missing.keras does not exist"),
    (("--model=KEYS", "--num_classes=21"), "--num_classes=21 but the --model has 5"),
])
def test_bad_model_flags_are_user_errors(artifacts, args, message):
    args = tuple(arg.replace("KEYS", artifacts[2]) for arg in args)
    with pytest.raises(UserError, match=message):
        loaded(*args)


def test_predict_with_model_alone_gives_the_weights_labels(artifacts, tmp_path):
    data_root, weights, keras_file = artifacts
    images = os.path.join(data_root, "JPEGImages")
    run("predict.py", *FLAGS, f"--weights={weights}", f"--input={images}",
        f"--output={tmp_path / 'weights'}")
    run("predict.py", f"--model={keras_file}", f"--input={images}",
        f"--output={tmp_path / 'model'}")
    expected = sorted(glob.glob(str(tmp_path / "weights" / "*" / "*.png")))
    assert len(expected) == 2 * 5  # labels and overlays of every image
    for path in expected:
        twin = path.replace(str(tmp_path / "weights"), str(tmp_path / "model"))
        np.testing.assert_array_equal(np.asarray(Image.open(path)), np.asarray(Image.open(twin)))
        if "labels" in path:
            assert Image.open(path).getpalette() == Image.open(twin).getpalette()


def test_evaluate_with_model_alone_gives_the_weights_metrics(artifacts, tmp_path):
    data_root, weights, keras_file = artifacts
    by_weights, by_model = str(tmp_path / "weights.json"), str(tmp_path / "model.json")
    run("evaluate.py", *FLAGS, f"--data_root={data_root}", f"--weights={weights}",
        f"--output={by_weights}")
    run("evaluate.py", f"--model={keras_file}", f"--output={by_model}")
    assert json.load(open(by_model)) == json.load(open(by_weights))


def test_export_with_model_alone_gives_the_weights_labels(artifacts, tmp_path):
    _, weights, keras_file = artifacts
    run("export.py", *FLAGS, f"--weights={weights}", f"--export_dir={tmp_path / 'weights'}")
    run("export.py", f"--model={keras_file}", f"--export_dir={tmp_path / 'model'}")
    images = np.random.default_rng(4).integers(0, 256, (1, 37, 53, 3), dtype=np.uint8)
    labels = [tf.saved_model.load(str(tmp_path / kind / "1")).signatures["serving_default"](
        images=tf.constant(images))["segmentation"].numpy() for kind in ("weights", "model")]
    np.testing.assert_array_equal(labels[0], labels[1])
