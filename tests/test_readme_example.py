"""README's "Fine-tune a preset on your own images", run as written: the code block is read
from README.md and only its PRESET, DATA and EPOCHS lines are replaced, by a tiny preset
served from 127.0.0.1 (a random-weights R-18 PSPNet written by the PyTorch reference, in
mmseg's layout) and the demo data converted to the folder layout."""

import os
import re
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from pspnet_tf.data.demo import generate_demo_dataset
from pspnet_tf.data.descriptors import DEMO_CLASS_NAMES, DEMO_PALETTE, FOLDER_CLASS_FILE
from pspnet_tf.models import PSPNetSegmenter
from pspnet_tf.models.presets import Preset

pytest.importorskip("torch")
from helpers import TINY_HEADS  # noqa: E402
from preset_server import serve_preset  # noqa: E402
from torch_parity import save_mmseg, tiny_reference  # noqa: E402

README = Path(__file__).resolve().parents[1] / "README.md"
HEADING = "### Fine-tune a preset on your own images"
SETTINGS = ("PRESET", "DATA", "EPOCHS")


def readme_example() -> str:
    """The first python block after HEADING in README.md."""
    text = README.read_text()
    assert text.count(HEADING) == 1
    return re.search(r"```python\n(.*?)```", text.split(HEADING)[1], re.DOTALL).group(1)


def with_settings(code: str, **values: object) -> str:
    """`code` with each `NAME = ...` line of SETTINGS replaced by `NAME = repr(value)`."""
    for name in SETTINGS:
        pattern = re.compile(rf"^{name} = .*$", re.MULTILINE)
        assert len(pattern.findall(code)) == 1, f"README's example must set {name} once"
        code = pattern.sub(f"{name} = {values[name]!r}", code)
    return code


def demo_folder(root: Path, num_train: int, num_val: int) -> Path:
    """The demo data (VOC layout) rewritten in the folder layout: images/<split>/,
    masks/<split>/ and classes.txt with the demo's names and colours."""
    voc = root / "voc"
    generate_demo_dataset(str(voc), num_train=num_train, num_val=num_val)
    folder = root / "my_data"
    for split in ("train", "val"):
        (folder / "images" / split).mkdir(parents=True)
        (folder / "masks" / split).mkdir(parents=True)
        for image_id in (voc / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split():
            shutil.copy(voc / "JPEGImages" / f"{image_id}.jpg", folder / "images" / split)
            shutil.copy(voc / "SegmentationClass" / f"{image_id}.png", folder / "masks" / split)
    (folder / FOLDER_CLASS_FILE).write_text("".join(
        f"{name}\t{','.join(str(int(value)) for value in colour)}\n"
        for name, colour in zip(DEMO_CLASS_NAMES, DEMO_PALETTE)))
    return folder


def test_the_example_reads_only_its_settings_from_the_first_lines():
    code = readme_example()
    assert [line.split(" = ")[0] for line in code.splitlines()[:len(SETTINGS)]] == list(SETTINGS)
    assert "pspnet_tf.PSPNetSegmenter.from_preset(\n    PRESET," in code
    assert 'get_dataset("folder", DATA, "train")' in code and "epochs=EPOCHS" in code


# The shipped default: the demo's first 48 training images, 3 epochs of 12 steps of 4 at
# 64x64 pixels; the slow variant: the whole demo set (docs/python.md has the figures).
@pytest.mark.parametrize("num_train, num_val, epochs, side, threshold", [
    (48, 16, 3, 64, 0.4),
    pytest.param(400, 50, 2, 96, 0.75, marks=pytest.mark.slow)])
def test_the_readme_example_fine_tunes_a_preset_on_a_folder(
        download_server, tmp_path, monkeypatch, capsys, num_train, num_val, epochs, side,
        threshold):
    scale = (side, side)
    data = Path(save_mmseg(tiny_reference(seed=4), tmp_path / "tiny.pth")).read_bytes()
    url = serve_preset(download_server, monkeypatch, tmp_path, data,
                       "/mmsegmentation/v0.5/pspnet", "pspnet_tiny_demo")
    monkeypatch.setitem(PSPNetSegmenter.presets, "pspnet_tiny_demo", Preset(
        "pspnet_tiny_demo", url, "resnet18_v1c", "demo", scale=scale, **TINY_HEADS))
    folder = demo_folder(tmp_path, num_train=num_train, num_val=num_val)
    monkeypatch.chdir(tmp_path)
    keras.utils.set_random_seed(0)

    namespace: dict = {}
    exec(with_settings(readme_example(), PRESET="pspnet_tiny_demo", DATA=str(folder),
                       EPOCHS=epochs), namespace)

    mean_iou = namespace["scores"]["mIoU"]
    assert f"val mIoU {mean_iou:.3f}" in capsys.readouterr().out
    assert mean_iou > threshold
    assert len(download_server.requests) == 1 and os.path.isfile(tmp_path / "mine.keras")
    segmenter = keras.saving.load_model(tmp_path / "mine.keras")
    assert segmenter.class_names == list(DEMO_CLASS_NAMES) and segmenter.scale == scale
    image = namespace["images"][0]
    np.testing.assert_array_equal(segmenter.segment(image), namespace["segmenter"].segment(image))
