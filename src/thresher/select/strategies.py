"""Acquisition strategies = a score or an embedding + a sampler, by name.

A strategy sees the current model, the unlabelled pool (whose labels are hidden: the pool it
receives carries -1 labels) and an oracle that reveals labels of chosen indices — the only way
a strategy can learn a label, and each call is counted. Every model-based strategy costs one
`predict` pass over the pool.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from thresher.data.dataset import ArrayDataset
from thresher.data.pipeline import Normalize
from thresher.registry import Registry
from thresher.scoring import SCORES, score
from thresher.select.samplers import badge, kcenter_greedy, random_sample, top_k
from thresher.select.sensitivity import sensitivity_sample
from thresher.train.predict import predict


class Oracle:
    """Reveals pool labels on request and counts how many were revealed."""

    def __init__(self, labels: torch.Tensor) -> None:
        self._labels = labels
        self.queried = 0

    def __call__(self, indices: torch.Tensor) -> torch.Tensor:
        self.queried += len(indices)
        return self._labels[indices.to(self._labels.device)]


@dataclass
class Context:
    model: nn.Module
    pool: ArrayDataset  # labels hidden (-1)
    labelled: ArrayDataset
    normalize: Normalize
    oracle: Oracle
    generator: torch.Generator
    clusters: int
    lam: float | str = "cluster"
    z: float = 2.0


@dataclass
class Acquisition:
    indices: torch.Tensor  # distinct indices into the pool
    weights: torch.Tensor | None  # importance weights, when the strategy produces them
    inferences: int  # model forward passes over examples spent on selection
    loss_queries: int  # losses (hence labels) the selection itself evaluated: the centres for
    # coreset, which join the acquired set; 0 for strategies that read only predictions


Strategy = Callable[[Context, int], Acquisition]
STRATEGIES: Registry[Strategy] = Registry("strategy")


def register_strategy(name: str) -> Callable[[Strategy], Strategy]:
    return STRATEGIES.register(name)


def _pool_outputs(ctx: Context, grad_embed: bool = False):
    return predict(ctx.model, ctx.pool, normalize=ctx.normalize, use_labels=False,
                   grad_embed=grad_embed)


@register_strategy("random")
def _random(ctx: Context, budget: int) -> Acquisition:
    return Acquisition(random_sample(len(ctx.pool), budget, ctx.generator), None, 0, 0)


def _uncertainty(name: str) -> Strategy:
    def strategy(ctx: Context, budget: int) -> Acquisition:
        out = _pool_outputs(ctx)
        return Acquisition(top_k(score(name, out), budget), None, len(ctx.pool), 0)
    strategy.__doc__ = f"Top-`budget` pool examples by {name} of the model's prediction."
    return strategy


for _name in SCORES:
    register_strategy(_name)(_uncertainty(_name))


@register_strategy("coreset")
def _coreset(ctx: Context, budget: int) -> Acquisition:
    """Clustering-based sensitivity sampling on the model's penultimate embeddings."""
    out = _pool_outputs(ctx)
    before = ctx.oracle.queried

    def query_loss(indices: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out.logits[indices], ctx.oracle(indices), reduction="none")

    sample = sensitivity_sample(out.embeddings, budget, query_loss,
                                min(ctx.clusters, budget), ctx.generator, ctx.z, ctx.lam)
    return Acquisition(sample.indices, sample.weights, len(ctx.pool),
                       ctx.oracle.queried - before)


@register_strategy("kcenter")
def _kcenter(ctx: Context, budget: int) -> Acquisition:
    out = _pool_outputs(ctx)
    labelled = predict(ctx.model, ctx.labelled, normalize=ctx.normalize, use_labels=False)
    chosen = kcenter_greedy(out.embeddings, budget, labelled.embeddings, ctx.generator)
    return Acquisition(chosen, None, len(ctx.pool) + len(ctx.labelled), 0)


@register_strategy("badge")
def _badge(ctx: Context, budget: int) -> Acquisition:
    out = _pool_outputs(ctx)
    return Acquisition(badge(out.probs, out.embeddings, budget, ctx.generator), None,
                       len(ctx.pool), 0)
