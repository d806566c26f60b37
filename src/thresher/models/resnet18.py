"""ResNet-18 as commonly adapted to 32x32 images (He et al. 2016's ImageNet ResNet-18 with a
3x3 stride-1 stem and no max-pool, so small images are not shrunk 4x before the first block).

Four stages of two basic blocks with width*(1, 2, 4, 8) channels, feature maps halved at the
start of stages 2-4, projection shortcuts (option B) where the shape changes, global average
pooling, linear head. At the default width of 64 it has 11,173,962 parameters for 10 classes,
as the widely used kuangliu/pytorch-cifar ResNet18; a small ``width`` keeps the same shape at
a size a CPU can train.
"""

from __future__ import annotations

import torch
from torch import nn

from thresher.models.base import Classifier, check_square, positive_ints
from thresher.models.registry import register_model
from thresher.models.resnet import BasicBlock


class ResNet18(Classifier):
    """CIFAR ResNet-18; embed = the ``8 * width`` globally pooled features."""

    def __init__(self, num_classes: int, in_shape: tuple[int, int, int], width: int = 64
                 ) -> None:
        super().__init__()
        (width,) = positive_ints("width", width)
        check_square(in_shape, min_size=8)  # three halvings leave the last stage at least 1x1
        self.stem = nn.Sequential(nn.Conv2d(in_shape[0], width, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        blocks, c = [], width
        for stage in range(4):
            for i in range(2):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(c, width << stage, stride, shortcut="B"))
                c = width << stage
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x)).mean(dim=(2, 3))


@register_model("resnet18", "CIFAR ResNet-18 (3x3 stem, no max-pool), 11.2M params")
def resnet18(num_classes: int, in_shape: tuple[int, int, int], *,
             width: int = 64) -> ResNet18:
    return ResNet18(num_classes, in_shape, width)
