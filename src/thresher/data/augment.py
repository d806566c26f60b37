"""Batched augmentation policies, run on the device on whole batches.

Every operation draws its randomness for the whole batch at once from one generator, so a policy
costs a handful of tensor operations per batch instead of a Python call per image — the reason
the pipeline outruns a PIL + DataLoader setup by an order of magnitude. Crops and flips act on
uint8 images (as torchvision does on PIL images); colour and geometry act on floats in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from thresher.registry import Registry


def random_crop(x: torch.Tensor, padding: int, gen: torch.Generator,
                flip: bool = False) -> torch.Tensor:
    """Zero-pad by ``padding`` and take one random crop of the original size per image;
    with ``flip``, also mirror each image left-right with probability 1/2.

    Crop and flip are one gather over the flattened padded images, with a per-image index
    built from two random offsets and a mirrored column order — about 5x faster on the CPU
    than indexing with four broadcast index tensors.
    """
    b, c, h, w = x.shape
    if padding > 0:
        x = F.pad(x, (padding, padding, padding, padding))
    big_h, big_w = x.shape[-2:]
    dy = torch.randint(0, 2 * padding + 1, (b, 1), device=x.device, generator=gen)
    dx = torch.randint(0, 2 * padding + 1, (b, 1), device=x.device, generator=gen)
    cols = torch.arange(w, device=x.device).expand(b, w)
    if flip:
        mirror = torch.rand(b, 1, device=x.device, generator=gen) < 0.5
        cols = torch.where(mirror, w - 1 - cols, cols)
    rows = dy + torch.arange(h, device=x.device)
    index = (rows[:, :, None] * big_w + (dx + cols)[:, None, :]).view(b, 1, h * w)
    return x.reshape(b, c, big_h * big_w).gather(2, index.expand(b, c, h * w)).view(b, c, h, w)


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return 0.299 * r + 0.587 * g + 0.114 * b


def _factors(n: int, strength: float, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One factor per image, uniform in [1 - strength, 1 + strength] (ColorJitter's rule)."""
    u = torch.rand(n, device=x.device, generator=gen)
    return (1 - strength + 2 * strength * u).clamp_min(0)[:, None, None, None]


def color_jitter(x: torch.Tensor, brightness: float, contrast: float, saturation: float,
                 hue: float, gen: torch.Generator) -> torch.Tensor:
    """Brightness, contrast, saturation and hue jitter on float images in [0, 1].

    Applied in a fixed order (torchvision shuffles it per image; the difference is second
    order). Hue is a rotation of the chroma plane in YIQ space — a linear, batchable stand-in
    for torchvision's HSV round trip.
    """
    n = x.shape[0]
    if brightness > 0:
        x = (x * _factors(n, brightness, x, gen)).clamp(0, 1)
    if contrast > 0:
        mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
        x = (mean + _factors(n, contrast, x, gen) * (x - mean)).clamp(0, 1)
    if x.shape[1] == 3:
        if saturation > 0:
            gray = _gray(x)
            x = (gray + _factors(n, saturation, x, gen) * (x - gray)).clamp(0, 1)
        if hue > 0:
            theta = (torch.rand(n, device=x.device, generator=gen) * 2 - 1) * hue * 2 * math.pi
            to_yiq = x.new_tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322],
                                   [0.211, -0.523, 0.312]])
            from_yiq = torch.linalg.inv(to_yiq)
            cos, sin = theta.cos(), theta.sin()
            rot = torch.zeros(n, 3, 3, device=x.device, dtype=x.dtype)
            rot[:, 0, 0] = 1
            rot[:, 1, 1], rot[:, 1, 2] = cos, -sin
            rot[:, 2, 1], rot[:, 2, 2] = sin, cos
            mix = from_yiq @ rot @ to_yiq  # [n, 3, 3]
            x = torch.einsum("nij,njhw->nihw", mix, x).clamp(0, 1)
    return x


def random_rotation(x: torch.Tensor, degrees: float, gen: torch.Generator) -> torch.Tensor:
    """Rotate each image by an angle uniform in [-degrees, degrees], zero fill outside."""
    n = x.shape[0]
    angle = (torch.rand(n, device=x.device, generator=gen) * 2 - 1) * math.radians(degrees)
    cos, sin = angle.cos(), angle.sin()
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def cutout(x: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """Zero one ``size`` x ``size`` square per image, centred anywhere (DeVries & Taylor 2017).

    Applied after normalisation so the hole holds the dataset mean, as in the paper.
    """
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n,), device=x.device, generator=gen)
    cx = torch.randint(0, w, (n,), device=x.device, generator=gen)
    ys = torch.arange(h, device=x.device)[None, :]
    xs = torch.arange(w, device=x.device)[None, :]
    in_y = (ys >= (cy - size // 2)[:, None]) & (ys < (cy - size // 2 + size)[:, None])
    in_x = (xs >= (cx - size // 2)[:, None]) & (xs < (cx - size // 2 + size)[:, None])
    hole = in_y[:, :, None] & in_x[:, None, :]
    return x.masked_fill(hole[:, None], 0.0)


@dataclass(frozen=True)
class Policy:
    """A named augmentation policy; ``None``/zero fields switch a step off."""

    name: str
    crop_padding: int = 0
    flip: bool = False
    jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    rotation: float = 0.0
    cutout_fraction: float = 0.0  # side of the hole as a fraction of the image side

    def on_uint8(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Geometric steps that are exact on integer pixels."""
        if self.crop_padding or self.flip:
            pad = max(1, round(self.crop_padding * x.shape[-1] / 32)) if self.crop_padding else 0
            x = random_crop(x, pad, gen, flip=self.flip)
        return x

    @property
    def has_float_steps(self) -> bool:
        return any(self.jitter) or bool(self.rotation)

    def on_float(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Photometric and rotation steps on floats in [0, 1]."""
        if any(self.jitter):
            x = color_jitter(x, *self.jitter, gen=gen)
        if self.rotation:
            x = random_rotation(x, self.rotation, gen)
        return x

    def on_normalized(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if self.cutout_fraction:
            x = cutout(x, max(1, round(self.cutout_fraction * x.shape[-1])), gen)
        return x


# Padding is given for 32 px images and scaled with the image side (4 px at 32, 1 px at 8).
POLICIES: Registry[Policy] = Registry("augmentation")
POLICIES.register("none", Policy("none"), description="no augmentation")
POLICIES.register("standard", Policy("standard", crop_padding=4, flip=True),
                  description="4 px zero-padded random crop + horizontal flip")
POLICIES.register("strong", Policy("strong", crop_padding=4, flip=True,
                                   jitter=(0.4, 0.4, 0.4, 0.1), rotation=15.0),
                  description="standard + colour jitter + rotation up to 15 degrees")
POLICIES.register("cutout", Policy("cutout", crop_padding=4, flip=True, cutout_fraction=0.5),
                  description="standard + a hole half the image side, after normalisation")


def get_policy(name: str) -> Policy:
    """The policy called ``name``; an unknown name raises ValueError naming the choices."""
    return POLICIES[name]
