"""Clustering-based sensitivity sampling (Axiotis et al., ICML 2024, Algorithm 1).

Given embeddings e of a pool and an oracle for the loss at a handful of points:

1. cluster the embeddings ((k, z)-clustering; k-means++ then Lloyd, z = 2) and round every
   centre to its nearest member, so each centre c is a real example;
2. query the loss only at those k centres (the only labels the selection needs);
3. sensitivity s(e) = loss(c_e) + lambda * ||e - c_e||^z, with c_e the centre of e;
4. p_e = s(e) / sum s, draw the sample with probability p_e, weight each draw 1 / (m p_e).

Choices the paper leaves open, and what Thresher does:

- Number of clusters: a parameter (`clusters`); the study defaults to 10% of the acquisition
  size, at least the number of classes.
- The centres: their losses were queried, so their labels are known; they join the selected
  set with weight 1 (taken with certainty) and the remaining budget is sampled from the rest.
- Sampling without duplicates: the theory draws i.i.d. with replacement, which wastes budget
  on repeats. Systematic PPS sampling gives every non-centre point inclusion probability
  exactly m p_e (capped at 1), so the weights 1 / (m p_e) keep the weighted loss estimator
  unbiased while no index is chosen twice.
- lambda (the Hoelder constant) is not known. Estimated from the queried losses alone: for a
  centre c with nearest other centre c', |loss(c) - loss(c')| / ||c - c'||^z. Mode "cluster"
  uses each cluster's own ratio, "global" the median over clusters; a number fixes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from thresher.select.kmeans import kmeans, medoid_centers, nearest, sq_distances
from thresher.select.samplers import check_budget, systematic_pps

LAMBDA_MODES = ("cluster", "global")


@dataclass
class SensitivitySample:
    indices: torch.Tensor  # [m] distinct pool indices: the centres, then the sampled points
    weights: torch.Tensor  # [m] importance weights 1 / pi (1 for centres)
    centers: torch.Tensor  # [k] pool indices of the rounded centres
    lam: torch.Tensor  # [k] Hoelder constant used in each cluster
    probs: torch.Tensor  # [N] sampling distribution p_e over the pool


def estimate_lambda(center_emb: torch.Tensor, center_loss: torch.Tensor, z: float,
                    mode: str) -> torch.Tensor:
    """Per-cluster Hoelder constants from the losses at the centres (no extra labels)."""
    if mode not in LAMBDA_MODES:
        raise ValueError(f"unknown lambda estimate {mode!r}: choose one of "
                         f"{', '.join(LAMBDA_MODES)} or give a number")
    k = center_emb.shape[0]
    if k < 2:
        return torch.zeros(k, device=center_emb.device)
    d = sq_distances(center_emb, center_emb)
    d.fill_diagonal_(float("inf"))
    nn_sq, nn_idx = d.min(1)
    ratio = (center_loss - center_loss[nn_idx]).abs() / nn_sq.clamp_min(1e-12).pow(z / 2)
    if mode == "global":
        return ratio.median().expand(k).clone()
    return ratio


def sensitivity_sample(embeddings: torch.Tensor, budget: int,
                       query_loss: Callable[[torch.Tensor], torch.Tensor], clusters: int,
                       generator: torch.Generator, z: float = 2.0,
                       lam: float | str = "cluster") -> SensitivitySample:
    """Algorithm 1 on a pool: ``budget`` distinct indices with importance weights.

    ``query_loss(indices)`` is the labelling oracle: it is called once, with the centres only.
    """
    n = embeddings.shape[0]
    check_budget(budget, n)
    if not 0 < clusters <= budget:
        raise ValueError(f"clusters must be in [1, budget={budget}], got {clusters}")
    x = embeddings.float()
    result = kmeans(x, clusters, generator)
    centers = medoid_centers(x, result)
    assign, sq_dist = nearest(x, x[centers])  # re-assign to the rounded centres
    center_loss = query_loss(centers).float().to(x.device)
    if isinstance(lam, str):
        lam_k = estimate_lambda(x[centers], center_loss, z, lam)
    else:
        lam_k = torch.full((len(centers),), float(lam), device=x.device)
    s = center_loss[assign] + lam_k[assign] * sq_dist.pow(z / 2)
    probs = s / s.sum() if s.sum() > 0 else torch.full_like(s, 1.0 / n)
    rest = budget - len(centers)
    is_center = torch.zeros(n, dtype=torch.bool, device=x.device)
    is_center[centers] = True
    others = (~is_center).nonzero().flatten()
    indices, weights = centers, torch.ones(len(centers), device=x.device)
    if rest > 0:
        # Renormalise p over the non-centres: the centres are already taken with certainty.
        picked, pi = systematic_pps(probs[others], rest, generator)
        indices = torch.cat([centers, others[picked]])
        weights = torch.cat([weights, 1.0 / pi])
    return SensitivitySample(indices, weights, centers, lam_k, probs)
