"""Preset folders: save_to_preset writes keras-hub's layout, from_preset(folder) gives the
same model back, hf:// and kaggle:// handles load through the hubs' clients (offline, from
their caches), and upload_preset hands the folder to them."""

import json
import os

import numpy as np
import pytest
from helpers import randomise, tiny_model

from pspnet_tf import PSPNetPreprocessor, PSPNetSegmenter, ResNetV1cBackbone, upload_preset
from pspnet_tf.errors import UserError

FILES = ["config.json", "metadata.json", "model.weights.h5", "preprocessor.json", "task.json",
         "task.weights.h5"]


def _segmenter(**kwargs) -> PSPNetSegmenter:
    model = tiny_model(3, class_names=["sky", "road", "car"], palette=[[0, 0, 255],
                       [128, 64, 128], [0, 0, 142]], scale=(48, 40),
                       preprocessor=PSPNetPreprocessor((48, 40), name="preprocessor"), **kwargs)
    randomise(model, seed=4)
    return model


def _pixels(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (2, 37, 53, 3), dtype=np.uint8)


def test_a_segmenter_round_trips_through_its_preset_folder(tmp_path):
    model = _segmenter()
    model.save_to_preset(str(tmp_path / "mine"))
    assert sorted(os.listdir(tmp_path / "mine")) == FILES
    config = json.loads((tmp_path / "mine" / "config.json").read_text())
    assert config["registered_name"] == "pspnet_tf>ResNetV1cBackbone"
    task = json.loads((tmp_path / "mine" / "task.json").read_text())
    assert task["registered_name"] == "pspnet_tf>PSPNetSegmenter"
    assert "compile_config" not in json.dumps(task) and "build_config" not in json.dumps(task)
    metadata = json.loads((tmp_path / "mine" / "metadata.json").read_text())
    assert metadata["parameter_count"] == model.backbone.count_params()
    loaded = PSPNetSegmenter.from_preset(str(tmp_path / "mine"))
    assert loaded.get_config() == model.get_config()
    assert loaded.class_names == ["sky", "road", "car"] and loaded.scale == (48, 40)
    np.testing.assert_array_equal(loaded.predict(_pixels(), verbose=0),
                                  model.predict(_pixels(), verbose=0))


def test_the_heads_file_holds_no_backbone_weights(tmp_path):
    import h5py

    _segmenter().save_to_preset(str(tmp_path / "mine"))
    with h5py.File(tmp_path / "mine" / "task.weights.h5") as handle:
        stored = []
        handle.visititems(lambda name, item: stored.append(name)
                          if isinstance(item, h5py.Dataset) else None)
    assert stored and not any("stem_" in name or "layer1_" in name for name in stored)


def test_a_folder_fine_tunes_to_new_classes_and_gives_its_backbone(tmp_path):
    model = _segmenter(training_heads=True)
    model.save_to_preset(str(tmp_path / "mine"))
    tuned = PSPNetSegmenter.from_preset(str(tmp_path / "mine"), class_names=["a", "b"])
    assert tuned.num_classes == 2 and tuned.auxiliary_head and tuned.dataset is None
    kept = tuned.get_layer("bottleneck_conv").get_weights()[0]
    np.testing.assert_array_equal(kept, model.get_layer("bottleneck_conv").get_weights()[0])
    backbone = ResNetV1cBackbone.from_preset(str(tmp_path / "mine"), output_stride=16)
    assert backbone.output_stride == 16
    np.testing.assert_array_equal(backbone.get_layer("stem_0").get_weights()[0],
                                  model.backbone.get_layer("stem_0").get_weights()[0])
    empty = PSPNetSegmenter.from_preset(str(tmp_path / "mine"), load_weights=False)
    assert empty.get_config() == model.get_config()
    with pytest.raises(UserError, match="holds a pspnet_tf>ResNetV1cBackbone, not a "
                                        "PSPNetSegmenter"):
        backbone.save_to_preset(str(tmp_path / "backbone"))
        PSPNetSegmenter.from_preset(str(tmp_path / "backbone"))


