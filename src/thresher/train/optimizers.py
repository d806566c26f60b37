"""Optimisers by name, built from parameter groups.

`param_groups` applies weight decay only to parameters with two or more dimensions (weight
matrices and convolution kernels), as nanoGPT's ``configure_optimizers`` does: decaying biases
and normalisation gains pulls them towards zero for no regularising benefit. A factory receives
those groups plus the options in ``fit.optimizer_options``, so an optimiser with knobs of its own
(GaLore's rank, update gap and scale) registers here from `thresher.optim` without touching the
training loop. The factory's keyword arguments are the options it accepts; anything else is
refused before training starts.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from thresher.registry import Registry, did_you_mean

OptimizerFactory = Callable[..., torch.optim.Optimizer]
OPTIMIZERS: Registry[OptimizerFactory] = Registry("optimizer")
_BASE_ARGS = ("groups", "lr", "momentum", "nesterov", "model")


def register_optimizer(name: str) -> Callable[[OptimizerFactory], OptimizerFactory]:
    """Decorator: ``factory(groups, *, lr, momentum, nesterov, **options) -> Optimizer``.

    ``groups`` already carry each group's ``weight_decay``. A factory that also declares
    ``model`` receives the module being trained (None when built from bare parameters), for
    choices by layer type or parameter name.
    """
    return OPTIMIZERS.register(name)


@register_optimizer("sgd")
def _sgd(groups: list[dict], *, lr: float, momentum: float, nesterov: bool,
         dampening: float = 0.0) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, dampening=dampening,
                           nesterov=nesterov and momentum > 0)


def _adam_family(cls: type[torch.optim.Optimizer]) -> OptimizerFactory:
    """Adam and AdamW take the same options; they differ in how the groups' decay applies."""
    def factory(groups: list[dict], *, lr: float, momentum: float, nesterov: bool,
                betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                amsgrad: bool = False) -> torch.optim.Optimizer:
        return cls(groups, lr=lr, betas=tuple(betas), eps=eps, amsgrad=amsgrad)
    return factory


register_optimizer("adam")(_adam_family(torch.optim.Adam))
register_optimizer("adamw")(_adam_family(torch.optim.AdamW))


def optimizer_options(name: str) -> dict[str, Any]:
    """The options optimiser ``name`` accepts in ``fit.optimizer_options``, with defaults."""
    params = inspect.signature(OPTIMIZERS[name]).parameters.values()
    return {p.name: p.default for p in params
            if p.name not in _BASE_ARGS and p.default is not inspect.Parameter.empty}


def check_optimizer(name: str, options: dict[str, Any]) -> None:
    """Refuse an unknown optimiser or option now, not after the data is loaded."""
    accepted = optimizer_options(name)
    for key in options:
        if key not in accepted:
            close = did_you_mean(key, accepted)
            hint = f" (did you mean {close!r}?)" if close else ""
            raise ValueError(f"optimizer {name!r} has no option {key!r}{hint}; its options: "
                             f"{', '.join(accepted) or 'none'}")


def param_groups(params: Iterable[nn.Parameter] | nn.Module, weight_decay: float,
                 decay_1d: bool = False) -> list[dict]:
    """Trainable parameters split into a decayed group (>= 2 dims) and an undecayed one.

    One group when nothing differs (no decay, or ``decay_1d``), so the optimiser's update stays
    a single fused call per step.
    """
    if isinstance(params, nn.Module):
        params = params.parameters()
    params = [p for p in params if p.requires_grad]
    if weight_decay == 0 or decay_1d:
        return [{"params": params, "weight_decay": weight_decay}]
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    return [g for g in ({"params": decay, "weight_decay": weight_decay},
                        {"params": rest, "weight_decay": 0.0}) if g["params"]]


def build_optimizer(name: str, params: Iterable[nn.Parameter] | nn.Module, *, lr: float,
                    momentum: float = 0.9, weight_decay: float = 0.0, nesterov: bool = False,
                    decay_1d: bool = False, options: dict[str, Any] | None = None
                    ) -> torch.optim.Optimizer:
    """Optimiser ``name`` over ``params`` (a module or parameters), decay per `param_groups`."""
    options = dict(options or {})
    check_optimizer(name, options)
    factory = OPTIMIZERS[name]
    if "model" in inspect.signature(factory).parameters:
        options["model"] = params if isinstance(params, nn.Module) else None
    return factory(param_groups(params, weight_decay, decay_1d), lr=lr, momentum=momentum,
                   nesterov=nesterov, **options)


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the tensors in an optimiser's state (moments, projectors, step counters)."""
    return sum(v.numel() * v.element_size() for s in optimizer.state.values()
               for v in s.values() if isinstance(v, torch.Tensor))


def adamw_state_bytes(params: Iterable[nn.Parameter] | nn.Module) -> int:
    """What `torch.optim.AdamW` would keep for ``params``: two moments per element and a
    4-byte step per parameter (the reference a compressed optimiser's state is measured by)."""
    if isinstance(params, nn.Module):
        params = params.parameters()
    return sum(2 * p.numel() * p.element_size() + 4 for p in params if p.requires_grad)


# optimisers defined outside this package register themselves on import
import thresher.optim.galore  # noqa: E402,F401
