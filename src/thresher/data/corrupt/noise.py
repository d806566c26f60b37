"""Noise corruptions: independent per-pixel draws, so each is one tensor expression.

Every corruption here and in the sibling modules takes float images in [0, 1] as
``[N, C, H, W]``, its parameter at one severity and a generator, and returns float images
(clipping and quantising are the caller's).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch

from thresher.seeding import make_generator

SHOT_PARTS = 4  # fixed, so the draws do not depend on how many threads run them


def gaussian_noise(x: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    """Additive N(0, sigma^2) per pixel and channel."""
    return x + sigma * torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)


def shot_noise(x: torch.Tensor, photons: float, gen: torch.Generator) -> torch.Tensor:
    """Poisson photon counts at ``photons`` per unit intensity, scaled back.

    torch samples Poisson counts on one CPU thread, so on the CPU the batch is cut into a fixed
    number of parts, each with its own generator seeded from ``gen``, drawn concurrently.
    """
    rate = x * photons
    if rate.device.type != "cpu":
        return torch.poisson(rate, generator=gen) / photons
    seeds = torch.randint(2 ** 62, (SHOT_PARTS,), generator=gen).tolist()

    def draw(part: tuple[torch.Tensor, int]) -> torch.Tensor:
        return torch.poisson(part[0], generator=make_generator(part[1]))

    with ThreadPoolExecutor(max(1, min(SHOT_PARTS, torch.get_num_threads()))) as pool:
        counts = list(pool.map(draw, zip(rate.tensor_split(SHOT_PARTS), seeds)))
    return torch.cat(counts) / photons


def impulse_noise(x: torch.Tensor, amount: float, gen: torch.Generator) -> torch.Tensor:
    """Salt and pepper: each value independently becomes 1 or 0 with probability amount / 2."""
    u = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    return torch.where(u < amount / 2, 1.0, torch.where(u < amount, 0.0, x))


def speckle_noise(x: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    """Multiplicative noise x * (1 + N(0, sigma^2))."""
    return x + x * sigma * torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
