"""Blur corruptions: defocus (disk kernel), glass (blur, local pixel moves, blur), motion
(directional kernel, one random angle per image) and zoom (mean of centre zooms).

Glass blur's pixel moves are a sequential loop in the original: positions are visited from the
bottom-right corner to the top-left and each takes the value at a random offset. (The original
writes ``x[p], x[q] = x[q], x[p]`` on NumPy views, which copies ``x[q]`` into ``x[p]`` and leaves
``x[q]`` alone, so it is a copy, not a swap.) A visited pixel that reads an already visited one
gets that pixel's new value, so values can travel along chains; `_glass_moves` resolves every
chain at once by pointer doubling, so the result equals the sequential loop's exactly while
doing O(log chain length) gathers over the whole batch.
"""

from __future__ import annotations

import torch

from thresher.data.corrupt import ops
from thresher.data.corrupt.presets import Defocus, Glass, Motion, Zoom


def defocus_blur(x: torch.Tensor, p: Defocus, gen: torch.Generator) -> torch.Tensor:
    """Every channel filtered with an anti-aliased disk (OpenCV reflect-101 borders)."""
    return ops.filter2d(x, disk_kernel(p.radius, p.alias_blur), "mirror")


def disk_kernel(radius: float, alias_blur: float) -> torch.Tensor:
    """The original's disk: a 17x17 grid (wider for radius > 8), 1 inside the radius,
    normalised, then a 3x3 (5x5) Gaussian blur with sigma ``alias_blur``."""
    span = 8 if radius <= 8 else int(radius)
    grid = torch.arange(-span, span + 1, dtype=torch.float64)
    disk = ((grid[:, None] ** 2 + grid[None, :] ** 2) <= radius ** 2).to(torch.float64)
    disk /= disk.sum()
    taps = 3 if radius <= 8 else 5
    t = torch.arange(taps, dtype=torch.float64) - (taps - 1) / 2
    g = torch.exp(-t ** 2 / (2 * alias_blur ** 2))
    g /= g.sum()
    smooth = ops.filter_matrix(len(grid), g, "mirror")
    return smooth @ disk @ smooth.T


def glass_blur(x: torch.Tensor, p: Glass, gen: torch.Generator) -> torch.Tensor:
    """Blur, quantise to uint8 levels, move pixels by small random offsets, blur again."""
    n, _, h, w = x.shape
    visits = (p.iterations, n, max(h - 2 * p.delta, 0), max(w - 2 * p.delta, 0), 2)
    offsets = torch.randint(-p.delta, p.delta, visits, generator=gen, device=x.device)
    return glass_apply(x, p, offsets)


def glass_apply(x: torch.Tensor, p: Glass, offsets: torch.Tensor) -> torch.Tensor:
    """Glass blur with given offsets ``[iterations, N, H - 2d, W - 2d, (dx, dy)]``, listed in the
    order the original visits positions: rows H-d down to d+1, in each columns W-d down to d+1."""
    y = ops.gaussian_filter(x, p.sigma, "nearest")
    y = ops.truncate_levels(y) / 255  # the original stores this blur as uint8
    for moves in offsets:
        y = _glass_moves(y, moves, p.delta)
    return ops.gaussian_filter(y, p.sigma, "nearest")


def _glass_moves(y: torch.Tensor, moves: torch.Tensor, delta: int) -> torch.Tensor:
    n, c, h, w = y.shape
    rows = torch.arange(h - delta, delta, -1, device=y.device)
    cols = torch.arange(w - delta, delta, -1, device=y.device)
    visited = (rows[:, None] * w + cols[None, :]).reshape(-1)  # in visiting order
    source = visited + moves[..., 1].reshape(n, -1) * w + moves[..., 0].reshape(n, -1)
    in_loop = torch.zeros(h * w, dtype=torch.bool, device=y.device)
    in_loop[visited] = True
    # visits go down the raster order: a source with a larger index was visited before
    reads_new = in_loop[source] & (source > visited)
    pointer = torch.arange(h * w, device=y.device).repeat(n, 1)
    pointer[:, visited] = source
    final = torch.ones(n, h * w, dtype=torch.bool, device=y.device)
    final[:, visited] = ~reads_new
    while not bool(final.all()):  # pointer doubling along the chains of new values
        pointer, final = (torch.where(final, pointer, pointer.gather(1, pointer)),
                          final | final.gather(1, pointer))
    flat = y.reshape(n, c, h * w)
    return flat.gather(2, pointer[:, None].expand(n, c, h * w)).reshape(n, c, h, w)


def motion_blur(x: torch.Tensor, p: Motion, gen: torch.Generator) -> torch.Tensor:
    """Directional Gaussian blur at a uniform random angle in [-45, 45) degrees per image."""
    angles = torch.rand(x.shape[0], generator=gen, device=x.device, dtype=torch.float64)
    return ops.motion_blur(x, p.radius, p.sigma, angles * 90 - 45)


def zoom_blur(x: torch.Tensor, p: Zoom, gen: torch.Generator) -> torch.Tensor:
    """The mean of the image and its bilinear zooms about the centre by each factor."""
    _, _, h, w = x.shape
    rows, cols = [], []
    for factor in p.factors:
        r, c = ops.zoom_coords(h, factor), ops.zoom_coords(w, factor)
        rows.append(ops.linear_matrix(r[ops.crop_slice(len(r), h, p.crop)], h))
        cols.append(ops.linear_matrix(c[ops.crop_slice(len(c), w, p.crop)], w))
    return (x + ops.sum_rows_cols(x, rows, cols)) / (len(p.factors) + 1)


def gaussian_blur(x: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    """skimage's ``gaussian`` (edge pixels repeated, truncated at 4 sigma)."""
    return ops.gaussian_filter(x, sigma, "nearest")
