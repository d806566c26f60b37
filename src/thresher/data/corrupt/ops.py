"""Tensor building blocks shared by the corruptions: padding by index, separable filters,
interpolation matrices and per-image shifted sums, all over a whole ``[N, C, H, W]`` batch.

Borders follow the libraries the original scripts called: ``nearest`` (edge pixel repeated),
``reflect`` (scipy/skimage: ``d c b a | a b c d``) and ``mirror`` (OpenCV's default
reflect-101: ``d c b | a b c d``).
"""

from __future__ import annotations

import math

import torch


def fold_index(i: torch.Tensor, n: int, mode: str) -> torch.Tensor:
    """Map any integer positions to ``[0, n)`` by the border ``mode``."""
    if mode == "nearest" or n == 1:
        return i.clamp(0, n - 1)
    if mode == "reflect":
        m = i.remainder(2 * n)
        return torch.where(m < n, m, 2 * n - 1 - m)
    if mode == "mirror":
        m = i.remainder(2 * n - 2)
        return torch.where(m < n, m, 2 * n - 2 - m)
    raise ValueError(f"unknown border mode {mode!r}; use nearest, reflect or mirror")


def gaussian_kernel(sigma: float, truncate: float) -> torch.Tensor:
    """scipy's 1-D Gaussian: radius ``int(truncate * sigma + 0.5)``, weights summing to one."""
    radius = int(truncate * sigma + 0.5)
    if sigma <= 0 or radius == 0:
        return torch.ones(1, dtype=torch.float64)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def filter_matrix(n: int, kernel: torch.Tensor, mode: str) -> torch.Tensor:
    """The ``[n, n]`` matrix of correlating a length-n signal with an odd ``kernel``, borders
    folded in: filtering becomes one matrix product (faster here than a one-channel conv)."""
    r = len(kernel) // 2
    rows = torch.arange(n)[:, None].expand(n, len(kernel))
    cols = fold_index(rows + torch.arange(-r, r + 1)[None], n, mode)
    m = torch.zeros(n, n, dtype=torch.float64)
    m.index_put_((rows, cols), kernel.to(torch.float64)[None].expand(n, -1), accumulate=True)
    return m


def gaussian_filter(x: torch.Tensor, sigma: float | tuple[float, float], mode: str,
                    truncate: float = 4.0) -> torch.Tensor:
    """``scipy.ndimage.gaussian_filter`` over H and W of every channel."""
    sy, sx = sigma if isinstance(sigma, tuple) else (sigma, sigma)
    h, w = x.shape[-2:]
    return apply_rows_cols(x, filter_matrix(h, gaussian_kernel(sy, truncate), mode),
                           filter_matrix(w, gaussian_kernel(sx, truncate), mode))


def filter2d(x: torch.Tensor, kernel: torch.Tensor, mode: str) -> torch.Tensor:
    """Correlate every channel with an odd-sized 2-D kernel (OpenCV ``filter2D``), as a sum of
    separable filters from the kernel's singular value decomposition (exact to float error)."""
    h, w = x.shape[-2:]
    u, s, vt = torch.linalg.svd(kernel.to(torch.float64))
    rank = int((s > s[0] * 1e-7).sum())
    return sum_rows_cols(x, [filter_matrix(h, u[:, k] * s[k], mode) for k in range(rank)],
                         [filter_matrix(w, vt[k], mode) for k in range(rank)])


def linear_matrix(coords: torch.Tensor, n_in: int) -> torch.Tensor:
    """Rows of linear-interpolation weights sampling a length-``n_in`` signal at ``coords``
    (clamped to the ends): ``matrix @ signal`` interpolates it."""
    coords = coords.to(torch.float64).clamp(0, n_in - 1)
    lo = coords.floor().long().clamp(max=n_in - 2) if n_in > 1 else coords.long() * 0
    frac = coords - lo
    m = torch.zeros(len(coords), n_in, dtype=torch.float64)
    rows = torch.arange(len(coords))
    m[rows, lo] += 1 - frac
    if n_in > 1:
        m[rows, lo + 1] += frac
    return m


def cubic_matrix(coords: torch.Tensor, n_in: int, a: float = -0.75) -> torch.Tensor:
    """Like `linear_matrix` for OpenCV's bicubic kernel (a = -0.75, edges replicated)."""
    coords = coords.to(torch.float64)
    base = coords.floor()
    t = coords - base
    m = torch.zeros(len(coords), n_in, dtype=torch.float64)
    rows = torch.arange(len(coords))
    for k in (-1, 0, 1, 2):
        d = (t - k).abs()
        w = torch.where(d <= 1, ((a + 2) * d - (a + 3)) * d * d + 1,
                        torch.where(d < 2, ((d - 5) * d + 8) * d * a - 4 * a, 0.0))
        m.index_put_((rows, (base.long() + k).clamp(0, n_in - 1)), w, accumulate=True)
    return m


def zoom_coords(n: int, factor: float) -> torch.Tensor:
    """Where each pixel of scipy's ``zoom(order=1)`` of the centre crop ``ceil(n / factor)``
    samples the original axis; the zoomed axis has ``round(crop * factor)`` pixels."""
    crop = int(math.ceil(n / factor))
    top = (n - crop) // 2
    out = int(round(crop * factor))
    step = (crop - 1) / (out - 1) if out > 1 else 0.0
    return top + torch.arange(out, dtype=torch.float64) * step


