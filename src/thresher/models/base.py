"""The seam every Thresher classifier satisfies, plus the argument checks models share.

Scoring, selection and continual-learning code never look inside a model: they call
``forward(x) -> logits``, ``embed(x) -> [B, D] features`` and use ``model.head`` (an
``nn.Linear``) for last-layer gradients. Keeping ``forward == head(embed)`` exact is what lets
them compute logits from cached embeddings instead of re-running the network.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable

import torch
from torch import nn


class Classifier(nn.Module):
    """Base class: subclasses set ``self.head`` (an ``nn.Linear``) and implement `embed`."""

    head: nn.Linear

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features, flat ``[B, embed_dim]``: the input to ``head``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))

    def loss_grad(self, x: torch.Tensor, y: torch.Tensor,
                  grads: list[torch.Tensor]) -> torch.Tensor | None:
        """Mean cross-entropy of ``(x, y)``, its gradient written into ``grads`` (one tensor per
        parameter, in ``parameters()`` order); None where there is no closed form and autograd
        must do it. Worth having where a run takes thousands of tiny steps, whose time autograd's
        fixed cost per call would dominate (continual streams of batch 10)."""
        return None

    @property
    def embed_dim(self) -> int:
        return self.head.in_features

    @property
    def num_classes(self) -> int:
        return self.head.out_features


class WrappedClassifier(Classifier):
    """Any network whose final operation is an ``nn.Linear`` (e.g. a torchvision model), with
    that layer replaced by a fresh ``head`` of ``num_classes`` outputs."""

    def __init__(self, network: nn.Module, num_classes: int) -> None:
        super().__init__()
        linears = [name for name, m in network.named_modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError(f"{type(network).__name__} has no nn.Linear layer to use as head")
        parent, _, leaf = linears[-1].rpartition(".")
        last = network.get_submodule(linears[-1])
        setattr(network.get_submodule(parent), leaf, nn.Identity())
        self.network = network
        self.head = nn.Linear(last.in_features, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.network(x), 1)


def positive_ints(option: str, values: int | Iterable[int], allow_empty: bool = False
                  ) -> tuple[int, ...]:
    """``values`` as a tuple of positive ints (YAML gives lists), or a ValueError naming it."""
    items = tuple(values) if isinstance(values, Iterable) else (values,)
    if not items and not allow_empty:
        raise ValueError(f"{option} must not be empty")
    for v in items:
        if isinstance(v, bool) or not hasattr(type(v), "__index__") or operator.index(v) <= 0:
            raise ValueError(f"{option} must be positive integers, got {values!r}")
    return tuple(operator.index(v) for v in items)


def check_probability(option: str, p: float) -> float:
    """A dropout rate in [0, 1)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{option} must be in [0, 1), got {p!r}")
    return float(p)


def check_square(in_shape: tuple[int, int, int], min_size: int, multiple: int = 1) -> int:
    """Side length of a square input, for architectures defined only on square images.

    A non-square ``in_shape`` is usually a layout mistake (``(H, W, C)`` passed as
    ``(C, H, W)``), so it is rejected rather than silently producing odd feature maps.
    """
    _, h, w = in_shape
    if h != w:
        raise ValueError(f"needs square inputs, got in_shape {tuple(in_shape)} "
                         "(expected (C, H, W))")
    if h < min_size or h % multiple:
        need = f"of at least {min_size}x{min_size}"
        if multiple > 1:
            need += f" with a side divisible by {multiple}"
        raise ValueError(f"needs inputs {need}, got {h}x{w} (in_shape {tuple(in_shape)})")
    return h
