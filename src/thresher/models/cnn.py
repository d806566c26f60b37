"""Small convolutional classifier that runs on 8x8 digits, 28x28 MNIST and 32x32 CIFAR alike:
cheap enough for the many retrainings that data valuation and selection studies need."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from thresher.models.base import Classifier, check_probability, positive_ints
from thresher.models.registry import register_model


class SimpleCNN(Classifier):
    """[conv3x3 -> ReLU -> maxpool2] per channel count -> flatten -> hidden FC -> head."""

    def __init__(self, num_classes: int, in_shape: tuple[int, int, int],
                 channels: Sequence[int] = (32, 64, 128), hidden: int = 128,
                 dropout: float = 0.0) -> None:
        super().__init__()
        channels = positive_ints("channels", channels)
        (hidden,) = positive_ints("hidden", hidden)
        dropout = check_probability("dropout", dropout)
        c, h, w = in_shape
        k = len(channels)
        if min(h, w) >> k == 0:
            raise ValueError(f"inputs of {h}x{w} are too small for {k} conv/pool stages (each "
                             f"halves the size): need at least {2 ** k}x{2 ** k}, or fewer "
                             f"entries in channels={channels}")
        layers: list[nn.Module] = []
        for out in channels:
            layers += [nn.Conv2d(c, out, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c = out
        flat = c * (h >> k) * (w >> k)
        layers += [nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(inplace=True)]
        if dropout:
            layers.append(nn.Dropout(dropout))
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(hidden, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@register_model("simple_cnn", "3 conv+maxpool stages and a hidden FC layer; any size >= 8x8")
def simple_cnn(num_classes: int, in_shape: tuple[int, int, int], *,
               channels: Sequence[int] = (32, 64, 128), hidden: int = 128,
               dropout: float = 0.0) -> SimpleCNN:
    return SimpleCNN(num_classes, in_shape, channels, hidden, dropout)
