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

    ``widths=()`` is multinomial logistic regression (embed = the input): on float features
    (``in_shape = (D,)``) that is the linear probe of latent-space studies.
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
        self.dropout = dropout
        self.linears = tuple(m for m in self.body if isinstance(m, nn.Linear)) + (self.head,)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def loss_grad(self, x: torch.Tensor, y: torch.Tensor,
                  grads: list[torch.Tensor]) -> torch.Tensor | None:
        """Cross-entropy backward by hand: softmax minus one-hot, through each layer's
        transpose and ReLU mask, each weight gradient one product into its buffer."""
        linears = self.linears
        if self.dropout or len(grads) != 2 * len(linears):
            return None
        with torch.no_grad():
            inputs = [x.flatten(1)]  # inputs[k] feeds linears[k]
            for layer in linears[:-1]:
                inputs.append(torch.addmm(layer.bias, inputs[-1], layer.weight.t()).relu_())
            logp = torch.log_softmax(torch.addmm(self.head.bias, inputs[-1],
                                                 self.head.weight.t()), 1)
            target = logp.gather(1, y[:, None])
            delta = logp.exp_().scatter_(1, y[:, None], target.exp() - 1).div_(len(y))
            for k in range(len(linears) - 1, -1, -1):
                torch.mm(delta.t(), inputs[k], out=grads[2 * k])
                torch.sum(delta, 0, out=grads[2 * k + 1])
                if k:
                    delta = delta.mm(linears[k].weight).mul_(inputs[k] > 0)
        return target.mean().neg()


@register_model("mlp", "fully connected ReLU network on flattened pixels or feature vectors",
                features=True)
def mlp(num_classes: int, in_shape: tuple[int, int, int], *,
        widths: Sequence[int] = (128,), dropout: float = 0.0) -> MLP:
    return MLP(num_classes, in_shape, widths, dropout)
