"""Fully connected classifier: the standard small model of continual-learning benchmarks
(permuted/split MNIST with 2x200 or 2x256 units) and of pool-based active learning."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from thresher.models.base import Classifier, check_probability, positive_ints
from thresher.models.registry import register_model


class MLP(Classifier):
    """Flatten -> [Linear -> ReLU -> Dropout] per width -> head.

    ``widths=()`` is multinomial logistic regression on raw pixels (embed = the input).
    """

    def __init__(self, num_classes: int, in_shape: tuple[int, int, int],
                 widths: Sequence[int] = (128,), dropout: float = 0.0) -> None:
        super().__init__()
        widths = positive_ints("widths", widths, allow_empty=True)
        dropout = check_probability("dropout", dropout)
        layers: list[nn.Module] = [nn.Flatten()]
        d = math.prod(in_shape)
        for w in widths:
            layers += [nn.Linear(d, w), nn.ReLU(inplace=True)]
            if dropout:
                layers.append(nn.Dropout(dropout))
            d = w
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(d, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@register_model("mlp", "fully connected ReLU network on flattened pixels")
def mlp(num_classes: int, in_shape: tuple[int, int, int], *,
        widths: Sequence[int] = (128,), dropout: float = 0.0) -> MLP:
    return MLP(num_classes, in_shape, widths, dropout)
