"""Per-severity constants of the corruptions: ``cifar`` (CIFAR-10-C) and ``imagenet`` (ImageNet-C).

``cifar`` holds the constants of the CIFAR-10-C generation script (Hendrycks & Dietterich, ICLR
2019); ``imagenet`` those of ImageNet-C as the `imagecorruptions` package applies them to images
of any size. Where the two releases differ in more than numbers (how a zoomed layer is cropped,
how the frost texture is scaled, what the elastic transform does), the difference is a field of
the parameter tuple, so every corruption function reads one tuple and nothing else.
Lengths in pixels are absolute unless the field's comment says "fraction of the image side".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from thresher.data.formats import DataError
from thresher.registry import Registry


class Glass(NamedTuple):
    sigma: float  # Gaussian blur before and after the shuffle
    delta: int  # pixels move by offsets drawn from [-delta, delta - 1]
    iterations: int


class Defocus(NamedTuple):
    radius: float  # of the disk kernel
    alias_blur: float  # sigma of the 3x3 (5x5 for radius > 8) Gaussian that anti-aliases it


class Motion(NamedTuple):
    radius: int  # the kernel has 2 * radius + 1 taps along one direction
    sigma: float


class Zoom(NamedTuple):
    factors: tuple[float, ...]  # the image is averaged with its zooms by these factors
    crop: str  # "center": the zoomed image is cropped about its centre; "corner": top-left


class Snow(NamedTuple):
    mean: float  # of the Gaussian field the flakes are thresholded from
    std: float
    zoom: float
    threshold: float
    radius: int  # motion blur of the flakes
    sigma: float
    blend: float  # weight of the image against its brightened grey version
    crop: str  # as Zoom.crop


class Frost(NamedTuple):
    image_weight: float
    frost_weight: float
    scale: float | None  # texture resize factor (bilinear); None: fit to the image x1.1 (bicubic)


class Fog(NamedTuple):
    amount: float
    decay: float  # how fast the plasma fractal's roughness falls per octave


class Spatter(NamedTuple):
    mean: float  # of the Gaussian field the liquid is thresholded from
    std: float
    sigma: float  # its smoothing
    threshold: float
    intensity: float  # water: peak strength of the colour; mud: sigma of the mask's blur
    mud: bool  # brown mud instead of water


class Elastic(NamedTuple):
    amplitude: float  # displacement scale, fraction of the image side
    sigma: float  # smoothing of the displacement field, fraction of the image side
    affine: float  # random shift of the affine control points, fraction of the image side


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    params: dict[str, tuple[Any, ...]]  # corruption -> its parameters at severities 1..5


def _arange(stop: float, step: float) -> tuple[float, ...]:
    """Zoom factors as the original scripts list them (np.arange from 1, stop excluded)."""
    return tuple(float(f) for f in np.arange(1, stop, step))


CIFAR = Preset("cifar", "CIFAR-10-C (make_cifar_c.py), for 32x32 images", {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500, 250, 100, 75, 50),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "speckle_noise": (0.06, 0.1, 0.12, 0.16, 0.2),
    "defocus_blur": tuple(Defocus(*c) for c in
                          ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1))),
    "glass_blur": tuple(Glass(*c) for c in
                        ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2))),
    "motion_blur": tuple(Motion(*c) for c in ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5))),
    "zoom_blur": tuple(Zoom(_arange(stop, 0.01), "center")
                       for stop in (1.06, 1.11, 1.16, 1.21, 1.26)),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
    "spatter": tuple(Spatter(*c) for c in (
        (0.62, 0.1, 0.7, 0.7, 0.5, False), (0.65, 0.1, 0.8, 0.7, 0.5, False),
        (0.65, 0.3, 1, 0.69, 0.5, False), (0.65, 0.1, 0.7, 0.69, 0.6, True),
        (0.65, 0.1, 0.5, 0.68, 0.6, True))),
    "saturate": ((0.3, 0.0), (0.1, 0.0), (1.5, 0.0), (2.0, 0.1), (2.5, 0.2)),
    "snow": tuple(Snow(*c, crop="center") for c in (
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8))),
    "frost": tuple(Frost(a, b, 0.2) for a, b in
                   ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45))),
    "fog": tuple(Fog(*c) for c in ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75))),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    # the script's constants are multiples of IMSIZE = 32: (alpha, sigma, affine) / 32
    "elastic_transform": tuple(Elastic(*c) for c in (
        (0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05),
        (0.1, 0.03, 0.03))),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
    "jpeg_compression": (80, 65, 58, 50, 40),
})

IMAGENET = Preset("imagenet", "ImageNet-C (the imagecorruptions package), for any image size", {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
    "shot_noise": (60, 25, 12, 5, 3),
    "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
    "speckle_noise": (0.15, 0.2, 0.35, 0.45, 0.6),
    "defocus_blur": tuple(Defocus(*c) for c in
                          ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))),
    "glass_blur": tuple(Glass(*c) for c in
                        ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))),
    "motion_blur": tuple(Motion(*c) for c in ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))),
    "zoom_blur": tuple(Zoom(_arange(stop, step), "corner") for stop, step in
                       ((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03))),
    "gaussian_blur": (1.0, 2.0, 3.0, 4.0, 6.0),
    "spatter": tuple(Spatter(*c) for c in (
        (0.65, 0.3, 4, 0.69, 0.6, False), (0.65, 0.3, 3, 0.68, 0.6, False),
        (0.65, 0.3, 2, 0.68, 0.5, False), (0.65, 0.3, 1, 0.65, 1.5, True),
        (0.67, 0.4, 1, 0.65, 1.5, True))),
    "saturate": ((0.3, 0.0), (0.1, 0.0), (2.0, 0.0), (5.0, 0.1), (20.0, 0.2)),
    "snow": tuple(Snow(*c, crop="corner") for c in (
        (0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
        (0.55, 0.3, 4, 0.9, 12, 8, 0.7), (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
        (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55))),
    "frost": tuple(Frost(a, b, None) for a, b in
                   ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))),
    "fog": tuple(Fog(*c) for c in ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))),
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    # alpha 250 * (.05 ... .12) times the uniform range 0.005 of the side; sigma 0.01 of the side
    "elastic_transform": tuple(Elastic(250 * a * 0.005, 0.01, 0.0) for a in
                               (0.05, 0.065, 0.085, 0.1, 0.12)),
    "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),
    "jpeg_compression": (25, 18, 15, 10, 7),
})

PRESETS: Registry[Preset] = Registry("corruption preset", error=DataError)
PRESETS.register(CIFAR.name, CIFAR, description=CIFAR.description)
PRESETS.register(IMAGENET.name, IMAGENET, description=IMAGENET.description)
