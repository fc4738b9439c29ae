"""The published checkpoints the model classes load by name (`from_preset`), with their
architecture, dataset and published mIoU.

URLs are open-mmlab's own; each file name ends with the first 8 hex digits of the file's
sha256, which the download checks. $PSPNET_TF_DOWNLOAD_BASE replaces the host part
(https://download.openmmlab.com) of every URL, for a mirror or a local test server.

Loading them (and preset folders) is pspnet_tf.models.preset_loading's job.
"""

import dataclasses
import os
import posixpath
import urllib.parse
from collections.abc import Mapping

from pspnet_tf.download import BASE_ENV, OPENMMLAB
from pspnet_tf.errors import UserError

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
    mmsegmentation checkpoint (add it to `PSPNetSegmenter.presets`).
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