def crop_slice(length: int, n: int, crop: str) -> slice:
    """The ``n`` pixels kept of a longer zoomed axis: about the centre or from the start."""
    start = (length - n) // 2 if crop == "center" else 0
    return slice(start, start + n)


def apply_rows_cols(x: torch.Tensor, m_rows: torch.Tensor, m_cols: torch.Tensor) -> torch.Tensor:
    """``m_rows @ image @ m_cols.T`` for every channel: a separable resampling or filter."""
    return sum_rows_cols(x, [m_rows], [m_cols])


def sum_rows_cols(x: torch.Tensor, rows: list[torch.Tensor],
                  cols: list[torch.Tensor]) -> torch.Tensor:
    """``sum_k rows[k] @ image @ cols[k].T`` for every channel.

    With several terms on small images the whole sum is one dense ``[Ho*Wo, H*W]`` map
    (Kronecker products) applied in a single large matrix product, several times faster than
    two thin products per term; otherwise the terms are accumulated one by one.
    """
    n, c, h, w = x.shape
    ho, wo = rows[0].shape[0], cols[0].shape[0]
    if len(rows) >= 4 and h * w * ho * wo <= 1 << 22:
        dense = sum(torch.kron(r.to(x), q.to(x)) for r, q in zip(rows, cols))
        return (x.reshape(n * c, h * w) @ dense.T).reshape(n, c, ho, wo)
    flat = x.reshape(n * c, h, w)
    out = x.new_zeros(n * c, ho, wo)
    for r, q in zip(rows, cols):
        out.baddbmm_(r.to(x).expand(n * c, ho, h), flat @ q.to(x).T)
    return out.reshape(n, c, ho, wo)


def motion_blur(x: torch.Tensor, radius: int, sigma: float, angles: torch.Tensor) -> torch.Tensor:
    """ImageMagick's motion blur (as `imagecorruptions` ports it), one angle per image.

    Tap i of the one-sided Gaussian kernel (2 * radius + 1 taps) samples the image i pixels
    along the angle, rounded to whole pixels, edges repeated. Taps that would leave the image
    entirely are dropped without renormalising, as the port does on small images.
    """
    n, c, h, w = x.shape
    width = 2 * radius + 1
    i = torch.arange(width, dtype=torch.float64)
    kernel = torch.exp(-i ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    rad = torch.deg2rad(angles.to(torch.float64).cpu())
    py, px = width * torch.sin(rad), width * torch.cos(rad)
    hyp = torch.hypot(py, px)
    dy = torch.ceil(i[None] * py[:, None] / hyp[:, None] - 0.5).long()  # [N, width]
    dx = torch.ceil(i[None] * px[:, None] / hyp[:, None] - 0.5).long()
    weight = kernel[None] * ((dy.abs() < h) & (dx.abs() < w))
    live = [tap for tap in range(width) if bool(weight[:, tap].any())]
    # edges repeated by clamping the source row and column: no padded copy of the batch
    dev = x.device
    rows = (torch.arange(h)[None, None] + dy[:, :, None]).clamp(0, h - 1).to(dev)  # [N, T, H]
    cols = (torch.arange(w)[None, None] + dx[:, :, None]).clamp(0, w - 1).to(dev)  # [N, T, W]
    flat = x.reshape(n, c, h * w)
    weight = weight.to(x)
    out = torch.zeros_like(flat)
    for tap in live:  # a loop over kernel taps; each gathers the whole batch once
        index = (rows[:, tap, :, None] * w + cols[:, tap, None, :]).reshape(n, 1, h * w)
        out.addcmul_(weight[:, tap, None, None], flat.gather(2, index.expand(n, c, h * w)))
    return out.reshape(n, c, h, w)


def bilinear_sample(x: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor,
                    mode: str) -> torch.Tensor:
    """Sample every channel of image n at float pixel coordinates ``ys[n], xs[n]`` ([N, H, W]),
    linear interpolation between border-folded neighbours."""
    n, c, h, w = x.shape
    y0, x0 = ys.floor(), xs.floor()
    fy, fx = (ys - y0).unsqueeze(1), (xs - x0).unsqueeze(1)
    y0, x0 = y0.long(), x0.long()
    r0, r1 = fold_index(y0, h, mode) * w, fold_index(y0 + 1, h, mode) * w
    c0, c1 = fold_index(x0, w, mode), fold_index(x0 + 1, w, mode)
    flat = x.reshape(n, c, h * w)

    def at(index: torch.Tensor) -> torch.Tensor:
        return flat.gather(2, index.reshape(n, 1, -1).expand(n, c, -1)).reshape(n, c, *ys.shape[1:])

    top = at(r0 + c0) * (1 - fx) + at(r0 + c1) * fx
    bottom = at(r1 + c0) * (1 - fx) + at(r1 + c1) * fx
    return top * (1 - fy) + bottom * fy


def grey(x: torch.Tensor) -> torch.Tensor:
    """OpenCV's RGB -> grey luma ([N, 1, H, W]); a one-channel image is its own grey."""
    if x.shape[1] == 1:
        return x
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device)
    return (x * weights[None, :, None, None]).sum(1, keepdim=True)


QUANTUM = 1e-4  # added before truncating, so float rounding cannot drop a value a level


def truncate_levels(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> uint8 levels 0..255 (as float) the way ``np.uint8(x * 255)`` truncates."""
    return torch.floor(x.clamp(0, 1) * 255 + QUANTUM)
