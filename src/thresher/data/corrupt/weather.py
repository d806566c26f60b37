"""Weather corruptions: snow (thresholded, zoomed, motion-blurred noise), frost (a crop of a
frost photograph blended in) and fog (a diamond-square plasma fractal per image).

Frost needs the six frost photographs that ship with the optional `imagecorruptions` package
(its files are read; the package is never imported). ``THRESHER_FROST_DIR`` may name another
folder holding the same files.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
from pathlib import Path

import numpy as np
import torch

from thresher.data.corrupt import ops
from thresher.data.corrupt.presets import Fog, Frost, Snow
from thresher.data.formats import DataError

# The originals draw the texture with randint(5): the sixth file is never used.
FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")


def snow(x: torch.Tensor, p: Snow, gen: torch.Generator) -> torch.Tensor:
    """Flakes from a thresholded Gaussian field, zoomed and motion-blurred at a random angle
    in [-135, -45) degrees, added twice (once rotated 180 degrees) to a brightened image."""
    n, _, h, w = x.shape
    field = p.mean + p.std * torch.randn((n, 1, h, w), generator=gen, device=x.device,
                                         dtype=x.dtype)
    angles = torch.rand(n, generator=gen, device=x.device, dtype=torch.float64) * 90 - 135
    return snow_apply(x, p, field, angles)


def snow_apply(x: torch.Tensor, p: Snow, field: torch.Tensor,
               angles: torch.Tensor) -> torch.Tensor:
    """Snow from a given Gaussian field ``[N, 1, H, W]`` and blur angles in degrees."""
    _, _, h, w = x.shape
    rows, cols = ops.zoom_coords(h, p.zoom), ops.zoom_coords(w, p.zoom)
    if p.crop == "center":  # CIFAR-10-C crops before the blur, imagecorruptions after it
        rows = rows[ops.crop_slice(len(rows), h, "center")]
        cols = cols[ops.crop_slice(len(cols), w, "center")]
    layer = ops.apply_rows_cols(field, ops.linear_matrix(rows, h), ops.linear_matrix(cols, w))
    layer = torch.where(layer < p.threshold, 0.0, layer).clamp(0, 1)
    layer = ops.motion_blur(layer, p.radius, p.sigma, angles)
    layer = torch.round(layer * 255)[:, :, :h, :w] / 255  # the flakes pass through uint8
    x = p.blend * x + (1 - p.blend) * torch.maximum(x, ops.grey(x) * 1.5 + 0.5)
    return x + layer + layer.flip(2, 3)


def frost(x: torch.Tensor, p: Frost, gen: torch.Generator) -> torch.Tensor:
    """A random crop of one of five frost photographs, blended with the image."""
    n, _, h, w = x.shape
    textures = frost_textures(p.scale, h, w)
    which = torch.randint(len(textures), (n,), generator=gen, device=x.device)
    room = torch.tensor([[t.shape[1] - h, t.shape[2] - w] for t in textures], device=x.device)
    corner = (torch.rand((n, 2), generator=gen, device=x.device, dtype=torch.float64)
              * room[which]).long()
    return frost_apply(x, p, textures, which, corner)


def frost_apply(x: torch.Tensor, p: Frost, textures: tuple[torch.Tensor, ...],
                which: torch.Tensor, corner: torch.Tensor) -> torch.Tensor:
    """Blend in crops of ``textures[which[i]]`` (uint8 ``[3, h, w]``) at ``corner[i]``
    (top, left)."""
    n, c, h, w = x.shape
    crops = torch.empty((n, 3, h, w), dtype=x.dtype, device=x.device)
    rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    for k, texture in enumerate(textures):  # a loop over the five textures, not the images
        sel = (which == k).nonzero().flatten()
        if len(sel):
            r = (corner[sel, 0, None] + rows)[:, :, None]
            q = (corner[sel, 1, None] + cols)[:, None, :]
            crops[sel] = texture.to(x.device)[:, r, q].transpose(0, 1).to(x.dtype)
    crops /= 255
    if c == 1:
        crops = (crops * torch.tensor([0.2989, 0.5870, 0.1140], device=x.device,
                                      dtype=x.dtype)[None, :, None, None]).sum(1, keepdim=True)
    return p.image_weight * x + p.frost_weight * crops


def frost_dir() -> Path:
    """The folder of frost photographs: ``THRESHER_FROST_DIR``, else imagecorruptions' own."""
    if os.environ.get("THRESHER_FROST_DIR"):
        folder = Path(os.environ["THRESHER_FROST_DIR"]).expanduser()
    else:
        spec = importlib.util.find_spec("imagecorruptions")
        folder = Path(spec.origin).parent / "frost" if spec and spec.origin else Path()
    if not all((folder / f).is_file() for f in FROST_FILES):
        raise DataError(
            "frost needs the frost photographs of the optional imagecorruptions package "
            f"({', '.join(FROST_FILES)}); install them with `pip install --no-deps "
            "imagecorruptions` or set THRESHER_FROST_DIR to a folder holding them "
            f"(looked in {folder if folder != Path() else 'no folder: package not found'})")
    return folder


