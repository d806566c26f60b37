"""VGG-11/13/16/19 with BatchNorm, in the usual CIFAR form (Simonyan & Zisserman 2015 configs
A/B/D/E; the 4096-wide classifier replaced by a linear head on the 512-d features).

Five 2x2 max-pools take 32x32 inputs to 1x1x512. Larger inputs (multiples of 32) are globally
average-pooled so the embedding stays 512-d. With the default head, the parameter counts
match the widely used kuangliu/pytorch-cifar models (9.23M/9.42M/14.73M/20.04M for 10 classes).
"""

from __future__ import annotations

import torch
from torch import nn

from thresher.models.base import Classifier, check_probability, check_square
from thresher.models.registry import register_model

CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}


class VGG(Classifier):
    """conv3x3-BN-ReLU stacks between max-pools, optional hidden FC layer, linear head.

    ``hidden=0`` (default): embed = the 512 pooled conv features. ``hidden=512`` adds one
    FC-ReLU(-dropout) layer, and embed is its output.
    """

    def __init__(self, num_classes: int, in_shape: tuple[int, int, int], config: list[int | str],
                 hidden: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        check_square(in_shape, min_size=32, multiple=32)
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 0:
            raise ValueError(f"hidden must be a non-negative integer (0 = none), got {hidden!r}")
        dropout = check_probability("dropout", dropout)
        layers: list[nn.Module] = []
        c = in_shape[0]
        for v in config:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                c = v
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        if hidden:
            layers += [nn.Linear(c, hidden), nn.ReLU(inplace=True)]
            if dropout:
                layers.append(nn.Dropout(dropout))
            c = hidden
        elif dropout:
            raise ValueError("dropout applies to the hidden layer; set hidden > 0 to use it")
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@register_model("vgg11", "VGG-11 with BatchNorm for 32x32 inputs, 9.2M params")
def vgg11(num_classes: int, in_shape: tuple[int, int, int], *,
          hidden: int = 0, dropout: float = 0.0) -> VGG:
    return VGG(num_classes, in_shape, CONFIGS["vgg11"], hidden, dropout)


@register_model("vgg13", "VGG-13 with BatchNorm for 32x32 inputs, 9.4M params")
def vgg13(num_classes: int, in_shape: tuple[int, int, int], *,
          hidden: int = 0, dropout: float = 0.0) -> VGG:
    return VGG(num_classes, in_shape, CONFIGS["vgg13"], hidden, dropout)


@register_model("vgg16", "VGG-16 with BatchNorm for 32x32 inputs, 14.7M params")
def vgg16(num_classes: int, in_shape: tuple[int, int, int], *,
          hidden: int = 0, dropout: float = 0.0) -> VGG:
    return VGG(num_classes, in_shape, CONFIGS["vgg16"], hidden, dropout)


@register_model("vgg19", "VGG-19 with BatchNorm for 32x32 inputs, 20.0M params")
def vgg19(num_classes: int, in_shape: tuple[int, int, int], *,
          hidden: int = 0, dropout: float = 0.0) -> VGG:
    return VGG(num_classes, in_shape, CONFIGS["vgg19"], hidden, dropout)
