"""Ranks of per-example scores: what makes scores of different scales (losses, counts with
+inf, probabilities) comparable before they are weighed against each other."""

from __future__ import annotations

import torch


def average_ranks(scores: torch.Tensor) -> torch.Tensor:
    """0-based ranks (ascending) in float64, tied values sharing their average rank."""
    s = scores.detach().double()
    order = torch.argsort(s, stable=True)
    _, inverse, counts = torch.unique_consecutive(s[order], return_inverse=True,
                                                  return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    ranks = torch.empty_like(s)
    ranks[order] = (starts.double() + (counts.double() - 1) / 2)[inverse]
    return ranks
