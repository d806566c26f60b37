"""Finished units of a run's work — a seed, a method x seed, a grid cell — kept one file each.

A study wraps each unit in ``run.unit(key, compute)``: the result is written atomically the
moment it exists, so a run stopped by Ctrl-C, SIGTERM, SIGKILL or a full disk keeps every unit
it finished, and the same run resumed (``--resume``, or the same command with the same
``--name``) reads them back instead of repeating them. A unit's value is what JSON holds; it
is returned as read back from its file even when just computed, so a resumed run and an
uninterrupted one continue from identical values.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from thresher.runs.files import atomic_write, to_json

UNITS_DIR = "units"
_KEY = re.compile(r"[A-Za-z0-9_.=+-]+(/[A-Za-z0-9_.=+-]+)*")


class Units:
    """The ``units/`` folder of one run directory."""

    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir) / UNITS_DIR

    def path(self, key: str) -> Path:
        if not _KEY.fullmatch(key):
            raise ValueError(f"unit key {key!r} must be names of letters, digits and _.=+- "
                             "joined by '/'")
        return self.dir / (key.replace("/", "__") + ".json")

    def __contains__(self, key: str) -> bool:
        return self.path(key).is_file()

    def load(self, key: str) -> Any:
        return json.loads(self.path(key).read_text())["value"]

    def save(self, key: str, value: Any) -> Any:
        """Write the unit; returns its value as JSON gives it back."""
        text = to_json({"key": key, "value": value})
        atomic_write(self.path(key), text)
        return json.loads(text)["value"]

    def keys(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted(json.loads(p.read_text())["key"] for p in self.dir.glob("*.json"))

    def get_or_compute(self, key: str, compute: Callable[[], Any]) -> tuple[Any, bool]:
        """(value, whether it was read back from an earlier attempt)."""
        if key in self:
            return self.load(key), True
        return self.save(key, compute()), False
