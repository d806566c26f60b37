"""The studies: each is a config dataclass, ``run(cfg, run) -> metrics`` and a CLI command.

A study registers a `Study` here; `thresher.cli` turns every registered study into a
sub-command with ``--config``/``--set`` plus the study's own shortcut flags.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from thresher.runs.store import Run


@dataclass(frozen=True)
class Flag:
    """A CLI shortcut for one config key, e.g. ``--epochs`` for ``fit.epochs``."""

    flag: str
    key: str
    help: str
    nargs: str | None = None


@dataclass(frozen=True)
class Study:
    name: str
    help: str
    config: type
    run: Callable[[Any, Run], dict]
    flags: tuple[Flag, ...] = field(default_factory=tuple)


STUDIES: dict[str, Study] = {}


def register_study(study: Study) -> Study:
    STUDIES[study.name] = study
    return study


def load_builtin() -> dict[str, Study]:
    """Import the built-in studies (each registers itself) and return the registry."""
    from thresher.studies import train  # noqa: F401

    return STUDIES
