"""k-means++ seeding and Lloyd's k-means on tensors, on any device.

One implementation serves every study: clustering-based sensitivity sampling, BADGE's seeding
on gradient embeddings, and clustering memories. Distances are computed in row chunks as
``|x|^2 + |c|^2 - 2 x c^T`` (one matrix product per chunk), so 60,000 x 128 points with 100
centres take well under a second per Lloyd iteration on a laptop CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

CHUNK = 16384


def sq_distances(x: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``[N, k]`` between rows of ``x`` and ``centers``."""
    out = torch.empty(x.shape[0], centers.shape[0], device=x.device, dtype=x.dtype)
    c_sq = centers.square().sum(1)
    for start in range(0, x.shape[0], CHUNK):
        part = x[start:start + CHUNK]
        d = part.square().sum(1, keepdim=True) + c_sq - 2 * part @ centers.T
        out[start:start + CHUNK] = d.clamp_min_(0)
    return out


def nearest(x: torch.Tensor, centers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of and squared distance to the nearest centre, for every row of ``x``.

    |x|^2 is the same for every centre, so the search ranks |c|^2 - 2 x.c — one fused
    matrix product per chunk — and adds |x|^2 back only to the winning distance.
    """
    assign = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    dist = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    c_sq = centers.square().sum(1)
    for start in range(0, x.shape[0], CHUNK):
        part = x[start:start + CHUNK]
        d, a = torch.addmm(c_sq, part, centers.T, alpha=-2).min(1)
        dist[start:start + CHUNK] = (d + part.square().sum(1)).clamp_min_(0)
        assign[start:start + CHUNK] = a
    return assign, dist


def kmeans_pp(n: int, k: int, sq_dist_to: Callable[[int], torch.Tensor],
              generator: torch.Generator, z: float = 2.0) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007) over ``n`` points: ``k`` distinct indices.

    Each new seed is drawn with probability proportional to dist^z to the nearest seed so far.
    Distances come from ``sq_dist_to(j)`` (squared distances of all points to point j), so the
    caller can use a cheaper closed form than materialised vectors (BADGE does).
    """
    if not 0 < k <= n:
        raise ValueError(f"cannot choose {k} seeds from {n} points")
    first = int(torch.randint(n, (1,), generator=generator))
    seeds = [first]
    dist = sq_dist_to(first).clone()
    for _ in range(k - 1):
        dist[seeds[-1]] = 0
        weight = dist.pow(z / 2) if z != 2 else dist
        cdf = weight.double().cumsum(0)
        if cdf[-1] <= 0:  # every remaining point coincides with a seed: pick uniformly
            cdf = torch.ones_like(cdf).index_fill_(0, torch.tensor(seeds, device=cdf.device),
                                                   0).cumsum(0)
        u = torch.rand((), generator=generator, dtype=torch.float64) * cdf[-1].cpu()
        j = int(torch.searchsorted(cdf, u.to(cdf.device)).clamp_max(n - 1))
        seeds.append(j)
        dist = torch.minimum(dist, sq_dist_to(j))
    return torch.tensor(seeds, dtype=torch.long, device=dist.device)


def euclidean_sq_dist_to(x: torch.Tensor) -> Callable[[int], torch.Tensor]:
    """``sq_dist_to`` for plain vectors, reusing the row norms across calls."""
    x_sq = x.square().sum(1)
    return lambda j: (x_sq + x_sq[j] - 2 * (x @ x[j])).clamp_min(0)


@dataclass
class KMeansResult:
    centers: torch.Tensor  # [k, D]
    assign: torch.Tensor  # [N] cluster of every point
    sq_dist: torch.Tensor  # [N] squared distance to its centre
    iterations: int

    @property
    def cost(self) -> float:
        return float(self.sq_dist.sum())


def kmeans(x: torch.Tensor, k: int, generator: torch.Generator, iters: int = 50,
           tol: float = 1e-4) -> KMeansResult:
    """Lloyd's algorithm from a k-means++ start; stops when centres move less than ``tol``
    (relative to the data's spread). An emptied cluster is re-seeded at the farthest point."""
    x = x.float()
    n = x.shape[0]
    centers = x[kmeans_pp(n, k, euclidean_sq_dist_to(x), generator)].clone()
    scale = x.var(0).sum().clamp_min(1e-12)
    it = 0
    for it in range(1, iters + 1):  # noqa: B007 (the count is reported after the loop)
        assign, dist = nearest(x, centers)
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(centers).index_add_(0, assign, x)
        new = sums / counts.clamp_min(1)[:, None]
        empty = (counts == 0).nonzero().flatten()
        if len(empty):
            far = dist.topk(len(empty)).indices
            new[empty] = x[far]
        shift = (new - centers).square().sum(1).max()
        centers = new
        if shift <= tol * scale:
            break
    assign, dist = nearest(x, centers)
    return KMeansResult(centers, assign, dist, it)


def medoid_centers(x: torch.Tensor, result: KMeansResult) -> torch.Tensor:
    """For each non-empty cluster, the index of the member nearest its centre.

    Rounds a clustering onto data points, as sensitivity sampling needs: a centre must be a
    real example whose label (and loss) can be queried.
    """
    order = torch.argsort(result.sq_dist, stable=True)
    order = order[torch.argsort(result.assign[order], stable=True)]
    grouped = result.assign[order]
    first = torch.ones_like(grouped, dtype=torch.bool)
    first[1:] = grouped[1:] != grouped[:-1]
    return order[first]
