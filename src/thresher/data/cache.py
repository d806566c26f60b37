"""The decoded-dataset cache: uint8 arrays as ``.npy``, so only the first load pays for decoding.

An entry is keyed by dataset, split, options and the identity (path, size, mtime) of its source
files, so replacing a source file starts a new entry. Every file is written under a temporary
name and renamed into place, and a JSON sidecar with the expected shapes and CRC-32s is written
last: an entry without its sidecar, or whose arrays disagree with it, is rebuilt. A temporary
file left by a killed writer is removed by the next write or listing. The same folder remembers
which data files already passed their checksum.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import zlib
from pathlib import Path

import numpy as np

from thresher.data.formats import DataError

log = logging.getLogger(__name__)
VERSION = 1  # bump when a reader changes what it returns, to orphan old entries
ORPHAN_AGE = 24 * 3600  # seconds: a temporary file this old is a dead writer's, whatever its pid


def cache_dir(data_dir: Path) -> Path:
    """``THRESHER_CACHE``, else ``<data_dir>/.thresher_cache`` if writable, else the user cache.

    A folder that is (or lies under) a file, or is read-only, is refused here with a DataError
    naming it: every later use would fail on it, as a traceback or as a decode on every load.
    """
    if os.environ.get("THRESHER_CACHE"):
        folder, origin = Path(os.environ["THRESHER_CACHE"]).expanduser(), "THRESHER_CACHE"
    elif data_dir.is_dir() and writable(data_dir):
        folder, origin = data_dir / ".thresher_cache", "the data folder's cache"
    else:
        folder = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "thresher"
        origin = "the user cache, as the data folder is absent or read-only"
    problem = why_unwritable(folder)
    if problem:
        raise DataError(f"cache folder {folder} ({origin}) {problem}; point THRESHER_CACHE at a "
                        f"writable folder")
    return folder


def why_unwritable(folder: Path) -> str | None:
    """Why files cannot be written in ``folder`` (created if need be), or None if they can:
    "is a file", "is read-only", "cannot be created: <ancestor> is a file", ..."""
    try:
        existing = folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            return "is a file" if existing == folder else f"cannot be created: {existing} is a file"
        if not writable(existing):
            return "is read-only" if existing == folder else \
                f"cannot be created: {existing} is read-only"
    except OSError as e:  # e.g. a parent folder this user may not enter
        return f"cannot be reached ({e})"
    return None


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
        remove_orphans(stem.parent, ".tmp")
        for suffix, array in ((".images.npy", images), (".labels.npy", labels)):
            _atomic_write(Path(f"{stem}{suffix}"), lambda f, a=array: np.save(f, a))
        _atomic_write(Path(f"{stem}.json"), lambda f: f.write(json.dumps(info).encode()))
    except OSError as e:
        log.warning("could not write cache entry %s: %s", stem, e)


def has_entries(cache: Path, name: str) -> bool:
    """Whether any split of ``name`` has a complete entry."""
    if not cache.is_dir():
        return False
    remove_orphans(cache, ".tmp")
    return any(cache.glob(f"{name}-*.json"))


def remove_orphans(folder: Path, suffix: str, prefix: str = ".") -> list[Path]:
    """Remove ``<prefix>...<pid><suffix>`` files (or folders) in ``folder`` whose writer is gone.

    Writers name their temporary files after their pid, so a killed one (``kill -9``, power
    loss) leaves a file no one will finish or remove, up to tens of MB each. Gone means no
    process with that pid on this machine, or an mtime over `ORPHAN_AGE` ago (a reused pid, or
    a writer on another machine sharing the folder). Returns what was removed.
    """
    removed = []
    try:
        candidates = [p for p in folder.iterdir()
                      if p.name.startswith(prefix) and p.name.endswith(suffix)]
    except OSError:  # absent or unreadable: nothing to clean
        return removed
    now = time.time()
    for path in candidates:
        pid = path.name[:-len(suffix)].rpartition(".")[2]
        if not pid.isdigit():
            continue  # not a name a writer here gives
        try:
            if pid_alive(int(pid)) and now - path.lstat().st_mtime < ORPHAN_AGE:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError as e:  # removed meanwhile, or not ours to remove
            log.debug("could not remove orphan %s: %s", path, e)
            continue
        log.info("removed %s, left by a writer that is gone", path)
        removed.append(path)
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (signal 0 only checks)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except (OverflowError, OSError):  # not a pid this system can have
        return False
    return True


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
