"""The published checkpoints the model classes load by name (`from_preset`), with their
architecture, dataset and published mIoU.

URLs are open-mmlab's own; each file name ends with the first 8 hex digits of the file's
sha256, which the download checks. $PSPNET_TF_DOWNLOAD_BASE replaces the host part
(https://download.openmmlab.com) of every URL, for a mirror or a local test server.

Downloading and converting a checkpoint is `pspnet_tf.convert`'s job, a layer above the
models: it installs itself here as the preset loader (`set_preset_loader`) when imported,
which `pspnet_tf.PSPNetSegmenter` and `pspnet_tf.ResNetV1cBackbone` do.
"""

import dataclasses
import os
import posixpath
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import keras

from pspnet_tf.errors import UserError

OPENMMLAB = "https://download.openmmlab.com"
BASE_ENV = "PSPNET_TF_DOWNLOAD_BASE"
_MMSEG = "/mmsegmentation/v0.5/pspnet"
_SCALES = {"voc": (2048, 512), "ade20k": (2048, 512), "cityscapes": (2048, 1024)}
_DATA_ROOTS = {"voc": "data/VOCdevkit/VOC2012", "ade20k": "data/ADEChallengeData2016",
               "cityscapes": "data/cityscapes"}


@dataclasses.dataclass(frozen=True)
class Preset:
    """A downloadable checkpoint and the model it fills.

    `dataset` is None for an ImageNet backbone (a `ResNetV1cBackbone` preset, also usable as
    train.py --pretrained); a full PSPNet (a `PSPNetSegmenter` preset) names its dataset,
    whose classes the model has and carries (names and palette; a `folder` dataset reads
    them from `data_root`), the test `scale`, the conventional `data_root`, and its `miou`
    as published (single-scale val, percent). Build one yourself to load your own
    mmsegmentation checkpoint (`pspnet_tf.convert.from_pretrained`).
    """

    name: str
    url: str
    backbone: str
    dataset: str | None = None
    scale: tuple[int, int] = (2048, 512)
    data_root: str = ""
    miou: float | None = None
    output_stride: int = 8
    psp_channels: int = 512
    aux_channels: int = 256

    @property
    def depth(self) -> int:
        """The backbone's depth: "resnet50_v1c" -> 50."""
        return int(self.backbone[len("resnet"):].split("_")[0])

    @property
    def file_name(self) -> str:
        return posixpath.basename(urllib.parse.urlparse(self.url).path)

    def resolved_url(self) -> str:
        """`url`, with open-mmlab's host replaced by $PSPNET_TF_DOWNLOAD_BASE when set."""
        base = os.environ.get(BASE_ENV)
        if base and self.url.startswith(OPENMMLAB + "/"):
            return base.rstrip("/") + self.url[len(OPENMMLAB):]
        return self.url


def _backbone(depth: int, digest: str) -> Preset:
    name = f"resnet{depth}_v1c"
    return Preset(name, f"{OPENMMLAB}/pretrain/third_party/{name}-{digest}.pth", backbone=name)


def _pspnet(depth: int, crop: str, iterations: str, dataset: str, stamp: str,
            miou: float) -> Preset:
    suffix = {"voc": "voc12aug"}.get(dataset, dataset)
    name = f"pspnet_r{depth}-d8_{crop}_{iterations}_{suffix}"
    return Preset(name, f"{OPENMMLAB}{_MMSEG}/{name}/{name}_{stamp}.pth",
                  backbone=f"resnet{depth}_v1c", dataset=dataset, scale=_SCALES[dataset],
                  data_root=_DATA_ROOTS[dataset], miou=miou)


