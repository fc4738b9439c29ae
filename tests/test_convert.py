"""PyTorch checkpoint conversion: logits parity with a PyTorch PSPNet, strict key matching,
safe loading, the download cache, and train.py --pretrained."""

import hashlib
import os
import pickle
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

from pspnet_tf import build_pspnet, load_weights
from pspnet_tf.config import ExperimentConfig
from pspnet_tf.convert import apply_pretrained, convert_checkpoint
from pspnet_tf.download import fetch
from pspnet_tf.models.torch_weights import assign, checkpoint_weights, is_backbone_layer
from pspnet_tf.torch_io import read_state_dict
from pspnet_tf.errors import UserError
from pspnet_tf.training.trainer import train

torch = pytest.importorskip("torch")
from helpers import (  # noqa: E402
    ROOT, TINY, TINY_HEADS, TINY_MODEL, launcher_command, run_python, tiny_model)
from torch_parity import (  # noqa: E402
    NUM_CLASSES, assert_parity, keras_logits, save_mmseg, tiny_reference, torch_logits)
from torch_reference import PSPNet, randomise  # noqa: E402


def convert(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(launcher_command("convert", *args), check=False, cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("output_stride", [8, 16])
def test_resnet50_pspnet_matches_pytorch_after_conversion(output_stride, tmp_path):
    reference = randomise(PSPNet(50, output_stride, num_classes=7, psp_channels=64,
                                 aux_channels=32), seed=output_stride)
    path = save_mmseg(reference, tmp_path / "pspnet.pth")
    model = build_pspnet(7, backbone="resnet50_v1c", output_stride=output_stride,
                         psp_channels=64, aux_channels=32, training_heads=True)
    assign(model, checkpoint_weights(model, read_state_dict(path), path, "mmseg"))
    rng = np.random.default_rng(output_stride)
    for height, width in [(97, 129), (64, 64), (75, 50)]:
        images = rng.normal(size=(1, 3, height, width)).astype("float32")
        assert_parity(torch_logits(reference, images), keras_logits(model, images))


def tiny_state(**kwargs) -> dict[str, np.ndarray]:
    return {key: value.numpy() for key, value in tiny_reference(**kwargs).state_dict().items()}


def tiny_keras(num_classes: int = NUM_CLASSES):
    return tiny_model(num_classes, training_heads=True)


def test_convert_cli_writes_weights_that_evaluate_models_load(tmp_path, torch_hidden):
    reference = tiny_reference()
    path = save_mmseg(reference, tmp_path / "tiny.pth")
    output = str(tmp_path / "tiny.h5")
    env, torch_imported = torch_hidden
    result = convert("--source=mmseg", f"--checkpoint={path}", f"--output={output}", *TINY_MODEL,
                     env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not torch_imported.exists()  # converted without PyTorch
    inference = tiny_model(NUM_CLASSES)
    load_weights(inference, output)
    images = np.random.default_rng(3).normal(size=(2, 3, 45, 61)).astype("float32")
    expected = torch_logits(reference, images)
    assert_parity({"logits": expected["logits"]}, keras_logits(inference, images))

    before = Path(output).read_bytes()
    with pytest.raises(UserError, match="exists"):
        convert_checkpoint(tiny_keras(), path, "mmseg", output)
    assert Path(output).read_bytes() == before


def test_output_in_a_folder_that_cannot_be_created_is_refused(tmp_path):
    path = save_mmseg(tiny_reference(), tmp_path / "tiny.pth")
    blocker = tmp_path / "weights"
    blocker.write_text("notes")
    with pytest.raises(UserError, match=r"cannot write the weights file .*weights/tiny\.h5"):
        convert_checkpoint(tiny_keras(), path, "mmseg", str(blocker / "tiny.h5"))
    assert blocker.read_text() == "notes"


def error_of(state: dict, allow_missing_classifier: bool = False, source: str = "mmseg") -> str:
    with pytest.raises(UserError) as caught:
        checkpoint_weights(tiny_keras(), state, "ckpt.pth", source, allow_missing_classifier)
    return str(caught.value)


def test_missing_unexpected_and_misshaped_tensors_are_named():
    state = tiny_state()
    del state["backbone.layer2.0.bn1.running_var"]
    state["decode_head.extra.weight"] = np.zeros(3, "float32")
    state["backbone.stem.0.weight"] = np.zeros((32, 3, 5, 5), "float32")
    message = error_of(state)
    assert "backbone.layer2.0.bn1.running_var" in message.split("missing")[1]
    assert "decode_head.extra.weight" in message.split("unexpected")[1]
    assert "backbone.stem.0.weight (32, 3, 5, 5) (model needs (32, 3, 3, 3))" in message
    assert "allow_missing_classifier" not in message  # the classifiers fit
    assert "\n" not in message


def test_another_class_count_needs_allow_missing_classifier():
    state = tiny_state(num_classes=9)
    message = error_of(state)
    assert "decode_head.conv_seg.weight" in message and "auxiliary_head.conv_seg.bias" in message
    assert "convert with allow_missing_classifier)" in message
    model = tiny_keras()
    converted = checkpoint_weights(model, state, "ckpt.pth", "mmseg",
                                   allow_missing_classifier=True)
    assert "conv_seg" not in converted and "aux_conv_seg" not in converted
    assert "bottleneck_conv" in converted and "aux_convs_0_bn" in converted


def test_checkpoint_without_auxiliary_head_fills_all_but_the_aux_layers():
    converted = checkpoint_weights(tiny_keras(), tiny_state(aux=False), "ckpt.pth", "mmseg")
    assert "conv_seg" in converted
    assert not [name for name in converted if name.startswith("aux_")]


def imagenet_state(reference: torch.nn.Module) -> dict[str, torch.Tensor]:
    """An open-mmlab ImageNet checkpoint: backbone keys without prefix, plus fc.*."""
    state = {key[len("backbone."):]: value for key, value in reference.state_dict().items()
             if key.startswith("backbone.")}
    state["fc.weight"] = torch.zeros(1000, 512)
    state["fc.bias"] = torch.zeros(1000)
    return state


def test_imagenet_backbone_converts_and_initialises_only_the_backbone(tmp_path):
    reference = tiny_reference()
    path = str(tmp_path / "resnet18_v1c.pth")
    torch.save(imagenet_state(reference), path)
    assert "pass source=resnet_v1c" in error_of(read_state_dict(path), source="mmseg")
    output = str(tmp_path / "resnet18_v1c.h5")
    written = convert_checkpoint(tiny_keras(), path, "resnet_v1c", output)
    with h5py.File(output) as handle:
        stored = {name for name in handle if len(handle[name])}
    assert stored == set(written) and all(is_backbone_layer(name) for name in stored)

    expected = reference.state_dict()
    for source in (output, path):  # the converted .h5 and the .pth converted on the fly
        model = tiny_keras()
        head_before = model.get_layer("bottleneck_conv").get_weights()[0].copy()
        loaded = apply_pretrained(model, source)
        assert set(loaded) == {layer.name for layer in model.layers
                               if layer.weights and is_backbone_layer(layer.name)}
        np.testing.assert_array_equal(
            model.get_layer("layer3_1_conv2").get_weights()[0],
            expected["backbone.layer3.1.conv2.weight"].numpy().transpose(2, 3, 1, 0))
        np.testing.assert_array_equal(model.get_layer("bottleneck_conv").get_weights()[0],
                                      head_before)


def test_classifier_free_conversion_is_saved_without_classifiers(tmp_path):
    path = save_mmseg(tiny_reference(num_classes=9), tmp_path / "other_classes.pth")
    output = str(tmp_path / "no_classifier.h5")
    written = convert_checkpoint(tiny_keras(), path, "mmseg", output,
                                 allow_missing_classifier=True)
    with h5py.File(output) as handle:
        stored = {name for name in handle if len(handle[name])}
    assert stored == set(written) and "aux_convs_0_conv" in stored
    assert not stored & {"conv_seg", "aux_conv_seg"}
    model = tiny_keras()
    classifier_before = model.get_layer("conv_seg").get_weights()[0].copy()
    apply_pretrained(model, output)
    np.testing.assert_array_equal(model.get_layer("conv_seg").get_weights()[0],
                                  classifier_before)


def test_pretrained_checkpoint_of_another_depth_is_refused(tmp_path):
    state = {key: value for key, value in tiny_reference().state_dict().items()}
    path = str(tmp_path / "full.pth")
    torch.save(state, path)
    model = build_pspnet(NUM_CLASSES, backbone="resnet50_v1c", training_heads=True,
                         **TINY_HEADS)
    with pytest.raises(UserError, match="backbone.layer1.0.conv3.weight"):
        apply_pretrained(model, path)


class RunsCode:
    """Unpickling this would create a file: weights-only loading must refuse it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_checkpoints_are_read_without_running_their_code(tmp_path):
    marker = str(tmp_path / "code_ran")
    path = str(tmp_path / "evil.pth")
    with open(path, "wb") as handle:
        pickle.dump({"state_dict": {}, "payload": RunsCode(marker)}, handle)
    with pytest.raises(UserError, match="not loaded"):
        read_state_dict(path)
    assert not os.path.exists(marker)


def test_urls_are_downloaded_once_into_the_cache_and_hash_checked(tmp_path):
    payload = b"checkpoint bytes"
    digest = hashlib.sha256(payload).hexdigest()[:8]
    source = tmp_path / "served" / f"resnet18_v1c-{digest}.pth"
    source.parent.mkdir()
    source.write_bytes(payload)
    cache = str(tmp_path / "cache")
    cached = fetch(source.as_uri(), cache_dir=cache)
    assert Path(cached).read_bytes() == payload and cached.startswith(cache)
    source.unlink()
    assert fetch(source.as_uri(), cache_dir=cache) == cached  # no second download

    corrupt = tmp_path / "served" / "resnet18_v1c-00000000.pth"
    corrupt.write_bytes(payload)
    with pytest.raises(UserError, match="corrupt"):
        fetch(corrupt.as_uri(), cache_dir=cache)
    assert sorted(os.listdir(cache)) == [os.path.basename(cached)]


@pytest.mark.slow  # over a minute on a 2-core CPU
def test_train_starts_from_pretrained_weights_without_torch(tmp_path, torch_hidden,
                                                            demo_root):
    reference = tiny_reference(seed=5)
    weights = str(tmp_path / "pretrained.h5")
    convert_checkpoint(tiny_keras(), save_mmseg(reference, tmp_path / "pretrained.pth"),
                       "mmseg", weights)
    env, torch_imported = torch_hidden
    run_dir = str(tmp_path / "run")
    result = run_python("train.py", *TINY, "--epochs=1", "--learning_rate=0",
                        "--end_learning_rate=0", "--weight_decay=0", f"--data_root={demo_root}",
                        f"--run_dir={run_dir}", f"--pretrained={weights}", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not torch_imported.exists()
    trained = tiny_keras()
    load_weights(trained, os.path.join(run_dir, "final_weights.h5"))
    expected = reference.state_dict()
    for layer, key in (("layer4_1_conv2", "backbone.layer4.1.conv2.weight"),
                       ("bottleneck_conv", "decode_head.bottleneck.conv.weight")):
        np.testing.assert_array_equal(trained.get_layer(layer).get_weights()[0],
                                      expected[key].numpy().transpose(2, 3, 1, 0))


def test_pretrained_pth_is_converted_on_the_fly_without_torch(tmp_path, torch_hidden):
    """What train.py --pretrained=X.pth runs before training (apply_pretrained)."""
    reference = tiny_reference(seed=6)
    checkpoint = save_mmseg(reference, tmp_path / "pretrained.pth")
    loaded = str(tmp_path / "loaded.npy")
    script = ("import numpy as np\n"
              "from pspnet_tf import build_pspnet\n"
              "from pspnet_tf.convert import apply_pretrained\n"
              f"model = build_pspnet({NUM_CLASSES}, backbone='resnet18_v1c', "
              f"training_heads=True, **{TINY_HEADS!r})\n"
              f"apply_pretrained(model, {checkpoint!r})\n"
              f"np.save({loaded!r}, model.get_layer('layer4_1_conv2').get_weights()[0])\n")
    env, torch_imported = torch_hidden
    result = run_python("-c", script, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not torch_imported.exists()
    np.testing.assert_array_equal(
        np.load(loaded),
        reference.state_dict()["backbone.layer4.1.conv2.weight"].numpy().transpose(2, 3, 1, 0))


def test_bad_pretrained_fails_before_creating_the_run_dir(tmp_path, demo_root):
    run_dir = tmp_path / "run"
    config = ExperimentConfig.from_fields(
        dataset="demo", data_root=demo_root, num_classes=NUM_CLASSES, backbone="resnet18_v1c",
        psp_channels=16, aux_channels=8, batch_size=4, run_dir=str(run_dir),
        pretrained=str(tmp_path / "missing.pth"))
    with pytest.raises(UserError, match="missing.pth"):
        train(config)
    assert not run_dir.exists()
