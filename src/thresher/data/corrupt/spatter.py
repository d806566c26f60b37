"""Spatter (held out in CIFAR-10-C / ImageNet-C): drops of water or mud on the lens.

A smoothed Gaussian field, thresholded, is the liquid. Mud (severities 4-5 of both presets) is
that mask blurred and painted brown. Water traces the field's edges (Canny), measures each
pixel's distance to them, equalises and embosses that map, and adds it in pale turquoise. The
originals did those steps with OpenCV on uint8 and float32 arrays; the helpers below repeat
OpenCV's arithmetic (Sobel with replicated borders, fixed-point gradient directions, float32
5x5 chamfer distances, the equalisation table) over a whole batch, so a
shared field gives the reference's pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from thresher.data.corrupt import ops
from thresher.data.corrupt.presets import Spatter

WATER = (175 / 255, 238 / 255, 238 / 255)  # pale turquoise, RGB
MUD = (63 / 255, 42 / 255, 20 / 255)  # brown, RGB
SKIMAGE_GREY = (0.2125, 0.7154, 0.0721)  # rgb2gray, used by the original for one-channel images
EMBOSS = torch.tensor([[-2.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [0.0, 1.0, 2.0]])
TG22 = 13573  # round(tan(22.5 deg) * 2**15), Canny's direction test in fixed point
# OpenCV's 5x5 chamfer mask for DIST_L2: each step (rows, columns) with its float32 cost
CHAMFER = tuple(sorted({(si * i, sj * j, cost)
                        for a, b, cost in ((1, 0, 1.0), (1, 1, 1.4), (2, 1, 2.1969))
                        for i, j in ((a, b), (b, a)) for si in (1, -1) for sj in (1, -1)}))


def spatter(x: torch.Tensor, p: Spatter, gen: torch.Generator) -> torch.Tensor:
    """Water or mud from one Gaussian field per image."""
    n, _, h, w = x.shape
    field = p.mean + p.std * torch.randn((n, 1, h, w), generator=gen, device=x.device,
                                         dtype=torch.float64)
    return spatter_apply(x, p, field)


def spatter_apply(x: torch.Tensor, p: Spatter, field: torch.Tensor) -> torch.Tensor:
    """Spatter from a given Gaussian field ``[N, 1, H, W]`` (float64, as NumPy draws it)."""
    liquid = ops.gaussian_filter(field.to(torch.float64), p.sigma, "nearest")
    liquid = torch.where(liquid < p.threshold, 0.0, liquid)
    if p.mud:
        mask = (liquid > p.threshold).to(torch.float32)
        mask = _gaussian_float32(mask, p.intensity)
        mask = torch.where(mask < torch.tensor(0.8, dtype=torch.float32), 0.0, mask)
        paint = _colour(MUD, mask, x.shape[1])
        return ((x * (1 - mask)) + paint).clamp(0, 1)
    levels = torch.remainder(torch.trunc(liquid * 255), 256)  # NumPy's float -> uint8 cast
    emboss = _water_map(levels[:, 0].to(torch.int64)).to(torch.float32)
    m = levels[:, 0].to(torch.float32) * emboss
    peak = m.amax(dim=(1, 2), keepdim=True)
    m = torch.where(peak > 0, m / peak.clamp(min=1e-30), 0.0) * p.intensity  # no liquid: none
    paint = _colour(WATER, m[:, None], x.shape[1], clip=True)
    return (x + paint).clamp(0, 1)


def _colour(rgb: tuple[float, float, float], m: torch.Tensor, channels: int,
            clip: bool = False) -> torch.Tensor:
    """``m`` times a colour, per channel; one-channel images get its skimage grey value."""
    colour = torch.tensor(rgb, dtype=torch.float32, device=m.device)[None, :, None, None]
    paint = m * colour
    if channels == 3:
        return paint
    paint = paint.clamp(0, 1) if clip else paint
    grey = torch.tensor(SKIMAGE_GREY, dtype=torch.float32, device=m.device)[None, :, None, None]
    return (paint * grey).sum(1, keepdim=True)


def _gaussian_float32(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """scipy's gaussian_filter on a float32 array: each axis in float64, stored as float32."""
    h, w = x.shape[-2:]
    kernel = ops.gaussian_kernel(sigma, 4.0)
    eye_h, eye_w = torch.eye(h, dtype=torch.float64), torch.eye(w, dtype=torch.float64)
    x = ops.apply_rows_cols(x.to(torch.float64), ops.filter_matrix(h, kernel, "nearest"),
                            eye_w).to(torch.float32)
    return ops.apply_rows_cols(x.to(torch.float64), eye_h,
                               ops.filter_matrix(w, kernel, "nearest")).to(torch.float32)


def _water_map(levels: torch.Tensor) -> torch.Tensor:
    """The original's chain on uint8 levels ``[N, H, W]``: Canny edges, distance to them
    (capped at 20, box-blurred, truncated), histogram equalisation, emboss, box blur."""
    dist = chamfer_distance(canny(levels, 50, 150)).clamp(max=20.0)
    dist = (_box3(dist.to(torch.float64)) * (1 / 9)).to(torch.float32).floor()
    dist = equalize_hist(dist.to(torch.int64))
    dist = ops.filter2d(dist[:, None].to(torch.float64), EMBOSS, "mirror")[:, 0]
    dist = dist.round().clamp(0, 255)
    return (_box3(dist) / 9).round()


