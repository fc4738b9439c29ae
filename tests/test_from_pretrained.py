"""Published checkpoints by name: the real download code (progress, sha256 prefix, resume,
cache) against a loopback HTTP server serving generated mmseg-layout checkpoints."""

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from pspnet_tf.convert import apply_pretrained
from pspnet_tf.download import fetch
from pspnet_tf.models.presets import Preset
from pspnet_tf.models import PSPNetSegmenter
from pspnet_tf.models.presets import BASE_ENV, OPENMMLAB
from pspnet_tf.models.presets import PRESETS as CHECKPOINTS
from pspnet_tf.data.demo import DEMO_CLASS_NAMES, DEMO_PALETTE
from pspnet_tf.errors import UserError

torch = pytest.importorskip("torch")
from helpers import TINY_HEADS, model_from_cli_flags, run_python, tiny_model  # noqa: E402
from preset_server import serve_preset  # noqa: E402
from torch_parity import (  # noqa: E402
    assert_parity, keras_logits, save_mmseg, tiny_reference, torch_logits)

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_registry_holds_the_published_checkpoints_of_the_readme():
    readme = README.read_text()
    assert all(checkpoint.url.startswith(OPENMMLAB + "/") and checkpoint.url in readme
               for checkpoint in CHECKPOINTS)
    names = [checkpoint.name for checkpoint in CHECKPOINTS]
    assert "pspnet_r50-d8_512x1024_80k_cityscapes" in names and "resnet50_v1c" in names
    assert all(f"`{name}`" in readme for name in names)
    with pytest.raises(UserError, match="neither a published checkpoint .* nor a preset folder"):
        PSPNetSegmenter.from_preset("pspnet_r18")


def test_download_is_resumed_checked_converted_and_cached(download_server, tmp_path, monkeypatch):
    reference = tiny_reference(seed=21)
    data = Path(save_mmseg(reference, tmp_path / "tiny.pth")).read_bytes()
    digest = hashlib.sha256(data).hexdigest()[:8]
    path = f"/tiny/pspnet_tiny_demo-{digest}.pth"
    download_server.files[path] = data
    entry = Preset("pspnet_tiny_demo", download_server.base + path,
                                 backbone="resnet18_v1c", dataset="demo", scale=(48, 40),
                                 **TINY_HEADS)
    cache = tmp_path / "cache"
    monkeypatch.setitem(PSPNetSegmenter.presets, entry.name, entry)

    download_server.truncate.add(path)  # cut off half-way: fetch tries again, resuming
    model = PSPNetSegmenter.from_preset(entry.name, cache_dir=str(cache))
    assert download_server.requests == [(path, None), (path, f"bytes={len(data) // 2}-")]
    assert isinstance(model, PSPNetSegmenter) and model.preset == "pspnet_tiny_demo"
    assert model.class_names == list(DEMO_CLASS_NAMES)
    np.testing.assert_array_equal(model.palette, DEMO_PALETTE)
    assert model.scale == (48, 40) and model.dataset == "demo"
    images = np.random.default_rng(2).normal(size=(1, 3, 45, 61)).astype("float32")
    expected = {"logits": torch_logits(reference, images)["logits"]}
    assert_parity(expected, keras_logits(model, images))
    assert sorted(os.listdir(cache)) == [f"pspnet_tiny_demo-{digest}",
                                         f"pspnet_tiny_demo-{digest}.pth"]

    again = PSPNetSegmenter.from_preset(entry.name, cache_dir=str(cache))
    assert download_server.hits(path) == 2  # the interrupted and the resumed request, nothing more
    assert again.get_config() == model.get_config()
    np.testing.assert_array_equal(keras_logits(again, images)["logits"],
                                  keras_logits(model, images)["logits"])


