"""The decoded-dataset cache: uint8 arrays as ``.npy``, so only the first load pays for decoding.

An entry is keyed by dataset, split, options and the identity (path, size, mtime) of its source
files, so replacing a source file starts a new entry. Every file is written under a temporary
name and renamed into place, and a JSON sidecar with the expected shapes and CRC-32s is written
last: an entry without its sidecar, or whose arrays disagree with it, is rebuilt. The same
folder remembers which data files already passed their checksum.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zlib
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
VERSION = 1  # bump when a reader changes what it returns, to orphan old entries


def cache_dir(data_dir: Path) -> Path:
    """``THRESHER_CACHE``, else ``<data_dir>/.thresher_cache`` if writable, else the user cache."""
    if os.environ.get("THRESHER_CACHE"):
        return Path(os.environ["THRESHER_CACHE"]).expanduser()
    if data_dir.is_dir() and writable(data_dir):
        return data_dir / ".thresher_cache"
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "thresher"


def writable(folder: Path) -> bool:
    """Whether files may be created in ``folder`` (or its nearest existing ancestor).

    A folder without any write permission bit counts as read-only even for root, who could
    write there anyway: shared data folders are made read-only on purpose.
    """
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return os.access(folder, os.W_OK) and bool(folder.stat().st_mode & 0o222)


def identity(paths: list[Path]) -> list[tuple[str, int, int]]:
    """(path, size, mtime) of each file, or of every file below each folder."""
    files = []
    for path in paths:
        path = Path(path).absolute()
        for f in sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]:
            st = f.stat()
            files.append((str(f), st.st_size, st.st_mtime_ns))
    return files


def entry(cache: Path, name: str, split: str, options: dict, sources: list[Path]) -> Path:
    """The path stem of the cache entry for one decoded split."""
    key = json.dumps([VERSION, name, split, options, identity(sources)], sort_keys=True,
                     default=str)
    return cache / f"{name}-{split}-{hashlib.sha1(key.encode()).hexdigest()[:16]}"


def _describe(array: np.ndarray) -> dict:
    """What the sidecar promises about an array; CRC-32 costs ~0.03 s for all of CIFAR-10."""
    crc = zlib.crc32(np.ascontiguousarray(array))
    return {"shape": list(array.shape), "dtype": str(array.dtype), "crc32": crc}


def get(stem: Path) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """The cached (images, labels, classes), or None if absent or damaged (then logged)."""
    sidecar = Path(f"{stem}.json")
    if not sidecar.is_file():
        return None
    try:
        info = json.loads(sidecar.read_text())
        images = np.load(f"{stem}.images.npy", allow_pickle=False)
        labels = np.load(f"{stem}.labels.npy", allow_pickle=False)
        if _describe(images) == info["images"] and _describe(labels) == info["labels"]:
            return images, labels, list(info["classes"])
        log.warning("cache entry %s does not match its sidecar; rebuilding it", stem)
    except (OSError, ValueError, EOFError, KeyError, TypeError) as e:
        log.warning("cache entry %s is damaged (%s); rebuilding it", stem, e)
    return None


def put(stem: Path, images: np.ndarray, labels: np.ndarray, classes: list[str]) -> None:
    """Store one decoded split; a failure (read-only or full disk) only costs the next load."""
    info = {"images": _describe(images), "labels": _describe(labels), "classes": list(classes)}
    try:
        stem.parent.mkdir(parents=True, exist_ok=True)
        for suffix, array in ((".images.npy", images), (".labels.npy", labels)):
            _atomic_write(Path(f"{stem}{suffix}"), lambda f, a=array: np.save(f, a))
        _atomic_write(Path(f"{stem}.json"), lambda f: f.write(json.dumps(info).encode()))
    except OSError as e:
        log.warning("could not write cache entry %s: %s", stem, e)


def has_entries(cache: Path, name: str) -> bool:
    """Whether any split of ``name`` has a complete entry."""
    return cache.is_dir() and any(cache.glob(f"{name}-*.json"))


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _marker(cache: Path, path: Path, digest: str) -> Path:
    st = path.stat()
    key = f"{path.absolute()}|{st.st_size}|{st.st_mtime_ns}|{digest}"
    return cache / "verified" / hashlib.sha1(key.encode()).hexdigest()


def is_verified(cache: Path, path: Path, digest: str) -> bool:
    """Whether ``path``, unchanged since, already matched ``digest``."""
    return _marker(cache, path, digest).exists()


def mark_verified(cache: Path, path: Path, digest: str) -> None:
    """Remember that ``path`` matched ``digest``, so it is not hashed again until it changes."""
    marker = _marker(cache, path, digest)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError as e:
        log.warning("could not record the checksum of %s in %s: %s", path, cache, e)
