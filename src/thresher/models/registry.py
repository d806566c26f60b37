"""Models by name: ``build("resnet20", num_classes=10, in_shape=(3, 32, 32))``.

Every config mistake — an unknown name, an option the model does not take, a width of zero,
an image the architecture cannot process — is a ValueError raised here, before any data is
loaded or any step is taken.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import operator
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from torch import nn

from thresher.models.base import WrappedClassifier, positive_ints

TORCHVISION_PREFIX = "torchvision:"


class ModelInfo(NamedTuple):
    name: str
    description: str


Builder = Callable[..., nn.Module]
_REGISTRY: dict[str, tuple[Builder, str]] = {}


def register_model(name: str, description: str) -> Callable[[Builder], Builder]:
    """Decorator: ``builder(num_classes, in_shape, **options)`` becomes ``build(name, ...)``.

    The builder's keyword defaults are the model's options; nothing else is accepted.
    """
    def decorator(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = (builder, description)
        return builder
    return decorator


def list_models() -> list[ModelInfo]:
    """Registered models in registration order (``torchvision:<name>`` is also accepted)."""
    return [ModelInfo(name, description) for name, (_, description) in _REGISTRY.items()]


def model_options(name: str) -> dict[str, Any]:
    """The options ``name`` accepts, with their defaults."""
    return _options(_builder(name))


def build(name: str, num_classes: int, in_shape: tuple[int, int, int], **options: Any
          ) -> nn.Module:
    """A freshly initialised model for ``num_classes`` classes and ``(C, H, W)`` inputs."""
    builder = _builder(name)
    accepted = _options(builder)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        hints = ", ".join(f"{k!r}{_did_you_mean(k, accepted)}" for k in unknown)
        raise ValueError(f"{name}: unknown option(s) {hints}; accepted options: "
                         f"{', '.join(f'{k}={v!r}' for k, v in accepted.items()) or 'none'}")
    if isinstance(num_classes, bool) or not hasattr(type(num_classes), "__index__") \
            or operator.index(num_classes) < 2:
        raise ValueError(f"{name}: num_classes must be an integer >= 2, got {num_classes!r}")
    shape = positive_ints("in_shape", in_shape)
    if len(shape) != 3:
        raise ValueError(f"{name}: in_shape must be (C, H, W), got {in_shape!r}")
    try:
        return builder(operator.index(num_classes), shape, **options)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None


def _builder(name: str) -> Builder:
    if name.startswith(TORCHVISION_PREFIX):
        return functools.partial(_torchvision, name[len(TORCHVISION_PREFIX):])
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}{_did_you_mean(name, _REGISTRY)}; valid models: "
                         f"{', '.join(_REGISTRY)} (or {TORCHVISION_PREFIX}<name>)")
    return _REGISTRY[name][0]


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _options(builder: Builder) -> dict[str, Any]:
    params = inspect.signature(builder).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def _torchvision(arch: str, num_classes: int, in_shape: tuple[int, int, int],
                 weights: str | None = None) -> nn.Module:
    """A torchvision model with its classifier replaced; ``weights="DEFAULT"`` is pretrained."""
    try:
        import torchvision
    except ImportError as err:
        raise ImportError(f"model {TORCHVISION_PREFIX}{arch} needs torchvision: "
                          "pip install thresher[vision]") from err
    available = torchvision.models.list_models(module=torchvision.models)
    if arch not in available:
        raise ValueError(f"torchvision has no classification model {arch!r}"
                         f"{_did_you_mean(arch, available)}")
    if in_shape[0] != 3:
        raise ValueError(f"torchvision models take 3-channel inputs, got in_shape {in_shape}")
    return WrappedClassifier(torchvision.models.get_model(arch, weights=weights), num_classes)
