"""Corruption speed: images/s per corruption, ours (batched tensors) vs `imagecorruptions`
(per image, NumPy/OpenCV/scikit-image) on the same 32x32 images, severities 1-5, side by side.

    THRESHER_DATA=/path/to/data .venv/bin/python benchmarks/corruptions.py [--full]

Both sides use the ImageNet-C constants (the reference's). The reference runs in the optional
environment benchmarks/.venv-ref (see tests/test_corrupt_fidelity.py), in a subprocess, on the
first --ref-images of the images; frost textures are taken from that environment too. Overall
ratio: total time per image over all 15 corruptions, reference / ours (target >= 20x).
``--full`` also times generating the whole CIFAR-10-C set (15 x 5 x 10,000, cifar constants).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from thresher.data import DataError, load
from thresher.data.corrupt import BENCHMARK, corrupt

ROOT = Path(__file__).resolve().parent
REF_PYTHON = ROOT / ".venv-ref" / "bin" / "python"


def test_images(n: int) -> torch.Tensor:
    """CIFAR-10 test images when THRESHER_DATA has them, else smooth random images."""
    try:
        return load("cifar10", "test").images[:n]
    except DataError:
        g = torch.Generator().manual_seed(0)
        coarse = torch.rand((n, 3, 4, 4), generator=g)
        smooth = torch.nn.functional.interpolate(coarse, size=32, mode="bilinear")
        return (smooth * 255).to(torch.uint8)


def time_ours(images: torch.Tensor, names: list[str], preset: str) -> dict[str, float]:
    """Seconds per image for each corruption, all five severities."""
    out = {}
    for name in names:
        corrupt(images[:8], name, 1, preset)  # warm-up (texture files, kernels)
        started = time.perf_counter()
        for severity in range(1, 6):
            corrupt(images, name, severity, preset)
        out[name] = (time.perf_counter() - started) / (5 * len(images))
    return out


def time_reference(images: torch.Tensor, names: list[str]) -> dict[str, float] | None:
    if not REF_PYTHON.exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "images.npy"
        np.save(path, images.permute(0, 2, 3, 1).numpy())
        done = subprocess.run([str(REF_PYTHON), str(ROOT / "reference.py"), str(path),
                               ",".join(names), "1,2,3,4,5"], capture_output=True, text=True,
                              check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def frost_textures_from_reference_env() -> None:
    """Point THRESHER_FROST_DIR at the reference environment's frost files if unset."""
    if os.environ.get("THRESHER_FROST_DIR"):
        return
    for folder in (ROOT / ".venv-ref").glob("lib/python*/site-packages/imagecorruptions/frost"):
        os.environ["THRESHER_FROST_DIR"] = str(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="images for ours")
    parser.add_argument("--ref-images", type=int, default=100, help="images for the reference")
    parser.add_argument("--full", action="store_true", help="also time the full CIFAR-10-C set")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice; "
                        "1 is faster on a CPU shared with other jobs)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    frost_textures_from_reference_env()
    images = test_images(args.images)
    names = list(BENCHMARK)
    print(f"{len(images)} images (reference: first {args.ref_images}), 32x32, severities 1-5; "
          f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")
    ours = time_ours(images, names, "imagenet")
    ours_cifar = time_ours(images, names, "cifar")
    ref = time_reference(images[:args.ref_images], names)
    print(f"{'corruption':18s} {'ours img/s':>11s} {'(cifar)':>9s} {'reference':>10s} "
          f"{'ratio':>7s}")
    for name in names:
        line = f"{name:18s} {1 / ours[name]:11.0f} {1 / ours_cifar[name]:9.0f}"
        if ref:
            line += f" {1 / ref[name]:10.0f} {ref[name] / ours[name]:7.1f}x"
        print(line)
    total, total_cifar = sum(ours.values()), sum(ours_cifar.values())
    line = f"{'all 15 (per image)':18s} {1 / total:11.1f} {1 / total_cifar:9.1f}"
    if ref:
        line += f" {1 / sum(ref.values()):10.1f} {sum(ref.values()) / total:7.1f}x  (target >= 20x)"
    print(line)
    if args.full:
        test = load("cifar10", "test").images
        started = time.perf_counter()
        for name in names:
            for severity in range(1, 6):
                corrupt(test, name, severity, "cifar")
        seconds = time.perf_counter() - started
        print(f"full CIFAR-10-C (15 x 5 x {len(test)}): {seconds:.0f} s (target < 300 s)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
