"""Digital corruptions: brightness, contrast, elastic transform, pixelate and JPEG.

JPEG is the one corruption with a per-image Python loop: the codec (Pillow's libjpeg) encodes
and decodes one image per call and there is no batched JPEG codec in torch; reimplementing
libjpeg's quantisation, chroma subsampling and upsampling would only approximate it.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from thresher.data.corrupt import ops
from thresher.data.corrupt.presets import Elastic


def brightness(x: torch.Tensor, amount: float, gen: torch.Generator) -> torch.Tensor:
    """Raise the HSV value by ``amount`` (capped at 1) keeping hue and saturation.

    With hue and saturation fixed, RGB is proportional to the value V = max(R, G, B), so the
    round trip through HSV is a per-pixel rescaling by V' / V (black becomes grey V').
    """
    if x.shape[1] == 1:
        return x + amount
    value = x.amax(1, keepdim=True)
    raised = (value + amount).clamp(max=1)
    return torch.where(value > 0, x * raised / value.clamp_min(1e-12), raised)


def saturate(x: torch.Tensor, p: tuple[float, float], gen: torch.Generator) -> torch.Tensor:
    """Set the HSV saturation to ``clip(S * scale + shift, 0, 1)`` keeping hue and value.

    With hue and value V = max fixed, each channel sits a hue-given fraction k of the way from
    V down to V * (1 - S), so it becomes V * (1 - S' k), k = (V - channel) / (V - min). A grey
    pixel has hue 0 (red) in the HSV convention, so a positive shift tints it red, as in the
    original. Grey-level images are returned unchanged (their red channel is V).
    """
    if x.shape[1] == 1:
        return x
    scale, shift = p
    value, low = x.amax(1, keepdim=True), x.amin(1, keepdim=True)
    delta = value - low
    s = torch.where(value > 0, delta / value.clamp_min(1e-12), 0.0)
    raised = (s * scale + shift).clamp(0, 1)
    red = torch.tensor([0.0, 1.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = torch.where(delta > 0, (value - x) / delta.clamp_min(1e-12), red)
    return value * (1 - raised * k)


def contrast(x: torch.Tensor, factor: float, gen: torch.Generator) -> torch.Tensor:
    """Scale each channel's deviation from its own mean by ``factor``."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    return (x - mean) * factor + mean


def elastic_transform(x: torch.Tensor, p: Elastic, gen: torch.Generator) -> torch.Tensor:
    """Warp each image by a random affine map (CIFAR-10-C) and a smooth random field."""
    n, _, h, w = x.shape
    shift = torch.rand((n, 3, 2), generator=gen, device=x.device, dtype=torch.float64) * 2 - 1
    fields = torch.rand((n, 2, h, w), generator=gen, device=x.device, dtype=x.dtype) * 2 - 1
    return elastic_apply(x, p, shift, fields)


def elastic_apply(x: torch.Tensor, p: Elastic, shift: torch.Tensor,
                  fields: torch.Tensor) -> torch.Tensor:
    """A random affine warp (CIFAR-10-C only), then a smooth random displacement field.

    ``shift`` ``[N, 3, 2]`` moves the three affine control points, ``fields`` ``[N, 2, H, W]``
    (x then y) are the raw displacements; both uniform in [-1, 1] before scaling.
    """
    n, _, h, w = x.shape
    if p.affine > 0:
        x = _affine_warp(x, shift * p.affine * h)
    moves = ops.gaussian_filter(fields, (p.sigma * h, p.sigma * w), "reflect", truncate=3.0)
    moves = moves * (p.amplitude * h)
    rows = torch.arange(h, device=x.device, dtype=x.dtype)[None, :, None]
    cols = torch.arange(w, device=x.device, dtype=x.dtype)[None, None, :]
    return ops.bilinear_sample(x, rows + moves[:, 1], cols + moves[:, 0], "reflect")


def _affine_warp(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """OpenCV's ``warpAffine`` (bilinear, reflect-101) by the affine map taking three points
    around the centre to themselves plus ``shift``."""
    n, _, h, w = x.shape
    centre = torch.tensor([h // 2, w // 2], dtype=torch.float64, device=x.device)
    side = min(h, w) // 3
    source = torch.stack([centre + side, centre + torch.tensor([side, -side], device=x.device),
                          centre - side])  # (x, y) points, as the original passes them
    target = source + shift
    solve_from = torch.cat([source, torch.ones(3, 1, dtype=torch.float64, device=x.device)], 1)
    forward = torch.linalg.solve(solve_from.expand(n, 3, 3), target).transpose(1, 2)  # [N, 2, 3]
    linear_inv = torch.linalg.inv(forward[:, :, :2])
    ys, xs = torch.meshgrid(torch.arange(h, device=x.device, dtype=torch.float64),
                            torch.arange(w, device=x.device, dtype=torch.float64), indexing="ij")
    grid = torch.stack([xs.reshape(-1), ys.reshape(-1)], 1)  # [HW, (x, y)]
    src = (grid[None] - forward[:, None, :, 2]) @ linear_inv.transpose(1, 2)
    return ops.bilinear_sample(x, src[..., 1].reshape(n, h, w).to(x.dtype),
                               src[..., 0].reshape(n, h, w).to(x.dtype), "mirror")


def pixelate(x: torch.Tensor, factor: float, gen: torch.Generator) -> torch.Tensor:
    """Pillow's box down-sampling to ``int(side * factor)`` (columns then rows, each pass
    rounded to uint8 levels), then nearest up-sampling back."""
    _, _, h, w = x.shape
    sh, sw = int(h * factor), int(w * factor)
    levels = torch.round(x * 255)
    levels = torch.floor(levels @ _box_matrix(w, sw).to(x).T + 0.5)
    levels = torch.floor(_box_matrix(h, sh).to(x) @ levels + 0.5)
    rows = ((torch.arange(h) + 0.5) * sh / h).long().to(x.device)
    cols = ((torch.arange(w) + 0.5) * sw / w).long().to(x.device)
    return levels[:, :, rows][:, :, :, cols] / 255


def _box_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """Pillow's BOX resampling weights: input pixels whose centres fall in each output pixel."""
    scale = n_in / n_out
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for o in range(n_out):  # n_out weights rows, built once per call on the CPU
        centre = (o + 0.5) * scale
        lo = max(int(centre - scale / 2 + 0.5), 0)
        hi = min(int(centre + scale / 2 + 0.5), n_in)
        t = (torch.arange(lo, hi, dtype=torch.float64) - centre + 0.5) / max(scale, 1.0)
        m[o, lo:hi] = ((t > -0.5) & (t <= 0.5)).double()
    return m / m.sum(1, keepdim=True)


def jpeg_compression(x: torch.Tensor, quality: int, gen: torch.Generator) -> torch.Tensor:
    """Encode and decode with Pillow's JPEG codec at ``quality`` (one image per call).

    The raw codec calls give the bytes `Image.save` writes (same defaults: 4:2:0 chroma
    subsampling, standard tables) without the file-object and format-detection overhead.
    """
    n, c, h, w = x.shape
    mode = "L" if c == 1 else "RGB"
    images = torch.round(x * 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = np.empty_like(images)
    for i, image in enumerate(images):
        data = Image.fromarray(image[..., 0] if c == 1 else image).tobytes("jpeg", mode, quality)
        decoded = Image.frombytes(mode, (w, h), data, "jpeg", mode, "")
        out[i] = np.asarray(decoded).reshape(h, w, c)
    return torch.from_numpy(out).to(x.device).permute(0, 3, 1, 2).to(x.dtype) / 255
