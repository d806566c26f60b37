"""The studies: each is a config dataclass, ``prepare(cfg, store)``, ``run(cfg, run,
prepared) -> metrics`` and a CLI command.

A study registers a `Study` here; `thresher.cli` turns every registered study into a
sub-command with ``--config``/``--set`` plus the study's own shortcut flags. ``prepare`` does
what can fail on the user's input beyond the config itself — reading the data, checking a budget
against the pool, finding a referenced run — before a run record exists, so a mistake leaves no
failed run behind; what it returns is handed to ``run``.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from thresher.registry import Registry
from thresher.runs.store import Run, RunStore


@dataclass(frozen=True)
class Flag:
    """A CLI shortcut for one config key, e.g. ``--epochs`` for ``fit.epochs``."""

    flag: str
    key: str
    help: str
    nargs: str | None = None
    switch: bool = False  # a bare flag that sets the key to true (e.g. --lite)


@dataclass(frozen=True)
class Command:
    """A plain CLI command (``thresher corrupt``) or a study's own action
    (``thresher continual compare``): arguments plus a handler returning an exit code."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]


def no_preparation(cfg: Any, store: RunStore) -> None:
    return None


@dataclass(frozen=True)
class Study:
    name: str
    help: str
    config: type
    run: Callable[[Any, Run, Any], dict]
    prepare: Callable[[Any, RunStore], Any] = no_preparation
    flags: tuple[Flag, ...] = field(default_factory=tuple)
    commands: tuple[Command, ...] = field(default_factory=tuple)  # thresher <study> <command>


STUDIES: Registry[Study] = Registry("study")
COMMANDS: Registry[Command] = Registry("command")

# Modules under thresher.studies that register studies or commands when imported.
BUILTIN = ("train", "active", "continual", "robustness", "distill", "adaptive_loss", "guided",)


def register_study(study: Study) -> Study:
    STUDIES.register(study.name, study, description=study.help)
    return study


def register_command(command: Command) -> Command:
    COMMANDS.register(command.name, command, description=command.help)
    return command


def load_builtin() -> tuple[Registry[Study], Registry[Command]]:
    """Import the built-in study modules (each registers itself) and return the registries."""
    for module in BUILTIN:
        importlib.import_module(f"thresher.studies.{module}")
    return STUDIES, COMMANDS
