"""Corrupted splits (``cifar10-c:fog:3``): the one place that chooses between the published
release files and generating the split.

The releases (and `thresher corrupt`) store ``<corruption>.npy`` as uint8 ``(5 N, H, W, C)``,
severities 1-5 stacked, beside ``labels.npy``, in ``CIFAR-10-C/`` (``CIFAR-100-C/``) of the data
folder. They hold what the ``cifar`` preset at seed 0 makes of the test split, so for exactly
those settings they stand in for generated rows; otherwise the split is generated from its base
dataset (`thresher.data.corrupt`) and cached like any decoded split. `release_folder` is where
`thresher corrupt` writes a set in that layout.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from thresher.data import cache
from thresher.data.corrupt import check, corrupt_dataset, get_preset, is_release
from thresher.data.corrupt.presets import Preset
from thresher.data.dataset import ArrayDataset
from thresher.data.formats import DataError
from thresher.data.sources import get_source, load_source, resolve_data_dir

VERSION = 2  # bump when an output changes, to orphan cached corrupted splits
OFFICIAL_FOLDERS = {"cifar10": "CIFAR-10-C", "cifar100": "CIFAR-100-C"}  # as the releases unpack
ORIGINS = ("auto", "generated", "official")  # the choices of load_corrupted's ``source``
Rows = torch.Tensor | np.ndarray | list[int]


def load_corrupted(base: str, corruption: str, severity: int, split: str = "test",
                   data_dir: str | Path | None = None, download: bool = True, *,
                   preset: str | Preset = "cifar", seed: int = 0, source: str = "auto",
                   clean: ArrayDataset | None = None, rows: Rows | None = None,
                   **options) -> ArrayDataset:
    """One split of ``base`` with one corruption at one severity; ``meta["source"]`` says
    whether it was read (``official``) or generated.

    ``source``: ``auto`` reads the published files when they hold these settings (the test
    split, preset ``cifar``, seed 0, no dataset ``options``) and are in the data folder, else
    generates; ``generated`` always generates; ``official`` reads them or raises `DataError`.
    ``clean``: the clean split already in memory (e.g. on the device): it is corrupted where it
    lies, uncached, published rows must match its length and are moved to its device.
    ``rows``: only these rows of the split; generated ones are then drawn for the rows alone, so
    random corruptions differ from the same rows of the whole generated split.
    """
    check(corruption, severity)
    spec = get_preset(preset)
    if source not in ORIGINS:
        raise DataError(f"source must be one of {', '.join(ORIGINS)}, got {source!r}")
    releasable = split == "test" and is_release(spec, seed) and not options
    if source != "generated" and releasable:
        published = official_split(base, corruption, severity, data_dir,
                                   None if clean is None else clean.classes)
        if published is not None:
            if clean is not None and len(published) != len(clean):
                raise DataError(f"{published.meta['files'][0]} holds {len(published)} images "
                                f"per severity; the {base} test split has {len(clean)}")
            published = published if rows is None else published.subset(rows)
            return published if clean is None else published.to(clean.device)
    if source == "official":
        if not releasable:
            raise DataError(f"source 'official' means the published files: the test split with "
                            f"preset 'cifar' at seed 0 and no dataset options; got split "
                            f"{split!r}, preset {spec.name!r}, seed {seed}, options {options}")
        raise _no_official_files(base, corruption, data_dir)
    if clean is None and rows is None:
        out = _generated_and_cached(base, corruption, severity, split, data_dir, download, spec,
                                    seed, options)
    else:
        clean = load_source(base, split, data_dir, download, **options) if clean is None else clean
        out = corrupt_dataset(clean if rows is None else clean.subset(rows), corruption, severity,
                              spec, seed)
    out.meta["source"] = "generated"
    return out


def official_split(base: str, corruption: str, severity: int,
                   data_dir: str | Path | None = None,
                   classes: list[str] | None = None) -> ArrayDataset | None:
    """One severity of the published corrupted test set, or None when its files are absent.

    Only the requested rows are read. ``classes`` names the labels (default: the clean test
    split's names when at hand, else numbers).
    """
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
            classes = load_source(base, "test", data_dir, download=False).classes
        except DataError:
            classes = [str(i) for i in range(int(y.max()) + 1)]
    meta = {"corruption": corruption, "severity": severity, "source": "official",
            "files": [str(images_file), str(labels_file)]}
    return ArrayDataset(x, y, list(classes), f"{base.lower()}-c:{corruption}:{severity}", meta)


def _no_official_files(base: str, corruption: str, data_dir: str | Path | None) -> DataError:
    """What `official_split` found missing, by full path, and the layout it reads."""
    start = f"no published {corruption} files for {base}"
    if base.lower() not in OFFICIAL_FOLDERS:  # it never looks in the data folder for these
        known = ", ".join(f"{b} ({f}/)" for b, f in OFFICIAL_FOLDERS.items())
        return DataError(f"{start}: only {known} have a published corrupted release; use "
                         f"source 'generated' (or 'auto') to generate the split")
    folder = resolve_data_dir(data_dir) / OFFICIAL_FOLDERS[base.lower()]
    wanted = [f for f in (f"{corruption}.npy", "labels.npy") if not (folder / f).is_file()]
    missing = f"{folder}/ not found" if not folder.is_dir() else \
        f"{folder} has no {' and no '.join(wanted)}"
    return DataError(f"{start}: {missing} (expected {folder.name}/{corruption}.npy, uint8 "
                     f"(5 N, H, W, C) with severities 1-5 stacked, beside labels.npy)")


def _generated_and_cached(base: str, corruption: str, severity: int, split: str,
                          data_dir: str | Path | None, download: bool, spec: Preset, seed: int,
                          options: dict) -> ArrayDataset:
    """The whole split generated once, then served from the cache (sources that cache)."""
    clean = load_source(base, split, data_dir, download, **options)
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


def check_release_folder(out: str | Path, overwrite: bool = False) -> Path:
    """``out`` as an absolute path with symlinks resolved, once it is known that a set can be
    written there: not a file, not a non-empty folder unless ``overwrite``, writable or
    creatable. `thresher corrupt` asks before its work, not after an hour of it."""
    given, out = out, Path(out).expanduser().resolve()
    if out.exists():
        if not out.is_dir():
            raise ValueError(f"--out {given} is a file; a folder is expected")
        present = sorted(p.name for p in out.iterdir())
        if present and not overwrite:
            more = " ..." if len(present) > 3 else ""
            raise ValueError(f"--out {given} is not empty ({', '.join(present[:3])}{more}); pass "
                             f"--overwrite to replace its contents, or choose another folder")
        if not cache.writable(out):
            raise ValueError(f"--out {given} is read-only")
    problem = cache.why_unwritable(out.parent)
    if problem:
        raise ValueError(f"--out {given} cannot be written: its parent {out.parent} {problem}")
    return out


@contextmanager
def release_folder(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty folder beside ``out`` to write a whole set into; when the block ends it
    takes ``out``'s place, and only then is an old ``out`` (``overwrite``) removed.

    An interruption thus leaves the old set or the new one, never a mix. The staging folder is
    ``.<out>.<pid>.tmp`` in the same parent (a rename, not a copy); one left by a killed process
    is removed by the next call.
    """
    out = check_release_folder(out, overwrite)
    prefix = f".{out.name}."
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--out {out} cannot be written: {e}") from e
    for suffix in (".tmp", ".old"):
        cache.remove_orphans(out.parent, suffix, prefix)
    stage = out.with_name(f"{prefix}{os.getpid()}.tmp")
    shutil.rmtree(stage, ignore_errors=True)  # this pid's: no live writer but us
    stage.mkdir()
    try:
        yield stage
        _swap_in(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _swap_in(stage: Path, out: Path) -> None:
    """Rename ``stage`` to ``out``; an existing ``out`` is moved aside first and removed after,
    or put back if the swap does not complete."""
    if not out.exists():
        stage.rename(out)
        return
    old = out.with_name(f".{out.name}.{os.getpid()}.old")
    shutil.rmtree(old, ignore_errors=True)
    out.rename(old)
    try:
        stage.rename(out)
    except BaseException:  # also Ctrl-C between the two renames
        if not out.exists():
            old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)
