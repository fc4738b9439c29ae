"""Self-describing models: final_model.keras carries its classes, palette, dataset and scale,
and evaluate.py, predict.py and export.py given only --model=PATH.keras give exactly what
the --flagfile + --weights path gives (built here in-process as the CLIs build it; the
--weights CLIs themselves are tested in test_predict_cli.py and test_export.py); flags given
still override."""

import json
import os
import subprocess

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from helpers import DEMO_MODEL_FLAGS as FLAGS
from helpers import DEMO_SCALE as SCALE
from helpers import (cli_flag_values, model_from_cli_flags, randomise, run_command,
                     tiny_model)

from pspnet_tf import save_weights
from pspnet_tf.cli.inference_flags import model_from_flags, predictor_from_flags
from pspnet_tf.models import PSPNetSegmenter
from pspnet_tf.config import ExperimentConfig, config_from_flags
from pspnet_tf.data.demo import DEMO_CLASS_NAMES, DEMO_PALETTE, generate_demo_dataset
from pspnet_tf.data.images import read_image
from pspnet_tf.data.splits import load_split
from pspnet_tf.errors import UserError
from pspnet_tf.evaluation.evaluator import evaluate
from pspnet_tf.inference.artifacts import save_final_model
from pspnet_tf.inference.images import find_inputs
from pspnet_tf.inference.outputs import stem



def run(command: str, *args: str) -> subprocess.CompletedProcess:
    """Runs an installed command in this process, which must succeed."""
    result = run_command(command, *args)
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
    config = ExperimentConfig.from_fields(dataset="demo", data_root=data_root, num_classes=5,
                                          backbone="resnet18_v1c", psp_channels=16,
                                          aux_channels=8, scale=SCALE)
    save_final_model(model, config, load_split(config, "val"), keras_file)
    return data_root, weights, keras_file


def test_the_model_file_describes_itself_and_flags_override_it(artifacts):
    data_root, _, keras_file = artifacts
    described = model_from_cli_flags(f"--model={keras_file}")
    assert isinstance(described.model, PSPNetSegmenter)
    assert not described.model.auxiliary_head and not described.model.tap_gradients
    assert (described.config.data.dataset, described.config.data.data_root) == ("demo", data_root)
    assert described.config.model.num_classes == 5 and described.config.data.scale == SCALE
    names, palette = described.classes()
    assert names == tuple(DEMO_CLASS_NAMES)
    np.testing.assert_array_equal(palette, DEMO_PALETTE)
    overridden = model_from_cli_flags(f"--model={keras_file}", "--scale=64,32",
                                      "--data_root=elsewhere")
    assert overridden.config.data.scale == (64, 32)
    assert overridden.config.data.data_root == "elsewhere"


@pytest.mark.parametrize("args, message", [
    ((), "either model="),
    (("--model=m.keras", "--weights=w.h5"), "not both"),
    (("--model=missing.keras",), "missing.keras does not exist"),
    (("--model=KEYS", "--num_classes=21"), "num_classes=21 but the model has 5"),
])
def test_bad_model_flags_are_user_errors(artifacts, args, message):
    args = tuple(arg.replace("KEYS", artifacts[2]) for arg in args)
    with pytest.raises(UserError, match=message):
        model_from_cli_flags(*args)


def weights_predictor(data_root: str, weights: str, *args: str):
    """(predictor, config, classes) of the --flagfile + --weights path, as the CLIs build it."""
    values = cli_flag_values(*FLAGS, f"--data_root={data_root}", f"--weights={weights}", *args)
    by_weights = model_from_flags(config_from_flags(values), values)
    predictor = predictor_from_flags(by_weights.model, by_weights.config.data.scale,
                                     by_weights.config.runtime, values)
    return predictor, by_weights.config, by_weights.classes()


def test_predict_with_model_alone_gives_the_weights_labels(artifacts, tmp_path):
    data_root, weights, keras_file = artifacts
    images = os.path.join(data_root, "JPEGImages")
    run("pspnet-predict", f"--model={keras_file}", f"--input={images}", f"--output={tmp_path}")
    predictor, _, (_, palette) = weights_predictor(data_root, weights)
    inputs = find_inputs(images)
    assert len(inputs) == 5
    for path in inputs:
        written = Image.open(tmp_path / "labels" / f"{stem(path)}.png")
        np.testing.assert_array_equal(np.asarray(written), predictor.predict(read_image(path)))
        assert written.getpalette()[:3 * len(palette)] == palette.flatten().tolist()


def test_evaluate_with_model_alone_gives_the_weights_metrics(artifacts, tmp_path):
    data_root, weights, keras_file = artifacts
    output = str(tmp_path / "metrics.json")
    run("pspnet-evaluate", f"--model={keras_file}", f"--output={output}")
    predictor, config, _ = weights_predictor(data_root, weights)
    expected = evaluate(predictor, load_split(config, "val"), verbose=False)
    assert json.load(open(output)) == json.loads(json.dumps(expected))


def test_export_with_model_alone_gives_the_weights_labels(artifacts, tmp_path):
    data_root, weights, keras_file = artifacts
    run("pspnet-export", f"--model={keras_file}", f"--export_dir={tmp_path}")
    images = np.random.default_rng(4).integers(0, 256, (2, 37, 53, 3), dtype=np.uint8)
    served = tf.saved_model.load(str(tmp_path / "1")).signatures["serving_default"](
        images=tf.constant(images))["segmentation"].numpy()
    predictor, _, _ = weights_predictor(data_root, weights, "--mode=whole")
    np.testing.assert_array_equal(served, [predictor.predict(image) for image in images])
