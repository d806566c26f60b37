"""Fidelity to `imagecorruptions` 1.1.2 (the ImageNet-C constants) on the same 32x32 images.

Runs only where imagecorruptions imports; skipped in the main environment. To run it:

    python3 -m venv benchmarks/.venv-ref
    benchmarks/.venv-ref/bin/pip install "setuptools<81" torch==2.13.0 \
        imagecorruptions==1.1.2 pytest
    benchmarks/.venv-ref/bin/pip install -e .
    benchmarks/.venv-ref/bin/python -m pytest tests/test_corrupt_fidelity.py -v

(benchmarks/reference.py shims the release's NumPy 2 / scikit-image breakages at import.)

Where the reference draws random numbers, the same draws are made with NumPy's global seed and
handed to our corruption's apply step, so those comparisons are pixel for pixel too; only the
four noises are compared in distribution. Bounds are mean absolute differences in uint8 levels
(``BOUNDS``), each with its reason; the pairs of outputs come from benchmarks/corrupt_fidelity.py,
which prints the measured values as a table:

    benchmarks/.venv-ref/bin/python benchmarks/corrupt_fidelity.py
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from thresher.data.corrupt import corrupt

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from corrupt_fidelity import (  # noqa: E402
    DETERMINISTIC,
    NOISES,
    hwc,
    mad,
    pair,
    reference_all,
    sample_images,
    spatter_pair,
)

pytestmark = pytest.mark.skipif(importlib.util.find_spec("imagecorruptions") is None,
                                reason="imagecorruptions is not installed (optional env)")

# corruption -> (bound on the mean |ours - reference| in uint8 levels, why it is not zero)
BOUNDS = {
    "brightness": (0.1, "at severities 2 and 4 the step times 255 is whole, so the brightest "
                        "channel lands exactly on a level, which float64 error in the "
                        "reference's HSV round trip truncates to the level below about half "
                        "the time (we add 1e-4 before truncating)"),
    "contrast": (0.01, "float32 vs float64 at truncation edges"),
    "saturate": (0.15, "at severity 3 (scale 2, no shift) the exact middle channel 2c - V is a "
                       "whole level, which the reference's float64 hue round trip truncates "
                       "to the level below for about 12% of values; elsewhere <= 0.01"),
    "pixelate": (0.01, "Pillow's fixed-point box weights vs float weights"),
    "jpeg_compression": (0.0, "the same Pillow codec"),
    "defocus_blur": (0.1, "same kernel; float32 sums in another order than OpenCV's at "
                          "truncation edges (smallest disk: most pixels near a level)"),
    "zoom_blur": (0.02, "same bilinear weights; float32 sums at truncation edges"),
    "gaussian_blur": (0.01, "same kernel; float32 vs float64"),
    "motion_blur": (0.05, "same taps and angle; float32 vs float64 sums"),
    "glass_blur": (0.02, "same moves; a first-blur value at a truncation edge moves with it"),
    "snow": (0.02, "same draws; float32 zoom and grey conversion at rounding edges"),
    "frost": (0.05, "same crops; the texture's bicubic resize is float here, fixed point in "
                    "OpenCV, so a texture level can differ by one"),
    "fog": (0.01, "same fractal map; float32 vs float64"),
    "elastic_transform": (0.01, "same fields; float32 coordinates at interpolation edges"),
    "spatter": (0.01, "same fields; a chamfer distance can differ by 2e-6 where OpenCV's "
                      "two scans add the same steps in another order"),
}


@pytest.fixture(scope="module")
def ic():
    from reference import load_imagecorruptions

    return load_imagecorruptions()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return sample_images()


@pytest.mark.parametrize("severity", [1, 3, 5])
@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_matches_the_reference_pixel_for_pixel(ic, images, name, severity):
    if name == "spatter":  # where the reference writes black, ours keeps the image
        ours, ref, blank = spatter_pair(ic, images, severity)
        assert np.array_equal(ours[blank], hwc(images)[blank])
        ours, ref = ours[~blank], ref[~blank]
    else:
        ours, ref = pair(ic, images, name, severity)
    bound, why = BOUNDS[name]
    assert mad(ours, ref) <= bound, f"{name} s{severity}: {mad(ours, ref):.3f} > {bound} ({why})"


def test_every_compared_corruption_has_a_bound():
    assert set(BOUNDS) == set(DETERMINISTIC)


@pytest.mark.parametrize("severity", [1, 3, 5])
@pytest.mark.parametrize("name", NOISES)
def test_noise_matches_the_reference_in_distribution(ic, images, name, severity):
    """Mean |change| and its spread within 5% (about 150 k values each)."""
    clean = hwc(images).astype(np.float64)
    ours = hwc(corrupt(images, name, severity, "imagenet")).astype(np.float64) - clean
    ref = reference_all(ic, images, name, severity).astype(np.float64) - clean
    assert np.abs(ours).mean() == pytest.approx(np.abs(ref).mean(), rel=0.05)
    assert ours.std() == pytest.approx(ref.std(), rel=0.05)
    if name == "impulse_noise":
        def changed(d):
            return np.mean((d != 0) & ((d + clean == 0) | (d + clean == 255)))

        assert changed(ours) == pytest.approx(changed(ref), rel=0.1)
