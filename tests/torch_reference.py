"""A plain-PyTorch PSPNet with mmsegmentation's module names, for parity tests.

Written from docs/architecture.md (ResNetV1c deep stem, contract_dilation, PPM bins 1/2/3/6,
align_corners=False) so its state dict has exactly the keys mmsegmentation checkpoints have.
"""

import torch
import torch.nn.functional as F
from torch import nn

BLOCKS = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
# The input normalisation of docs/recipe.md (RGB), kept here so torch-only processes need no
# TensorFlow.
IMAGE_MEAN = (123.675, 116.28, 103.53)
IMAGE_STD = (58.395, 57.12, 57.375)
LAYOUT = {8: ((1, 2, 1, 1), (1, 1, 2, 4)), 16: ((1, 2, 2, 1), (1, 1, 1, 2))}


class ConvModule(nn.Module):
    """mmcv's ConvModule: conv (no bias) -> BN -> ReLU, keys `conv.*` and `bn.*`."""

    def __init__(self, cin: int, cout: int, kernel: int, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=dilation * (kernel // 2),
                              dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride, dilation, downsample):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation,
                               bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (self.downsample(x) if self.downsample is not None else x))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride, dilation, downsample):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, padding=dilation, dilation=dilation,
                               bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (self.downsample(x) if self.downsample is not None else x))


class ResNetV1c(nn.Module):
    def __init__(self, depth: int, output_stride: int):
        super().__init__()
        block = BasicBlock if depth == 18 else Bottleneck
        self.stem = nn.Sequential(
            nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        strides, dilations = LAYOUT[output_stride]
        for index, (blocks, stride, dilation) in enumerate(
                zip(BLOCKS[depth], strides, dilations), start=1):
            planes = 64 * 2 ** (index - 1)
            layers = []
            for number in range(blocks):
                block_stride = stride if number == 0 else 1
                downsample = None
                if number == 0 and (block_stride != 1 or cin != planes * block.expansion):
                    downsample = nn.Sequential(
                        nn.Conv2d(cin, planes * block.expansion, 1, block_stride, bias=False),
                        nn.BatchNorm2d(planes * block.expansion))
                block_dilation = max(dilation // 2, 1) if number == 0 else dilation
                layers.append(block(cin, planes, block_stride, block_dilation, downsample))
                cin = planes * block.expansion
            setattr(self, f"layer{index}", nn.Sequential(*layers))
        self.out_channels = cin

    def forward(self, x):
        x = self.maxpool(self.stem(x))
        outs = []
        for index in range(1, 5):
            x = getattr(self, f"layer{index}")(x)
            outs.append(x)
        return outs


class PSPHead(nn.Module):
    def __init__(self, cin: int, channels: int, num_classes: int, dropout: float = 0.1):
        super().__init__()
        self.psp_modules = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(bins), ConvModule(cin, channels, 1))
            for bins in (1, 2, 3, 6))
        self.bottleneck = ConvModule(cin + 4 * channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x):
        branches = [x] + [F.interpolate(module(x), x.shape[2:], mode="bilinear",
                                        align_corners=False) for module in self.psp_modules]
        return self.conv_seg(self.dropout(self.bottleneck(torch.cat(branches, 1))))


class FCNHead(nn.Module):
    def __init__(self, cin: int, channels: int, num_classes: int, dropout: float = 0.1):
        super().__init__()
        self.convs = nn.Sequential(ConvModule(cin, channels, 3))
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x):
        return self.conv_seg(self.dropout(self.convs(x)))


class PSPNet(nn.Module):
    """forward returns (logits, aux_logits) at the input size; parity tests use eval mode,
    benchmarks/train_step.py trains it (Dropout2d before each classifier, as mmseg)."""

    def __init__(self, depth: int, output_stride: int, num_classes: int,
                 psp_channels: int = 512, aux_channels: int = 256, aux: bool = True):
        super().__init__()
        self.backbone = ResNetV1c(depth, output_stride)
        stage4 = self.backbone.out_channels
        self.decode_head = PSPHead(stage4, psp_channels, num_classes)
        self.auxiliary_head = FCNHead(stage4 // 2, aux_channels, num_classes) if aux else None

    def forward(self, x):
        *_, stage3, stage4 = self.backbone(x)
        size = x.shape[2:]
        logits = F.interpolate(self.decode_head(stage4), size, mode="bilinear",
                               align_corners=False)
        if self.auxiliary_head is None:
            return logits, None
        aux = F.interpolate(self.auxiliary_head(stage3), size, mode="bilinear",
                            align_corners=False)
        return logits, aux


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and random BatchNorm statistics that keep activations in range."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator)
                                    * (1.0 / fan_in) ** 0.5)
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
            elif isinstance(module, nn.BatchNorm2d):
                shape = module.weight.shape
                module.weight.copy_(torch.rand(shape, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(shape, generator=generator) * 0.1)
                module.running_mean.copy_(torch.randn(shape, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(shape, generator=generator) + 0.5)
                module.num_batches_tracked.fill_(1000)
    return model.eval()