PRESETS: tuple[Preset, ...] = (
    _backbone(50, "2cccc1ad"),
    _backbone(101, "e67eebb6"),
    _pspnet(50, "512x512", "20k", "voc", "20200617_101958-ed5dfbd9", 76.78),
    _pspnet(50, "512x512", "40k", "voc", "20200613_161222-ae9c1b8c", 77.29),
    _pspnet(101, "512x512", "20k", "voc", "20200617_102003-4aef3c9a", 78.47),
    _pspnet(101, "512x512", "40k", "voc", "20200613_161222-bc933b18", 78.52),
    _pspnet(50, "512x512", "80k", "ade20k", "20200615_014128-15a8b914", 41.13),
    _pspnet(50, "512x512", "160k", "ade20k", "20200615_184358-1890b0bd", 42.48),
    _pspnet(101, "512x512", "80k", "ade20k", "20200614_031423-b6e782f0", 43.57),
    _pspnet(101, "512x512", "160k", "ade20k", "20200615_100650-967c316f", 44.39),
    _pspnet(50, "512x1024", "40k", "cityscapes", "20200605_003338-2966598c", 77.85),
    _pspnet(50, "512x1024", "80k", "cityscapes", "20200606_112131-2376f12b", 78.55),
    _pspnet(101, "512x1024", "40k", "cityscapes", "20200604_232751-467e7cf4", 78.34),
    _pspnet(101, "512x1024", "80k", "cityscapes", "20200606_112211-e1e1100f", 79.76),
)
ALL_PRESETS = {preset.name: preset for preset in PRESETS}
BACKBONE_PRESETS = {name: preset for name, preset in ALL_PRESETS.items() if preset.dataset is None}
SEGMENTER_PRESETS = {name: preset for name, preset in ALL_PRESETS.items()
                     if preset.dataset is not None}


def find_preset(name: str, presets: Mapping[str, Preset] = ALL_PRESETS,
                hint: str = "") -> Preset:
    """The preset called `name` in `presets` (UserError listing their names otherwise)."""
    if name not in presets:
        raise UserError(f"{name!r} is not a published checkpoint pspnet_tf knows{hint}; choose "
                        f"one of {', '.join(presets)}")
    return presets[name]


# (preset, cache_dir, model to fill) -> the model with the preset's weights; installed by
# pspnet_tf.convert.
PresetLoader = Callable[[Preset, str | None, keras.Model], keras.Model]
_LOADER: list[PresetLoader] = []


def set_preset_loader(loader: PresetLoader) -> None:
    """Installs the function that downloads and converts presets (pspnet_tf.convert's)."""
    _LOADER[:] = [loader]


def load_preset(preset: Preset, cache_dir: str | None, model: keras.Model) -> keras.Model:
    """`model` (a ResNetV1cBackbone, or a PSPNetSegmenter of the preset's architecture) with
    `preset`'s weights; a segmenter comes back as the cached inference model."""
    if not _LOADER:
        raise RuntimeError("loading presets needs pspnet_tf.convert: use pspnet_tf.PSPNetSegmenter "
                           "(or import pspnet_tf.convert.hub once)")
    return _LOADER[0](preset, cache_dir, model)


class PresetMixin:
    """`list_presets` and `from_preset`, shared by the model classes: each names its
    `presets` and `preset_role`, and builds the architecture of a preset record
    (`_from_preset_record`)."""

    presets: dict[str, Preset] = {}
    preset_role = ""

    @classmethod
    def list_presets(cls) -> list[str]:
        """The names `from_preset` accepts."""
        return list(cls.presets)

    @classmethod
    def from_preset(cls, preset: str, load_weights: bool = True, cache_dir: str | None = None,
                    **kwargs: Any) -> keras.Model:
        """The model of preset `preset` (`list_presets()`), with its published weights unless
        `load_weights=False` (the architecture only, nothing downloaded). The weights are
        downloaded once and converted (`pspnet_tf.convert`); `cache_dir` defaults to
        $PSPNET_TF_CACHE, else $KERAS_HOME/pspnet_tf or ~/.keras/pspnet_tf. `kwargs` are
        the class's own options (see its `_from_preset_record`)."""
        record = find_preset(preset, cls.presets, f" as a {cls.preset_role}")
        return cls._from_preset_record(record, load_weights, cache_dir, **kwargs)

    @classmethod
    def _from_preset_record(cls, preset: Preset, load_weights: bool, cache_dir: str | None,
                            **kwargs: Any) -> keras.Model:
        raise NotImplementedError
