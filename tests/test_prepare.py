"""`prepare voc_aug` and `prepare cityscapes` on tiny copies of the downloaded layouts."""

import os

import numpy as np
import pytest
from PIL import Image
from helpers import run_command
from scipy import io as scipy_io

from pspnet_tf.data.datasets import get_dataset
from pspnet_tf.data.descriptors import voc_palette
from pspnet_tf.data.preparation import prepare_cityscapes, prepare_voc_aug, read_sbd_mat
from pspnet_tf.errors import UserError
HEIGHT, WIDTH = 6, 8


def _label(seed: int) -> np.ndarray:
    label = np.random.default_rng(seed).integers(0, 21, (HEIGHT, WIDTH)).astype(np.uint8)
    label[0, 0] = 255
    return label


def _write_sbd_mat(path, segmentation: np.ndarray) -> None:
    """SBD's cls/*.mat form: a GTcls struct with Segmentation, Boundaries, CategoriesPresent."""
    scipy_io.savemat(str(path), {"GTcls": {
        "Segmentation": segmentation, "Boundaries": np.zeros((20, 1), object),
        "CategoriesPresent": np.unique(segmentation)[:, None].astype(np.uint8)}})


def _voc_and_sbd(tmp_path, voc_train, voc_val, sbd_train, sbd_val):
    """VOC2012 with JPEGs for every id and labels for VOC ids; SBD with a .mat for SBD ids."""
    voc, sbd = tmp_path / "VOC2012", tmp_path / "benchmark_RELEASE" / "dataset"
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "JPEGImages").mkdir()
    (voc / "SegmentationClass").mkdir()
    (sbd / "cls").mkdir(parents=True)
    labels = {}
    for seed, image_id in enumerate(sorted({*voc_train, *voc_val, *sbd_train, *sbd_val})):
        Image.new("RGB", (WIDTH, HEIGHT)).save(voc / "JPEGImages" / f"{image_id}.jpg")
        labels[image_id] = {"voc": _label(seed), "sbd": _label(seed + 100)}
        if image_id in voc_train or image_id in voc_val:
            png = Image.fromarray(labels[image_id]["voc"])
            png.putpalette(voc_palette(256).tobytes())
            png.save(voc / "SegmentationClass" / f"{image_id}.png")
        if image_id in sbd_train or image_id in sbd_val:
            _write_sbd_mat(sbd / "cls" / f"{image_id}.mat", labels[image_id]["sbd"])
    for folder, name, ids in ((voc / "ImageSets" / "Segmentation", "train", voc_train),
                              (voc / "ImageSets" / "Segmentation", "val", voc_val),
                              (sbd, "train", sbd_train), (sbd, "val", sbd_val)):
        (folder / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    return voc, tmp_path / "benchmark_RELEASE", labels


def _snapshot(folder) -> dict[str, bytes]:
    return {str(path): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def test_read_sbd_mat_returns_the_segmentation_field(tmp_path):
    segmentation = _label(3)
    _write_sbd_mat(tmp_path / "a.mat", segmentation)
    np.testing.assert_array_equal(read_sbd_mat(str(tmp_path / "a.mat")), segmentation)


def test_voc_aug_builds_the_trainaug_split_and_labels(tmp_path):
    voc, sbd, labels = _voc_and_sbd(tmp_path, voc_train=["v1", "both"], voc_val=["val1", "val2"],
                                    sbd_train=["s1", "both", "val1"], sbd_val=["s2"])
    originals = _snapshot(voc) | _snapshot(sbd)
    counts = prepare_voc_aug(str(voc), str(sbd))
    trainaug = (voc / "ImageSets" / "Segmentation" / "trainaug.txt").read_text().split()
    assert trainaug == ["both", "s1", "s2", "v1"]  # VOC val ids never enter trainaug
    assert counts == {"images": 4, "written": 4, "kept": 0}
    dataset = get_dataset("voc", str(voc), "trainaug")
    for index, image_id in enumerate(trainaug):
        source = "voc" if image_id in ("v1", "both") else "sbd"
        np.testing.assert_array_equal(dataset.load(index)[1], labels[image_id][source])
    with Image.open(voc / "SegmentationClassAug" / "s1.png") as written:
        assert written.mode == "P"
        assert written.getpalette()[3:6] == [128, 0, 0]  # VOC colour of class 1
    after = _snapshot(voc) | _snapshot(sbd)
    assert all(after[path] == data for path, data in originals.items())  # originals untouched


def test_voc_aug_is_repeatable_and_keeps_written_files(tmp_path):
    voc, sbd, _ = _voc_and_sbd(tmp_path, ["v1"], ["val1"], ["s1"], [])
    prepare_voc_aug(str(voc), str(sbd / "dataset"))  # the dataset/ folder is accepted too
    before = _snapshot(voc)
    assert prepare_voc_aug(str(voc), str(sbd)) == {"images": 2, "written": 0, "kept": 2}
    assert _snapshot(voc) == before


def test_voc_aug_never_overwrites_a_different_split_file(tmp_path):
    voc, sbd, _ = _voc_and_sbd(tmp_path, ["v1"], ["val1"], ["s1"], [])
    split = voc / "ImageSets" / "Segmentation" / "trainaug.txt"
    split.write_text("mine\n")
    with pytest.raises(UserError, match="trainaug.txt exists"):
        prepare_voc_aug(str(voc), str(sbd))
    assert split.read_text() == "mine\n"


def test_voc_aug_names_missing_sbd_labels(tmp_path):
    voc, sbd, _ = _voc_and_sbd(tmp_path, ["v1"], ["val1"], ["s1", "s2"], [])
    os.remove(sbd / "dataset" / "cls" / "s2.mat")
    with pytest.raises(UserError, match=r"1 trainaug images/labels are missing.*s2\.mat"):
        prepare_voc_aug(str(voc), str(sbd))


def test_cityscapes_writes_train_ids_that_the_reader_prefers(tmp_path):
    ids = np.array([[7, 8, 0, 33], [26, 255, 1, 24]], np.uint8)
    image_dir, label_dir = (tmp_path / "leftImg8bit" / "val" / "ulm",
                            tmp_path / "gtFine" / "val" / "ulm")
    image_dir.mkdir(parents=True)
    label_dir.mkdir(parents=True)
    Image.new("RGB", (4, 2)).save(image_dir / "ulm_000000_000019_leftImg8bit.png")
    Image.fromarray(ids).save(label_dir / "ulm_000000_000019_gtFine_labelIds.png")
    expected = np.array([[0, 1, 255, 18], [13, 255, 255, 11]], np.uint8)
    before = get_dataset("cityscapes", str(tmp_path), "val")
    assert prepare_cityscapes(str(tmp_path)) == {"images": 1, "written": 1, "kept": 0}
    after = get_dataset("cityscapes", str(tmp_path), "val")
    assert after.samples[0].label_path.endswith("_gtFine_labelTrainIds.png")
    np.testing.assert_array_equal(np.array(Image.open(after.samples[0].label_path)), expected)
    np.testing.assert_array_equal(after.load(0)[1], expected)
    np.testing.assert_array_equal(before.load(0)[1], expected)


def test_prepare_command_line(tmp_path):
    voc, sbd, _ = _voc_and_sbd(tmp_path, ["v1"], ["val1"], ["s1"], [])
    done = run_command("pspnet-prepare", "voc_aug", f"--voc_root={voc}", f"--sbd_root={sbd}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "voc_aug: 2 images, 2 label files written" in done.stdout
    shards = tmp_path / "shards"
    done = run_command("pspnet-prepare", "tfrecord", "--dataset=voc", f"--data_root={voc}",
                       "--splits=trainaug,val", f"--output={shards}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(os.listdir(shards)) == [
        "trainaug-00000-of-00001.tfrecord", "trainaug.json", "val-00000-of-00001.tfrecord",
        "val.json"]
    missing = run_command("pspnet-prepare", "voc_aug", f"--voc_root={voc}")
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1] == (
        "error: voc_aug needs --sbd_root; see pspnet-prepare --help")
