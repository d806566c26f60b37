"""Common corruptions (Hendrycks & Dietterich, ICLR 2019) as batched tensor operations.

`corrupt` applies one of the 15 benchmark corruptions (plus extras) at severity 1-5 to uint8
images ``[N, C, H, W]`` on their device: pixels go to [0, 1] floats, the corruption runs on the
whole batch (in chunks of about 4 M values), and the result is clipped and truncated to uint8
as the published datasets were (``np.uint8`` of floats in [0, 255]). Randomness comes from a
generator seeded by (seed, corruption, severity, chunk index), so a seed fixes the output.

`corrupt_dataset` does the same for an `ArrayDataset`; `load("cifar10-c:fog:3", "test")` is the
corrupted test split: read from the published release when its folder is in the data folder
(``CIFAR-10-C/fog.npy`` + ``labels.npy``, see `official_split`), otherwise generated from the base
dataset with the ``cifar`` constants and cached like any decoded split.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from thresher.data import cache
from thresher.data.corrupt import blur, digital, noise, ops, spatter, weather
from thresher.data.corrupt.presets import PRESETS, Preset
from thresher.data.dataset import ArrayDataset
from thresher.data.formats import DataError

Corruption = Callable[[torch.Tensor, object, torch.Generator], torch.Tensor]

# The 15 benchmark corruptions in the published order, then the extras (held-out in the paper).
CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": noise.gaussian_noise,
    "shot_noise": noise.shot_noise,
    "impulse_noise": noise.impulse_noise,
    "defocus_blur": blur.defocus_blur,
    "glass_blur": blur.glass_blur,
    "motion_blur": blur.motion_blur,
    "zoom_blur": blur.zoom_blur,
    "snow": weather.snow,
    "frost": weather.frost,
    "fog": weather.fog,
    "brightness": digital.brightness,
    "contrast": digital.contrast,
    "elastic_transform": digital.elastic_transform,
    "pixelate": digital.pixelate,
    "jpeg_compression": digital.jpeg_compression,
    "speckle_noise": noise.speckle_noise,
    "gaussian_blur": blur.gaussian_blur,
    "spatter": spatter.spatter,
    "saturate": digital.saturate,
}
BENCHMARK = tuple(CORRUPTIONS)[:15]
SEVERITIES = (1, 2, 3, 4, 5)
CHUNK_VALUES = 1 << 22  # values per chunk: 1365 CIFAR images, ~50 MB per float copy
VERSION = 2  # bump when an output changes, to orphan cached corrupted splits
OFFICIAL_FOLDERS = {"cifar10": "CIFAR-10-C", "cifar100": "CIFAR-100-C"}  # as the releases unpack
NAME = re.compile(r"(?P<base>.+?)-c:(?P<corruption>[^:]*):(?P<severity>[^:]*)", re.IGNORECASE)

__all__ = ["BENCHMARK", "CORRUPTIONS", "PRESETS", "SEVERITIES", "check_resources", "corrupt",
           "corrupt_dataset", "get_preset", "is_release", "load_corrupted", "official_split",
           "parse_corrupted_name"]


def get_preset(preset: str | Preset) -> Preset:
    if isinstance(preset, Preset):
        return preset
    if preset not in PRESETS:
        raise DataError(f"unknown corruption preset {preset!r}; choose one of "
                        f"{', '.join(PRESETS)}")
    return PRESETS[preset]


def check(name: str, severity: int) -> None:
    """Reject an unknown corruption or severity, naming the valid ones."""
    if name not in CORRUPTIONS:
        raise DataError(f"unknown corruption {name!r}; choose one of {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise DataError(f"severity must be one of {', '.join(map(str, SEVERITIES))}, "
                        f"got {severity!r}")


def check_resources(names: list[str] | tuple[str, ...]) -> None:
    """Fail before any work when a corruption needs files that are missing (frost's photos)."""
    if "frost" in names:
        weather.frost_dir()


def corrupt(images: torch.Tensor, name: str, severity: int, preset: str | Preset = "cifar",
            seed: int = 0) -> torch.Tensor:
    """``images`` (uint8 ``[N, C, H, W]``, C = 1 or 3) with one corruption at one severity."""
    check(name, severity)
    spec = get_preset(preset)
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"corrupt needs uint8 images [N, C, H, W] with C = 1 or 3, got "
                         f"{images.dtype} {tuple(images.shape)}")
    fn, param = CORRUPTIONS[name], spec.params[name][severity - 1]
    per_chunk = max(1, CHUNK_VALUES // images[0].numel())
    out = torch.empty_like(images)
    for k, start in enumerate(range(0, len(images), per_chunk)):
        gen = _generator(seed, name, severity, k, images.device)
        x = images[start:start + per_chunk].to(torch.float32) / 255
        out[start:start + per_chunk] = ops.truncate_levels(fn(x, param, gen)).to(torch.uint8)
    return out


def _generator(seed: int, name: str, severity: int, chunk: int,
               device: torch.device) -> torch.Generator:
    key = np.random.SeedSequence([seed, zlib.crc32(name.encode()), severity, chunk])
    return torch.Generator(device=device).manual_seed(int(key.generate_state(1, np.uint64)[0] >> 1))


def corrupt_dataset(data: ArrayDataset, name: str, severity: int,
                    preset: str | Preset = "cifar", seed: int = 0) -> ArrayDataset:
    """A corrupted copy of ``data`` named like ``cifar10-c:fog:3``, labels unchanged."""
    images = corrupt(data.images, name, severity, preset, seed)
    meta = {**data.meta, "corruption": name, "severity": severity,
            "preset": get_preset(preset).name, "corruption_seed": seed}
    return ArrayDataset(images, data.labels.clone(), list(data.classes),
                        f"{data.name}-c:{name}:{severity}", meta)


def parse_corrupted_name(name: str) -> tuple[str, str, int] | None:
    """``"cifar10-c:fog:3"`` -> ``("cifar10", "fog", 3)``; None for a name without a colon."""
    if ":" not in name:
        return None
    match = NAME.fullmatch(name)
    if match is None:
        raise DataError(f"corrupted dataset names look like <dataset>-c:<corruption>:<severity>, "
                        f"e.g. cifar10-c:fog:3; got {name!r}")
    severity = match["severity"]
    check(match["corruption"].lower(), int(severity) if severity.isdigit() else severity)
    return match["base"], match["corruption"].lower(), int(severity)


def is_release(preset: str | Preset, seed: int) -> bool:
    """Whether these settings are what the published files hold: the CIFAR-10-C constants at
    seed 0 (so the published rows may stand in for generated ones)."""
    return get_preset(preset).name == "cifar" and seed == 0


def official_split(base: str, corruption: str, severity: int,
                   data_dir: str | Path | None = None,
                   classes: list[str] | None = None) -> ArrayDataset | None:
    """One severity of the published corrupted test set, or None when its files are absent.

    The releases (and `thresher corrupt`) store ``<corruption>.npy`` as uint8 ``(5 N, H, W, C)``,
    severities 1-5 stacked, beside ``labels.npy``; only the requested rows are read. ``classes``
    names the labels (default: the clean test split's names when at hand, else numbers).
    """
    from thresher.data.sources import load, resolve_data_dir

    check(corruption, severity)
    if base.lower() not in OFFICIAL_FOLDERS:
        return None
    folder = resolve_data_dir(data_dir) / OFFICIAL_FOLDERS[base.lower()]
    images_file, labels_file = folder / f"{corruption}.npy", folder / "labels.npy"
    if not images_file.is_file():
        return None
    if not labels_file.is_file():
        raise DataError(f"{folder} has {images_file.name} but no labels.npy")
    images, labels = np.load(images_file, mmap_mode="r"), np.load(labels_file, mmap_mode="r")
    if (images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] not in (1, 3)
            or len(images) != len(labels) or len(images) % 5):
        raise DataError(f"{images_file}: expected uint8 (5 N, H, W, C) beside {len(labels)} "
                        f"labels, found {images.dtype} {images.shape}")
    n = len(images) // 5
    rows = slice((severity - 1) * n, severity * n)
    x = torch.from_numpy(np.array(images[rows])).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(np.asarray(labels[rows], dtype=np.int64))
    if classes is None:
        try:
            classes = load(base, "test", data_dir, download=False).classes
        except DataError:
            classes = [str(i) for i in range(int(y.max()) + 1)]
    meta = {"corruption": corruption, "severity": severity, "source": "official",
            "files": [str(images_file), str(labels_file)]}
    return ArrayDataset(x, y, list(classes), f"{base.lower()}-c:{corruption}:{severity}", meta)


