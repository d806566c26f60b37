"""Uncertainty and difficulty scores of predictions.

All functions take probability rows ``[N, K]`` (plus embeddings or targets where needed) and
return one float per example, higher = more uncertain / harder.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from thresher.registry import Registry
from thresher.train.predict import Outputs


def margin(probs: torch.Tensor) -> torch.Tensor:
    """Negative gap between the two largest probabilities (a small gap scores high)."""
    top2 = probs.topk(2, dim=1).values
    return -(top2[:, 0] - top2[:, 1])


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in nats; 0 * log 0 is taken as 0."""
    return -(probs * probs.clamp_min(1e-30).log()).sum(1)


def least_confidence(probs: torch.Tensor) -> torch.Tensor:
    """One minus the largest probability."""
    return 1.0 - probs.max(1).values


def el2n(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Error L2 norm ||p - onehot(y)|| (Paul et al. 2021)."""
    return (probs - F.one_hot(targets, probs.shape[1]).to(probs.dtype)).norm(dim=1)


def grad_norm(probs: torch.Tensor, embeddings: torch.Tensor, targets: torch.Tensor,
              bias: bool = True) -> torch.Tensor:
    """Norm of the cross-entropy gradient w.r.t. the head's weights (and bias, if it has one),
    in closed form.

    dL/dW = r e^T and dL/db = r with r = p - onehot(y), so the norm is
    ||r|| * sqrt(||e||^2 + 1), or ||r|| * ||e|| for a bias-free head — no per-example
    backward pass.
    """
    return el2n(probs, targets) * (embeddings.square().sum(1) + float(bias)).sqrt()


# Label-free scores usable on an unlabelled pool, by name.
SCORES: Registry[Callable[[torch.Tensor], torch.Tensor]] = Registry("score")
for _fn in (margin, entropy, least_confidence):
    SCORES.register(_fn.__name__, _fn)


def score(name: str, outputs: Outputs) -> torch.Tensor:
    """The label-free score ``name`` of every row of ``outputs``."""
    return SCORES[name](outputs.probs)