def test_a_server_without_range_support_sends_the_whole_file_again(download_server, tmp_path):
    payload = bytes(range(256)) * 4096
    path = f"/resnet18_v1c-{hashlib.sha256(payload).hexdigest()[:8]}.pth"
    download_server.files[path] = payload
    download_server.truncate.add(path)
    download_server.ignore_range = True
    cache = tmp_path / "cache"
    assert Path(fetch(download_server.base + path, str(cache), backoff=0)).read_bytes() == payload
    assert download_server.requests == [(path, None), (path, f"bytes={len(payload) // 2}-")]
    assert os.listdir(cache) == [path[1:]]


def test_from_preset_needs_no_pytorch(download_server, tmp_path, torch_hidden):
    data = Path(save_mmseg(tiny_reference(seed=3), tmp_path / "tiny.pth")).read_bytes()
    path = f"/pspnet_tiny-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    download_server.files[path] = data
    script = ("import sys\n"
              "from pspnet_tf import PSPNetSegmenter\n"
              "from pspnet_tf.models.presets import Preset\n"
              f"entry = Preset('pspnet_tiny', {download_server.base + path!r}, "
              f"'resnet18_v1c', 'demo', scale=(48, 40), **{TINY_HEADS!r})\n"
              "PSPNetSegmenter.presets[entry.name] = entry\n"
              f"model = PSPNetSegmenter.from_preset('pspnet_tiny', "
              f"cache_dir={str(tmp_path / 'cache')!r})\n"
              "print(model.class_names)\n")
    env, torch_imported = torch_hidden
    result = run_python("-c", script, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not torch_imported.exists() and str(list(DEMO_CLASS_NAMES)) in result.stdout


def test_a_download_with_the_wrong_hash_is_refused_and_not_cached(download_server, tmp_path,
                                                                 monkeypatch):
    monkeypatch.setenv(BASE_ENV, download_server.base)
    name = "pspnet_r50-d8_512x1024_80k_cityscapes"
    path = next(c.url for c in CHECKPOINTS if c.name == name)[len(OPENMMLAB):]
    download_server.files[path] = b"not the published checkpoint"
    cache = tmp_path / "cache"
    with pytest.raises(UserError, match="sha256 does not start with 2376f12b"):
        PSPNetSegmenter.from_preset(name, cache_dir=str(cache))
    assert os.listdir(cache) == [] and download_server.hits(path) == 1


def test_train_pretrained_names_fetch_the_published_backbone(download_server, tmp_path,
                                                            monkeypatch):
    """What train.py --pretrained=resnet50_v1c runs: the registry's URL, hash-checked."""
    monkeypatch.setenv(BASE_ENV, download_server.base)
    path = "/pretrain/third_party/resnet50_v1c-2cccc1ad.pth"
    download_server.files[path] = b"a corrupt download"
    model = tiny_model(5, training_heads=True)
    with pytest.raises(UserError, match="corrupt"):
        apply_pretrained(model, "resnet50_v1c", cache_dir=str(tmp_path / "cache"))
    assert download_server.hits(path) == 1


def test_cli_model_names_load_through_from_preset_and_its_cache(download_server, tmp_path,
                                                                   monkeypatch):
    """evaluate/predict/export --model=NAME: the converted model already in the cache (as
    a first call leaves it) is loaded, with the dataset's classes, and nothing downloaded."""
    from pspnet_tf.download import CACHE_ENV
    from pspnet_tf.data.descriptors import dataset_classes
    monkeypatch.setenv(BASE_ENV, download_server.base)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    name = "pspnet_r50-d8_512x1024_80k_cityscapes"
    entry = next(c for c in CHECKPOINTS if c.name == name)
    names, palette = dataset_classes("cityscapes", "")
    model = tiny_model(len(names), class_names=names, palette=palette, scale=entry.scale,
                       dataset="cityscapes", data_root=entry.data_root)
    model.save_to_preset(str(tmp_path / entry.file_name[:-len(".pth")]))
    described = model_from_cli_flags(f"--model={name}")
    assert described.config.data.dataset == "cityscapes"
    assert described.config.data.scale == (2048, 1024)
    assert described.config.data.data_root == "data/cityscapes"
    assert described.classes()[0] == names and download_server.requests == []


def test_the_readme_quick_start_labels_an_image_with_a_preset(download_server, tmp_path,
                                                              monkeypatch):
    """README's Python example, run on a tiny preset served like open-mmlab's files."""
    from pspnet_tf.inference.predictor import Predictor

    reference = tiny_reference(seed=5)
    data = Path(save_mmseg(reference, tmp_path / "tiny.pth")).read_bytes()
    url = serve_preset(download_server, monkeypatch, tmp_path, data,
                       "/mmsegmentation/v0.5/pspnet", "pspnet_tiny_demo")
    monkeypatch.setitem(PSPNetSegmenter.presets, "pspnet_tiny_demo", Preset(
        "pspnet_tiny_demo", url, "resnet18_v1c", "demo", scale=(48, 40), **TINY_HEADS))

    # The README's example:
    import pspnet_tf
    print(pspnet_tf.PSPNetSegmenter.list_presets())
    segmenter = pspnet_tf.PSPNetSegmenter.from_preset("pspnet_tiny_demo")
    image = np.random.default_rng(0).integers(0, 256, (45, 61, 3), dtype=np.uint8)  # RGB
    labels = segmenter.segment(image)  # int32 class ids, 45 x 61
    print(segmenter.class_names[labels[0, 0]])

    assert "pspnet_tiny_demo" in pspnet_tf.PSPNetSegmenter.list_presets()
    assert labels.shape == (45, 61) and labels.dtype == np.int32
    assert segmenter.class_names == list(DEMO_CLASS_NAMES) and segmenter.scale == (48, 40)
    np.testing.assert_array_equal(labels, Predictor(segmenter, (48, 40)).predict(image))
    assert len(download_server.requests) == 1
    np.testing.assert_array_equal(pspnet_tf.PSPNetSegmenter.from_preset("pspnet_tiny_demo").segment(image),
                                  labels)  # from the cache
    assert len(download_server.requests) == 1


def test_the_backbone_preset_holds_the_imagenet_weights(download_server, tmp_path, monkeypatch):
    from pspnet_tf.models import ResNetV1cBackbone

    reference = tiny_reference(seed=6)
    state = {key[len("backbone."):]: value for key, value in reference.state_dict().items()
             if key.startswith("backbone.")}
    state["fc.weight"] = torch.zeros(1000, 512)  # the ImageNet classifier, ignored
    torch.save(state, tmp_path / "imagenet.pth")
    url = serve_preset(download_server, monkeypatch, tmp_path,
                       (tmp_path / "imagenet.pth").read_bytes(), "/pretrain/third_party",
                       "resnet18_v1c")
    monkeypatch.setitem(ResNetV1cBackbone.presets, "resnet18_v1c",
                        Preset("resnet18_v1c", url, "resnet18_v1c"))
    backbone = ResNetV1cBackbone.from_preset("resnet18_v1c")
    assert (backbone.depth, backbone.output_stride) == (18, 8)
    np.testing.assert_array_equal(backbone.get_layer("layer4_1_conv2").kernel.numpy(),
                                  state["layer4.1.conv2.weight"].numpy().transpose(2, 3, 1, 0))
    assert ResNetV1cBackbone.list_presets() == ["resnet50_v1c", "resnet101_v1c",
                                                "resnet18_v1c"]
    d16 = ResNetV1cBackbone.from_preset("resnet18_v1c", output_stride=16)  # the same weights
    assert d16.output_stride == 16
    for ours, theirs in zip(d16.weights, backbone.weights, strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    images = np.zeros((1, 64, 64, 3), np.float32)
    assert d16(images).shape[1:3] == (4, 4) and backbone(images).shape[1:3] == (8, 8)


def test_presets_are_listed_per_class_and_refused_by_the_other():
    from pspnet_tf.models import ResNetV1cBackbone, list_presets

    assert list_presets() == {"ResNetV1cBackbone": ["resnet50_v1c", "resnet101_v1c"],
                              "PSPNetSegmenter": [c.name for c in CHECKPOINTS[2:]]}
    assert len(PSPNetSegmenter.list_presets()) == 12
    with pytest.raises(UserError,
                       match="neither a published checkpoint pspnet_tf knows as a segmenter"):
        PSPNetSegmenter.from_preset("resnet50_v1c")
    with pytest.raises(UserError, match=r"as a backbone \(resnet50_v1c, resnet101_v1c\)"):
        ResNetV1cBackbone.from_preset("pspnet_r50-d8_512x512_20k_voc12aug")


def _tiny_demo_preset(download_server, tmp_path, monkeypatch, seed: int = 5):
    reference = tiny_reference(seed=seed)
    data = Path(save_mmseg(reference, tmp_path / "tiny.pth")).read_bytes()
    url = serve_preset(download_server, monkeypatch, tmp_path, data,
                       "/mmsegmentation/v0.5/pspnet", "pspnet_tiny_demo")
    monkeypatch.setitem(PSPNetSegmenter.presets, "pspnet_tiny_demo", Preset(
        "pspnet_tiny_demo", url, "resnet18_v1c", "demo", scale=(48, 40), **TINY_HEADS))


def test_from_preset_with_num_classes_keeps_backbone_and_ppm_and_starts_a_new_classifier(
        download_server, tmp_path, monkeypatch):
    """Fine-tuning entry: `from_preset(name, num_classes=K, class_names=...)`."""
    from pspnet_tf.models import PSPNetSegmenter as Segmenter

    _tiny_demo_preset(download_server, tmp_path, monkeypatch)
    published = Segmenter.from_preset("pspnet_tiny_demo")
    tuned = Segmenter.from_preset("pspnet_tiny_demo", class_names=["ground", "crack", "hole"],
                                  auxiliary_head=True)
    assert tuned.num_classes == 3 and tuned.class_names == ["ground", "crack", "hole"]
    assert tuned.palette is None and tuned.dataset is None and tuned.auxiliary_head
    assert tuned.preset == "pspnet_tiny_demo" and tuned.scale == (48, 40)
    kept = [layer.name for layer in published.layers
            if layer.weights and layer.name != "conv_seg"]
    assert "bottleneck_conv" in kept and "layer4_1_conv2" in kept
    for name in kept:
        for ours, theirs in zip(tuned.get_layer(name).weights, published.get_layer(name).weights):
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    assert tuned.get_layer("conv_seg").kernel.shape[-1] == 3
    assert tuned.get_layer("aux_conv_seg").kernel.shape[-1] == 3
    outputs = tuned(np.zeros((1, 32, 40, 3), np.float32))
    assert outputs["logits"].shape == (1, 32, 40, 3)
    assert outputs["aux_logits"].shape == (1, 32, 40, 3)
    assert len(download_server.requests) == 1  # the second call read the cache
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        Segmenter.from_preset("pspnet_tiny_demo", num_classes=3, class_names=["a", "b"])


def test_from_preset_without_weights_builds_the_architecture_and_downloads_nothing(
        download_server, tmp_path, monkeypatch):
    from pspnet_tf.models import ResNetV1cBackbone

    _tiny_demo_preset(download_server, tmp_path, monkeypatch)
    segmenter = PSPNetSegmenter.from_preset("pspnet_tiny_demo", load_weights=False)
    assert segmenter.class_names == list(DEMO_CLASS_NAMES) and segmenter.scale == (48, 40)
    assert segmenter.backbone.depth == 18 and not segmenter.auxiliary_head
    backbone = ResNetV1cBackbone.from_preset("resnet50_v1c", load_weights=False,
                                             output_stride=16)
    assert (backbone.depth, backbone.output_stride) == (50, 16)
    assert download_server.requests == []