def _box3(x: torch.Tensor) -> torch.Tensor:
    """Sum of each 3x3 neighbourhood, OpenCV's default border (reflect-101); summed exactly,
    since OpenCV truncates the mean to uint8 (``ops.filter2d``'s SVD terms are not exact)."""
    padded = F.pad(x[:, None], (1, 1, 1, 1), mode="reflect")[:, 0]
    h, w = x.shape[-2:]
    return sum(padded[:, i:i + h, j:j + w] for i in range(3) for j in range(3))


def canny(levels: torch.Tensor, low: int, high: int) -> torch.Tensor:
    """``cv2.Canny(img, low, high)`` (3x3 Sobel, L1 magnitude) on uint8 levels ``[N, H, W]``
    held as integers; True on edges."""
    h, w = levels.shape[-2:]
    padded = F.pad(levels[:, None].to(torch.float32), (1, 1, 1, 1), mode="replicate")
    padded = padded[:, 0].to(torch.int32)
    rows = padded[:, :-2] + 2 * padded[:, 1:-1] + padded[:, 2:]  # vertical [1 2 1]
    cols = padded[:, :, :-2] + 2 * padded[:, :, 1:-1] + padded[:, :, 2:]  # horizontal [1 2 1]
    dx = rows[:, :, 2:] - rows[:, :, :-2]
    dy = cols[:, 2:] - cols[:, :-2]
    ax, ay = dx.abs(), dy.abs()
    mag = ax + ay
    around = F.pad(mag, (1, 1, 1, 1))  # magnitude is 0 outside the image

    def nb(i: int, j: int) -> torch.Tensor:
        return around[:, 1 + i:1 + i + h, 1 + j:1 + j + w]

    ay = ay << 15
    tg22x = ax * TG22
    horizontal = ay < tg22x
    vertical = ~horizontal & (ay > tg22x + (ax << 16))
    diagonal = ~horizontal & ~vertical
    same_sign = (dx ^ dy) >= 0
    peak = ((horizontal & (mag > nb(0, -1)) & (mag >= nb(0, 1)))
            | (vertical & (mag > nb(-1, 0)) & (mag >= nb(1, 0)))
            | (diagonal & same_sign & (mag > nb(-1, -1)) & (mag > nb(1, 1)))
            | (diagonal & ~same_sign & (mag > nb(-1, 1)) & (mag > nb(1, -1))))
    candidate = peak & (mag > low)
    edges = candidate & (mag > high)
    while True:  # hysteresis: grow strong edges through 8-connected candidates, 4 steps a check
        grown = edges
        for _ in range(4):
            grown = candidate & _dilate(grown)
        if torch.equal(grown, edges):
            return edges
        edges = grown


def _dilate(b: torch.Tensor) -> torch.Tensor:
    """3x3 dilation of boolean maps ``[N, H, W]`` (outside counts as False)."""
    p = F.pad(b, (1, 1, 1, 1))
    rows = p[:, :-2] | p[:, 1:-1] | p[:, 2:]
    return rows[:, :, :-2] | rows[:, :, 1:-1] | rows[:, :, 2:]


def chamfer_distance(edges: torch.Tensor) -> torch.Tensor:
    """``cv2.distanceTransform(255 - edges, DIST_L2, 5)`` where it is at most 20 (the caller
    truncates there): the 5x5 chamfer distance to the nearest edge pixel, as float32 sums of
    the mask's steps, relaxed in parallel. A path of length <= 20 has at most 20 steps, so 20
    rounds are exact there; farther pixels stay above 20, at most ``cap``."""
    cap = torch.tensor(20 + 2.1969, dtype=torch.float32)  # above 20 only "more than 20" matters
    d = torch.where(edges, 0.0, cap).to(torch.float32)
    h, w = edges.shape[-2:]
    for _ in range(20):
        padded = F.pad(d, (2, 2, 2, 2), value=float(cap))
        best = d
        for i, j, cost in CHAMFER:
            best = torch.minimum(best, padded[:, 2 + i:2 + i + h, 2 + j:2 + j + w] + cost)
        if torch.equal(best, d):
            break
        d = best
    return d


def equalize_hist(levels: torch.Tensor) -> torch.Tensor:
    """``cv2.equalizeHist`` per image on uint8 levels ``[N, H, W]`` held as int64."""
    n = levels.shape[0]
    flat = levels.reshape(n, -1)
    total = flat.shape[1]
    hist = torch.zeros(n, 256, dtype=torch.int64, device=levels.device)
    hist.scatter_add_(1, flat, torch.ones_like(flat))
    first = (hist > 0).to(torch.int64).argmax(1, keepdim=True)
    first_count = hist.gather(1, first)
    scale = (torch.tensor(255.0, dtype=torch.float32) / (total - first_count).clamp(min=1)
             .to(torch.float32))
    lut = torch.round((hist.cumsum(1) - first_count).to(torch.float32) * scale).clamp(0, 255)
    lut = torch.where(first_count == total, first.to(torch.float32), lut)  # one level: kept
    return lut.gather(1, flat).reshape(levels.shape)
