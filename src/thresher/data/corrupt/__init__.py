"""Common corruptions (Hendrycks & Dietterich, ICLR 2019) as batched tensor operations.

`corrupt` applies one of the 15 benchmark corruptions (plus extras) at severity 1-5 to uint8
images ``[N, C, H, W]`` on their device: pixels go to [0, 1] floats, the corruption runs on the
whole batch (in chunks of about 4 M values), and the result is clipped and truncated to uint8
as the published datasets were (``np.uint8`` of floats in [0, 255]). Randomness comes from a
generator seeded by (seed, corruption, severity, chunk index), so a seed fixes the output.

`corrupt_dataset` does the same for an `ArrayDataset`. Corrupted splits by name
(``cifar10-c:fog:3``), read from the published files or generated, are `thresher.data.corrupted`'s.
This package knows nothing of data folders, so every data module may import it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch

from thresher.data.corrupt import blur, digital, noise, ops, spatter, weather
from thresher.data.corrupt.presets import PRESETS, Preset
from thresher.data.dataset import ArrayDataset
from thresher.data.formats import DataError
from thresher.registry import Registry
from thresher.seeding import make_generator

Corruption = Callable[[torch.Tensor, object, torch.Generator], torch.Tensor]

# The 15 benchmark corruptions in the published order, then the extras (held-out in the paper).
CORRUPTIONS: Registry[Corruption] = Registry("corruption", error=DataError)
for _fn in (noise.gaussian_noise, noise.shot_noise, noise.impulse_noise, blur.defocus_blur,
            blur.glass_blur, blur.motion_blur, blur.zoom_blur, weather.snow, weather.frost,
            weather.fog, digital.brightness, digital.contrast, digital.elastic_transform,
            digital.pixelate, digital.jpeg_compression, noise.speckle_noise, blur.gaussian_blur,
            spatter.spatter, digital.saturate):
    CORRUPTIONS.register(_fn.__name__, _fn)
BENCHMARK = tuple(CORRUPTIONS)[:15]
SEVERITIES = (1, 2, 3, 4, 5)
CHUNK_VALUES = 1 << 22  # values per chunk: 1365 CIFAR images, ~50 MB per float copy
NAME = re.compile(r"(?P<base>.+?)-c:(?P<corruption>[^:]*):(?P<severity>[^:]*)", re.IGNORECASE)

__all__ = ["BENCHMARK", "CORRUPTIONS", "PRESETS", "SEVERITIES", "check", "check_resources",
           "corrupt", "corrupt_dataset", "get_preset", "is_release", "parse_corrupted_name"]


def get_preset(preset: str | Preset) -> Preset:
    """A preset given by name or as itself; an unknown name raises `DataError`."""
    return preset if isinstance(preset, Preset) else PRESETS[preset]


def check(name: str, severity: int) -> None:
    """Reject an unknown corruption or severity, naming the valid ones."""
    CORRUPTIONS.get(name)
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
    """Each chunk's own stream, so no chunk's draws depend on how many came before it."""
    return make_generator(seed, name, severity, chunk, device=device)


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