def load_corrupted(base: str, corruption: str, severity: int, split: str = "test",
                   data_dir: str | Path | None = None, download: bool = True,
                   preset: str = "cifar", seed: int = 0, **options) -> ArrayDataset:
    """One split of ``base`` corrupted: the published files when present (test split, ``cifar``
    constants, seed 0, which is what they are), else generated once and served from the cache."""
    from thresher.data.sources import get_source, load, resolve_data_dir

    check(corruption, severity)
    spec = get_preset(preset)
    if split == "test" and is_release(spec, seed) and not options:
        published = official_split(base, corruption, severity, data_dir)
        if published is not None:
            return published
    clean = load(base, split, data_dir, download, **options)
    if not get_source(base).cached:
        return corrupt_dataset(clean, corruption, severity, spec, seed)
    key = {"corruption": corruption, "severity": severity, "preset": spec.name, "seed": seed,
           "version": VERSION, "options": options}
    stem = cache.entry(cache.cache_dir(resolve_data_dir(data_dir)), f"{clean.name}_c", split,
                       key, [Path(f) for f in clean.meta["files"]])
    hit = cache.get(stem)
    if hit is not None:
        meta = {**clean.meta, "corruption": corruption, "severity": severity,
                "preset": spec.name, "corruption_seed": seed}
        return ArrayDataset(hit[0], hit[1], hit[2], f"{clean.name}-c:{corruption}:{severity}", meta)
    out = corrupt_dataset(clean, corruption, severity, spec, seed)
    cache.put(stem, out.images.cpu().numpy(), out.labels.cpu().numpy(), out.classes)
    return out
