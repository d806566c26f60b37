"""`Registry`: name -> object, with listing and did-you-mean errors.

Every extensible table in Thresher (datasets, models, optimisers, schedules, strategies,
learners, streams, corruptions, augmentation policies, studies) is one of these, so an unknown
name fails the same way everywhere: it names the value, the closest valid name and the choices.
Modelled on timm's ``register_model`` / ``list_models``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


def did_you_mean(word: str, choices: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The valid name closest to ``word``, or None when nothing is close."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=cutoff)
    return close[0] if close else None


def unknown_message(kind: str, word: object, choices: Iterable[str]) -> str:
    """``unknown model 'resnt20'; did you mean 'resnet20'? choose one of: mlp, ...``"""
    choices = list(choices)
    close = did_you_mean(str(word), choices)
    hint = f"; did you mean {close!r}?" if close else ";"
    return f"unknown {kind} {word!r}{hint} choose one of: {', '.join(map(str, choices))}"


class Registry(Generic[T]):
    """Names mapped to objects (builders, functions, classes), in registration order.

    ``kind`` names the entries in errors ("model", "dataset"); ``error`` is the exception type
    raised for an unknown name (a package's own error type, e.g. `DataError`); ``key`` folds a
    name before lookup (e.g. ``fashion-mnist`` -> ``fashion_mnist``).
    """

    def __init__(self, kind: str, error: type[Exception] = ValueError,
                 key: Callable[[str], str] | None = None) -> None:
        self.kind = kind
        self.error = error
        self._key = key or (lambda name: name)
        self._entries: dict[str, T] = {}
        self._descriptions: dict[str, str] = {}

    def register(self, name: str, obj: T | None = None, *, description: str = "",
                 replace: bool = False) -> Callable[[T], T] | T:
        """``registry.register("x", obj)`` or, as a decorator, ``@registry.register("x")``."""
        def add(entry: T) -> T:
            if name in self._entries and not replace:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = entry
            self._descriptions[name] = description or _first_line(entry)
            return entry
        return add if obj is None else add(obj)

    def get(self, name: str) -> T:
        """The entry called ``name``; an unknown name raises ``self.error`` with the choices."""
        key = self._key(name) if isinstance(name, str) else name
        if key in self._entries:
            return self._entries[key]
        raise self.error(unknown_message(self.kind, name, self._entries))

    __getitem__ = get

    def resolve(self, name: str) -> str:
        """The registered spelling of ``name`` (after ``key``); raises like `get`."""
        self.get(name)
        return self._key(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._key(name) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def values(self) -> list[T]:
        return list(self._entries.values())

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())

    def description(self, name: str) -> str:
        return self._descriptions[self.resolve(name)]

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"


def _first_line(obj: object) -> str:
    doc = getattr(obj, "__doc__", None) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""
