"""Models by name: ``build("resnet20", num_classes=10, in_shape=(3, 32, 32))``.

Every config mistake — an unknown name, an option the model does not take, a width of zero,
an image the architecture cannot process — is a ValueError raised here, before any data is
loaded or any step is taken.
"""

from __future__ import annotations

import functools
import inspect
import operator
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from torch import nn

from thresher.models.base import WrappedClassifier, positive_ints
from thresher.registry import Registry, did_you_mean, unknown_message

TORCHVISION_PREFIX = "torchvision:"


class ModelInfo(NamedTuple):
    name: str
    description: str


Builder = Callable[..., nn.Module]
MODELS: Registry[Builder] = Registry("model")


def register_model(name: str, description: str, features: bool = False
                   ) -> Callable[[Builder], Builder]:
    """Decorator: ``builder(num_classes, in_shape, **options)`` becomes ``build(name, ...)``.

    The builder's keyword defaults are the model's options; nothing else is accepted.
    ``features``: the model also takes flat feature vectors, ``in_shape = (D,)`` (an
    encoder's latents), besides ``(C, H, W)`` images.
    """
    def add(builder: Builder) -> Builder:
        builder.takes_features = features  # type: ignore[attr-defined]
        return MODELS.register(name, builder, description=description)
    return add


def list_models() -> list[ModelInfo]:
    """Registered models in registration order (``torchvision:<name>`` is also accepted)."""
    return [ModelInfo(name, MODELS.description(name)) for name in MODELS]


def model_options(name: str) -> dict[str, Any]:
    """The options ``name`` accepts, with their defaults."""
    return _options(_builder(name))


def build(name: str, num_classes: int, in_shape: tuple[int, ...], **options: Any
          ) -> nn.Module:
    """A freshly initialised model for ``num_classes`` classes and ``(C, H, W)`` inputs (or
    ``(D,)`` feature vectors, for models registered with ``features=True``)."""
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
    features = len(shape) == 1 and getattr(builder, "takes_features", False)
    if len(shape) != 3 and not features:
        takes = "(C, H, W) or (D,)" if getattr(builder, "takes_features", False) \
            else "(C, H, W): it takes images, not feature vectors"
        raise ValueError(f"{name}: in_shape must be {takes}, got {in_shape!r}")
    try:
        return builder(operator.index(num_classes), shape, **options)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None


def _builder(name: str) -> Builder:
    if name.startswith(TORCHVISION_PREFIX):
        return functools.partial(_torchvision, name[len(TORCHVISION_PREFIX):])
    if name not in MODELS:
        raise ValueError(unknown_message("model", name, MODELS) +
                         f" (or {TORCHVISION_PREFIX}<name>)")
    return MODELS[name]


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = did_you_mean(word, choices)
    return f" (did you mean {close!r}?)" if close else ""


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
