"""Fidelity table: mean |ours - imagecorruptions| in uint8 levels per corruption and severity
1-5, ImageNet-C constants, on the same 32x32 images and (where the reference draws random
numbers) the same draws. The bounds that hold are asserted by tests/test_corrupt_fidelity.py,
which takes its pairs of outputs from here.

Needs the optional environment with `imagecorruptions` 1.1.2 (recipe in that test's docstring):

    benchmarks/.venv-ref/bin/python benchmarks/corrupt_fidelity.py
"""

from __future__ import annotations

import numpy as np
import torch

from reference import load_imagecorruptions, reference
from thresher.data.corrupt import PRESETS, corrupt, ops
from thresher.data.corrupt.blur import glass_apply
from thresher.data.corrupt.digital import elastic_apply
from thresher.data.corrupt.spatter import spatter_apply
from thresher.data.corrupt.weather import (
    fog_apply,
    frost_apply,
    frost_textures,
    plasma_fractal,
    snow_apply,
)

N = 48
PARAMS = PRESETS["imagenet"].params
# compared pixel for pixel, our apply step given the reference's draws where it draws
DETERMINISTIC = ("brightness", "contrast", "saturate", "pixelate", "jpeg_compression",
                 "defocus_blur", "zoom_blur", "gaussian_blur", "motion_blur", "glass_blur",
                 "snow", "frost", "fog", "elastic_transform", "spatter")
NOISES = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise")


def sample_images(n: int = N) -> torch.Tensor:
    """CIFAR-like test images: smooth colour fields with sharp speckles."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand((n, 3, 4, 4), generator=g)
    smooth = torch.nn.functional.interpolate(coarse, size=32, mode="bilinear",
                                             align_corners=False)
    edges = (torch.rand((n, 3, 32, 32), generator=g) > 0.97).float()
    return ((0.8 * smooth + 0.2 * edges) * 255).round().to(torch.uint8)


def hwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(0, 2, 3, 1).numpy()


def levels(x: torch.Tensor) -> np.ndarray:
    return hwc(ops.truncate_levels(x).to(torch.uint8))


def mad(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference in uint8 levels."""
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def reference_all(ic, images: torch.Tensor, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """The reference on each image, NumPy's global seed set to ``seed + i`` for image i."""
    out = []
    for i, image in enumerate(hwc(images)):
        np.random.seed(seed + i)
        out.append(reference(ic, image, name, severity))
    return np.stack(out)


def ours_with_reference_draws(ic, images: torch.Tensor, name: str, severity: int,
                              seed: int = 0) -> np.ndarray:
    """Our apply step fed the random numbers the reference draws under the same NumPy seeds."""
    p = PARAMS[name][severity - 1]
    x = images.float() / 255
    n, _, h, w = x.shape
    if name not in ("motion_blur", "glass_blur", "snow", "frost", "fog", "elastic_transform",
                    "spatter"):
        return hwc(corrupt(images, name, severity, "imagenet"))
    draws = []
    for i in range(n):
        rs = np.random.RandomState(seed + i)
        if name == "motion_blur":
            draws.append(rs.uniform(-45, 45))
        elif name == "glass_blur":
            draws.append(rs.randint(-p.delta, p.delta, size=(p.iterations, h - 2 * p.delta,
                                                             w - 2 * p.delta, 2)))
        elif name == "snow":
            draws.append((rs.normal(size=(h, w), loc=p.mean, scale=p.std), rs.uniform(-135, -45)))
        elif name == "frost":
            textures = frost_textures(p.scale, h, w)
            k = rs.randint(5)
            t = textures[k]
            draws.append((k, rs.randint(0, t.shape[1] - h), rs.randint(0, t.shape[2] - w)))
        elif name == "spatter":
            draws.append(rs.normal(size=(h, w), loc=p.mean, scale=p.std))
        elif name == "elastic_transform":
            m = h * 0.005
            draws.append((rs.uniform(-m, m, size=(h, w)) / m, rs.uniform(-m, m, size=(h, w)) / m))
    if name == "motion_blur":
        return levels(ops.motion_blur(x, p.radius, p.sigma, torch.tensor(draws)))
    if name == "glass_blur":
        return levels(glass_apply(x, p, torch.from_numpy(np.stack(draws, 1))))
    if name == "snow":
        field = torch.from_numpy(np.stack([d[0] for d in draws]))[:, None].float()
        return levels(snow_apply(x, p, field, torch.tensor([d[1] for d in draws])))
    if name == "frost":
        which = torch.tensor([d[0] for d in draws])
        corner = torch.tensor([[d[1], d[2]] for d in draws])
        return levels(frost_apply(x, p, frost_textures(p.scale, h, w), which, corner))
    if name == "spatter":
        return levels(spatter_apply(x, p, torch.from_numpy(np.stack(draws))[:, None]))
    if name == "elastic_transform":
        fields = torch.from_numpy(np.array([[d[0], d[1]] for d in draws])).float()
        return levels(elastic_apply(x, p, torch.zeros(n, 3, 2, dtype=torch.float64), fields))
    raise AssertionError(name)


def fog_pair(ic, images: torch.Tensor, severity: int) -> tuple[np.ndarray, np.ndarray]:
    """Fog with one shared fractal map per image, swapped into the reference for each image."""
    p = PARAMS["fog"][severity - 1]
    maps = plasma_fractal(len(images), 32, p.decay, torch.Generator().manual_seed(severity),
                          torch.device("cpu"))
    ours = levels(fog_apply(images.float() / 255, p, maps[:, None].float()))
    original, ref = ic.plasma_fractal, []
    try:
        for image, m in zip(hwc(images), maps.numpy()):
            ic.plasma_fractal = lambda mapsize=256, wibbledecay=3, m=m: m
            ref.append(reference(ic, image, "fog", severity))
    finally:
        ic.plasma_fractal = original
    return ours, np.stack(ref)


def spatter_pair(ic, images: torch.Tensor, severity: int) -> tuple[np.ndarray, np.ndarray,
                                                                   np.ndarray]:
    """Spatter as (ours, reference, blank): where the thresholded field is empty the reference
    divides 0 by 0 and writes a black image (``blank``); ours leaves it as it was."""
    ours = ours_with_reference_draws(ic, images, "spatter", severity)
    ref = reference_all(ic, images, "spatter", severity)
    return ours, ref, ref.reshape(len(ref), -1).max(1) == 0


def pair(ic, images: torch.Tensor, name: str, severity: int) -> tuple[np.ndarray, np.ndarray]:
    """(ours, reference) for one corruption of `DETERMINISTIC`, images where both are defined."""
    if name == "fog":
        return fog_pair(ic, images, severity)
    if name == "spatter":
        ours, ref, blank = spatter_pair(ic, images, severity)
        return ours[~blank], ref[~blank]
    return (ours_with_reference_draws(ic, images, name, severity),
            reference_all(ic, images, name, severity))


def main() -> None:
    ic, images = load_imagecorruptions(), sample_images()
    print("mean |ours - imagecorruptions| (uint8 levels), severities 1-5")
    for name in sorted(DETERMINISTIC):
        cells = [mad(*pair(ic, images, name, severity)) for severity in range(1, 6)]
        print(f"{name:18s} " + " ".join(f"{c:6.3f}" for c in cells))


if __name__ == "__main__":
    main()