def frost_textures(scale: float | None, h: int, w: int) -> tuple[torch.Tensor, ...]:
    """The five frost photographs resized as the preset does, uint8 ``[3, h', w']`` each."""
    return _load_textures(str(frost_dir()), scale, h, w)


@functools.lru_cache(maxsize=4)
def _load_textures(folder: str, scale: float | None, h: int, w: int) -> tuple[torch.Tensor, ...]:
    """Read once per process (the files are large): a pure function of its arguments."""
    from PIL import Image

    out = []
    for name in FROST_FILES:
        with Image.open(Path(folder) / name) as im:
            texture = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).double()
        th, tw = texture.shape[1:]
        if scale is not None:  # CIFAR-10-C: OpenCV bilinear by a fixed factor
            oh, ow = round(th * scale), round(tw * scale)
            m_rows = ops.linear_matrix((torch.arange(oh) + 0.5) / scale - 0.5, th)
            m_cols = ops.linear_matrix((torch.arange(ow) + 0.5) / scale - 0.5, tw)
        else:  # imagecorruptions: cover the image, then 10% larger, OpenCV bicubic
            fit = max(1.0, h / th, w / tw) * 1.1
            oh, ow = math.ceil(th * fit), math.ceil(tw * fit)
            m_rows = ops.cubic_matrix((torch.arange(oh) + 0.5) * th / oh - 0.5, th)
            m_cols = ops.cubic_matrix((torch.arange(ow) + 0.5) * tw / ow - 0.5, tw)
        resized = ops.apply_rows_cols(texture[None], m_rows, m_cols)[0]
        out.append(resized.round().clamp(0, 255).to(torch.uint8))
    return tuple(out)


def fog(x: torch.Tensor, p: Fog, gen: torch.Generator) -> torch.Tensor:
    """A plasma fractal per image (the next power-of-two size, cropped) as fog."""
    n, _, h, w = x.shape
    size = 1 << (max(h, w) - 1).bit_length()  # the next power of two
    plasma = plasma_fractal(n, size, p.decay, gen, x.device)[:, None, :h, :w]
    return fog_apply(x, p, plasma.to(x.dtype))


def fog_apply(x: torch.Tensor, p: Fog, plasma: torch.Tensor) -> torch.Tensor:
    """Add ``amount`` times a [0, 1] fog map, then rescale so the brightest value keeps its
    level."""
    peak = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x + p.amount * plasma) * peak / (peak + p.amount)


def plasma_fractal(n: int, size: int, decay: float, gen: torch.Generator,
                   device: torch.device) -> torch.Tensor:
    """``n`` diamond-square height maps ``[n, size, size]`` scaled to [0, 1] (size a power of 2).

    Each octave sets square centres, then diamond centres, to the mean of their four
    neighbours (wrapping around) plus uniform noise whose range shrinks by ``decay``.
    """
    m = torch.zeros((n, size, size), dtype=torch.float64, device=device)
    step, wibble = size, 100.0

    def wibbled(a: torch.Tensor) -> torch.Tensor:
        u = torch.rand(a.shape, generator=gen, device=device, dtype=torch.float64)
        return a / 4 + wibble * wibble * (2 * u - 1)

    while step >= 2:
        half = step // 2
        corners = m[:, ::step, ::step]
        squares = corners + corners.roll(-1, 1)
        m[:, half::step, half::step] = wibbled(squares + squares.roll(-1, 2))
        centres, corners = m[:, half::step, half::step], m[:, ::step, ::step]
        left = centres + centres.roll(1, 1) + corners + corners.roll(-1, 2)
        top = centres + centres.roll(1, 2) + corners + corners.roll(-1, 1)
        m[:, ::step, half::step] = wibbled(left)
        m[:, half::step, ::step] = wibbled(top)
        step, wibble = half, wibble / decay
    m -= m.amin(dim=(1, 2), keepdim=True)
    return m / m.amax(dim=(1, 2), keepdim=True)
