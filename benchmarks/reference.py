"""The reference implementation, `imagecorruptions` 1.1.2, made importable on today's stack.

It lives only in the optional environment ``benchmarks/.venv-ref`` (see
tests/test_corrupt_fidelity.py for how to build it). The release predates NumPy 2 (it uses
``np.float_`` in the fog fractal) and scikit-image 0.19 (it passes ``multichannel=True`` to
``skimage.filters.gaussian`` in glass_blur and gaussian_blur): both are shimmed here, at import,
without touching Thresher. Run as a script it times the reference on an .npy of images and
prints JSON (used by benchmarks/corruptions.py to run it side by side).
"""

from __future__ import annotations

import json
import sys
import time
import warnings

import numpy as np


def load_imagecorruptions():
    """The patched ``imagecorruptions.corruptions`` module."""
    if not hasattr(np, "float_"):
        np.float_ = np.float64
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    import imagecorruptions.corruptions as ic
    import skimage.filters

    original = skimage.filters.gaussian

    def gaussian(image, sigma=1, *args, multichannel=None, **kwargs):
        if multichannel:
            kwargs["channel_axis"] = -1
        return original(image, sigma, *args, **kwargs)

    ic.gaussian = gaussian
    return ic


def reference(ic, image: np.ndarray, name: str, severity: int) -> np.ndarray:
    """One HWC uint8 image through the reference, quantised as its ``corrupt`` does."""
    from PIL import Image

    return np.uint8(getattr(ic, name)(Image.fromarray(image), severity))


def time_reference(images: np.ndarray, names: list[str], severities: list[int]) -> dict:
    """Seconds per image for each corruption over all severities (images NHWC uint8)."""
    ic = load_imagecorruptions()
    np.random.seed(0)
    out = {}
    for name in names:
        reference(ic, images[0], name, severities[0])  # warm-up (file reads, imports)
        started = time.perf_counter()
        for severity in severities:
            for image in images:
                reference(ic, image, name, severity)
        out[name] = (time.perf_counter() - started) / (len(images) * len(severities))
    return out


if __name__ == "__main__":
    path, names, severities = sys.argv[1], sys.argv[2].split(","), sys.argv[3].split(",")
    print(json.dumps(time_reference(np.load(path), names, [int(s) for s in severities])))
