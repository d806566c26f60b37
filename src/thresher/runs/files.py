"""Writing files so that nothing half-written is ever read: atomic replacement and strict JSON."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from thresher.runs.config import to_plain


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; it replaces ``path`` only if the block succeeds.

    Readers never see a half-written file, and an exception leaves no temp file behind. Use it
    for writers that want a filename (matplotlib, torch.save).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` (str as UTF-8) to ``path`` all at once, flushed to disk."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def finite(obj: Any) -> Any:
    """``obj`` (already plain) with NaN and infinities replaced by None: what strict JSON holds.

    Python's json would write bare ``NaN``, which other JSON readers (jq, browsers, pandas with
    its default engine) reject; a diverged metric reads as null instead.
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite(v) for v in obj]
    return obj


def to_json(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON text of ``obj`` after ``to_plain`` (numpy/torch scalars become Python
    numbers) with non-finite numbers as null."""
    text = json.dumps(finite(to_plain(obj)), indent=indent, allow_nan=False)
    return text + "\n" if indent is not None else text
