"""Samplers: (scores or embeddings, budget, generator) -> unique indices.

Every sampler returns a LongTensor of distinct indices into the arrays it was given; none reads
labels. Loops run over selected items (budget), never over the examples of the pool.
"""

from __future__ import annotations

import torch

from thresher.select.kmeans import kmeans_pp, sq_distances


def check_budget(budget: int, n: int) -> None:
    if budget <= 0:
        raise ValueError(f"budget must be positive, got {budget}")
    if budget > n:
        raise ValueError(f"budget {budget} is larger than the pool of {n} examples")


def random_sample(n: int, budget: int, generator: torch.Generator) -> torch.Tensor:
    """``budget`` indices drawn uniformly without replacement."""
    check_budget(budget, n)
    return torch.randperm(n, generator=generator)[:budget]


def top_k(scores: torch.Tensor, budget: int) -> torch.Tensor:
    """Indices of the ``budget`` highest scores (ties broken by lower index)."""
    check_budget(budget, len(scores))
    order = torch.argsort(scores.cpu(), descending=True, stable=True)
    return order[:budget].to(scores.device)


def kcenter_greedy(embeddings: torch.Tensor, budget: int, labelled: torch.Tensor | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Greedy k-center coreset (Sener & Savarese 2018): repeatedly take the point farthest from
    every centre so far. ``labelled`` embeddings act as the initial centres; without them the
    first centre is random."""
    n = embeddings.shape[0]
    check_budget(budget, n)
    x = embeddings.float()
    x_sq = x.square().sum(1)
    if labelled is not None and len(labelled):
        dist = sq_distances(x, labelled.float()).min(1).values
        chosen: list[int] = []
    else:
        first = int(torch.randint(n, (1,), generator=generator))
        chosen = [first]
        dist = (x_sq + x_sq[first] - 2 * x @ x[first]).clamp_min(0)
    dist[chosen] = -1
    while len(chosen) < budget:
        j = int(dist.argmax())
        chosen.append(j)
        dist = torch.minimum(dist, (x_sq + x_sq[j] - 2 * x @ x[j]).clamp_min(0))
        dist[j] = -1
    return torch.tensor(chosen, dtype=torch.long, device=embeddings.device)


def badge(probs: torch.Tensor, embeddings: torch.Tensor, budget: int,
          generator: torch.Generator) -> torch.Tensor:
    """BADGE (Ash et al. 2020): k-means++ seeding on last-layer gradient embeddings.

    The gradient embedding of example i is g_i = r_i (x) e_i with r_i = p_i - onehot(argmax p_i),
    so ||g_i - g_j||^2 = |r_i|^2 |e_i|^2 + |r_j|^2 |e_j|^2 - 2 (r_i . r_j)(e_i . e_j): the
    K*D-dimensional vectors are never built.
    """
    check_budget(budget, len(probs))
    r = probs - torch.nn.functional.one_hot(probs.argmax(1), probs.shape[1]).to(probs.dtype)
    e = embeddings.float()
    norms = r.square().sum(1) * e.square().sum(1)

    def sq_dist_to(j: int) -> torch.Tensor:
        return (norms + norms[j] - 2 * (r @ r[j]) * (e @ e[j])).clamp_min(0)

    return kmeans_pp(len(probs), budget, sq_dist_to, generator)


def systematic_pps(probs: torch.Tensor, budget: int,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Exactly ``budget`` distinct indices with inclusion probability ``pi_i = budget * p_i``.

    Systematic probability-proportional-to-size sampling (Madow 1949): shuffle the units, lay
    their pi_i end to end on [0, budget) and take the units under u, u+1, ..., u+budget-1 for
    one uniform u. Units whose pi_i would exceed 1 are taken with certainty and the rest of the
    budget is spread over the others in proportion to p. Returns (indices, pi); 1/pi are
    Horvitz-Thompson weights, so sum(w * loss) over the sample is unbiased for the pool total.
    """
    n = len(probs)
    check_budget(budget, n)
    p = probs.double().cpu().clamp_min(0)
    if p.sum() <= 0:
        raise ValueError("sampling probabilities must not all be zero")
    certain = torch.zeros(n, dtype=torch.bool)
    pi = torch.zeros(n, dtype=torch.float64)
    while True:  # at most `budget` passes; usually one
        rest = budget - int(certain.sum())
        mass = p[~certain].sum()
        pi = torch.where(certain, torch.ones_like(p), rest * p / mass if mass > 0 else p * 0)
        over = (pi > 1) & ~certain
        if not over.any() or rest == 0:
            break
        certain |= over
    pi = pi.clamp_max(1)
    order = torch.randperm(n, generator=generator)
    ends = pi[order].cumsum(0)
    u = float(torch.rand((), generator=generator, dtype=torch.float64))
    points = u + torch.arange(budget, dtype=torch.float64)
    picked = torch.searchsorted(ends, points, right=True).clamp_max(n - 1)
    chosen = order[picked].unique()
    if len(chosen) < budget:  # rounding at the boundaries: top up with the most likely units
        missing = torch.ones(n, dtype=torch.bool)
        missing[chosen] = False
        extra = top_k(torch.where(missing, pi, torch.full_like(pi, -1.0)), budget - len(chosen))
        chosen = torch.cat([chosen, extra])
    return chosen.to(probs.device), pi[chosen].to(probs.device, torch.float32)
