"""CIFAR ResNets of He et al. 2016 ("Deep Residual Learning", Section 4.2).

Three stages of n basic blocks with 16/32/64 channels (depth 6n+2), feature maps halved at the
start of stages 2 and 3, global average pooling, linear head. Shortcut option "A" (the paper's
CIFAR choice) subsamples and zero-pads channels, so it adds no parameters: ResNet-20/32/44/56/110
have 0.27M/0.46M/0.66M/0.85M/1.7M parameters as in the paper's Table 6.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from thresher.models.base import Classifier, check_square
from thresher.models.registry import register_model

SHORTCUTS = ("A", "B")


class PadShortcut(nn.Module):
    """Option A: identity on a strided subsample, with the extra channels zero-filled."""

    def __init__(self, extra_channels: int, stride: int) -> None:
        super().__init__()
        self.extra, self.stride = extra_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus shortcut, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = (PadShortcut(c_out - c_in, stride) if shortcut == "A" else
                             nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                           nn.BatchNorm2d(c_out)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(Classifier):
    """ResNet-(6n+2) for small square images; embed = the 64-d globally pooled features."""

    def __init__(self, num_classes: int, in_shape: tuple[int, int, int], depth: int,
                 shortcut: str = "A") -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, got {depth}")
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
        check_square(in_shape, min_size=16)
        n = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(in_shape[0], 16, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        blocks, c = [], 16
        for stage, width in enumerate((16, 32, 64)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(c, width, stride, shortcut))
                c = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x)).mean(dim=(2, 3))


@register_model("resnet20", "CIFAR ResNet-20 (He et al. 2016), 0.27M params")
def resnet20(num_classes: int, in_shape: tuple[int, int, int], *,
             shortcut: str = "A") -> CifarResNet:
    return CifarResNet(num_classes, in_shape, 20, shortcut)


@register_model("resnet32", "CIFAR ResNet-32 (He et al. 2016), 0.46M params")
def resnet32(num_classes: int, in_shape: tuple[int, int, int], *,
             shortcut: str = "A") -> CifarResNet:
    return CifarResNet(num_classes, in_shape, 32, shortcut)


@register_model("resnet44", "CIFAR ResNet-44 (He et al. 2016), 0.66M params")
def resnet44(num_classes: int, in_shape: tuple[int, int, int], *,
             shortcut: str = "A") -> CifarResNet:
    return CifarResNet(num_classes, in_shape, 44, shortcut)


@register_model("resnet56", "CIFAR ResNet-56 (He et al. 2016), 0.85M params")
def resnet56(num_classes: int, in_shape: tuple[int, int, int], *,
             shortcut: str = "A") -> CifarResNet:
    return CifarResNet(num_classes, in_shape, 56, shortcut)


@register_model("resnet110", "CIFAR ResNet-110 (He et al. 2016), 1.7M params")
def resnet110(num_classes: int, in_shape: tuple[int, int, int], *,
              shortcut: str = "A") -> CifarResNet:
    return CifarResNet(num_classes, in_shape, 110, shortcut)