def test_an_existing_folder_is_never_overwritten_and_a_wrong_one_is_one_line(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="taken exists and is not an empty folder"):
        _segmenter().save_to_preset(str(tmp_path / "taken"))
    assert os.listdir(tmp_path / "taken") == ["notes.txt"]
    assert sorted(os.listdir(tmp_path)) == ["taken"]  # no temporary left
    with pytest.raises(UserError, match="holds no config.json: pass a folder written by "
                                        "save_to_preset"):
        PSPNetSegmenter.from_preset(str(tmp_path / "taken"))


def _hf_cache(root, repo: str, folder) -> None:
    """huggingface_hub's cache layout, as a download leaves it."""
    commit = "0" * 40
    base = root / f"models--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(commit)
    snapshot = base / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in os.listdir(folder):
        (snapshot / name).write_bytes((folder / name).read_bytes())


def test_hf_and_kaggle_handles_load_from_the_clients_caches_offline(tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    pytest.importorskip("kagglehub")
    model = _segmenter()
    model.save_to_preset(str(tmp_path / "mine"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    _hf_cache(tmp_path / "hf", "someone/pspnet-mine", tmp_path / "mine")
    loaded = PSPNetSegmenter.from_preset("hf://someone/pspnet-mine")
    np.testing.assert_array_equal(loaded.predict(_pixels(1), verbose=0),
                                  model.predict(_pixels(1), verbose=0))

    cache = tmp_path / "kaggle"
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(cache))
    version = cache / "models" / "someone" / "pspnet" / "keras" / "mine" / "1"
    version.parent.mkdir(parents=True)
    os.rename(tmp_path / "mine", version)
    (version.parent / "1.complete").write_text("")
    loaded = PSPNetSegmenter.from_preset("kaggle://someone/pspnet/keras/mine/1")
    np.testing.assert_array_equal(loaded.predict(_pixels(2), verbose=0),
                                  model.predict(_pixels(2), verbose=0))
    with pytest.raises(UserError, match="cannot download hf://someone/absent"):
        PSPNetSegmenter.from_preset("hf://someone/absent")
    with pytest.raises(UserError, match="not a hub handle of the form hf://owner/name"):
        PSPNetSegmenter.from_preset("hf://only-a-name")


def test_upload_preset_hands_the_folder_to_the_hub_clients(tmp_path, monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    kagglehub = pytest.importorskip("kagglehub")
    _segmenter().save_to_preset(str(tmp_path / "mine"))
    calls = []

    class Repo:
        repo_id = "someone/pspnet-mine"

    monkeypatch.setattr(huggingface_hub, "create_repo",
                        lambda repo_id, exist_ok: calls.append(("create", repo_id)) or Repo())
    monkeypatch.setattr(huggingface_hub, "upload_folder",
                        lambda repo_id, folder_path: calls.append(("hf", repo_id, folder_path)))
    monkeypatch.setattr(kagglehub, "model_upload",
                        lambda handle, folder: calls.append(("kaggle", handle, folder)))
    upload_preset("hf://someone/pspnet-mine", str(tmp_path / "mine"))
    upload_preset("kaggle://someone/pspnet/keras/mine", str(tmp_path / "mine"))
    assert calls == [("create", "someone/pspnet-mine"),
                     ("hf", "someone/pspnet-mine", str(tmp_path / "mine")),
                     ("kaggle", "someone/pspnet/keras/mine", str(tmp_path / "mine"))]
    with pytest.raises(UserError, match="holds no config.json"):
        upload_preset("hf://someone/x", str(tmp_path))


def test_keras_hubs_own_loader_reads_a_pspnet_tf_folder(tmp_path):
    """Where keras-hub is installed (it is no dependency): its KerasPresetLoader builds the
    same segmenter from the folder; its class methods refuse classes not its own."""
    keras_hub = pytest.importorskip("keras_hub")
    from keras_hub.src.utils.preset_utils import get_preset_loader

    model = _segmenter()
    model.save_to_preset(str(tmp_path / "mine"))
    loader = get_preset_loader(str(tmp_path / "mine"))
    assert loader.check_backbone_class() is ResNetV1cBackbone
    loaded = loader.load_task(PSPNetSegmenter, load_weights=True, load_task_weights=True)
    np.testing.assert_array_equal(loaded.predict(_pixels(3), verbose=0),
                                  model.predict(_pixels(3), verbose=0))
    with pytest.raises(ValueError, match="not a subclass of calling class `Backbone`"):
        keras_hub.models.Backbone.from_preset(str(tmp_path / "mine"))
