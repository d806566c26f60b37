"""Optimisers and learning-rate schedules by name.

Registries rather than if-chains so later packages (e.g. `thresher.optim` for GaLore) can add an
optimiser without touching the training loop.
"""

from __future__ import annotations

import difflib
import math
from typing import Callable, Iterable

import torch

OptimizerFactory = Callable[..., torch.optim.Optimizer]
OPTIMIZERS: dict[str, OptimizerFactory] = {}
SCHEDULES: dict[str, Callable[[float], float]] = {}


def _unknown(kind: str, name: str, choices: Iterable[str]) -> ValueError:
    choices = list(choices)
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ValueError(f"unknown {kind} {name!r}: choose one of {', '.join(choices)}{hint}")


def register_optimizer(name: str) -> Callable[[OptimizerFactory], OptimizerFactory]:
    def add(factory: OptimizerFactory) -> OptimizerFactory:
        OPTIMIZERS[name] = factory
        return factory
    return add


@register_optimizer("sgd")
def _sgd(params, lr: float, momentum: float, weight_decay: float,
         nesterov: bool) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                           nesterov=nesterov and momentum > 0)


@register_optimizer("adam")
def _adam(params, lr: float, momentum: float, weight_decay: float,
          nesterov: bool) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


@register_optimizer("adamw")
def _adamw(params, lr: float, momentum: float, weight_decay: float,
           nesterov: bool) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def build_optimizer(name: str, params, *, lr: float, momentum: float = 0.9,
                    weight_decay: float = 0.0, nesterov: bool = False) -> torch.optim.Optimizer:
    if name not in OPTIMIZERS:
        raise _unknown("optimizer", name, OPTIMIZERS)
    return OPTIMIZERS[name](params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                            nesterov=nesterov)


# Each schedule maps training progress t in [0, 1) to a multiplier of the base learning rate.
SCHEDULES.update({
    "constant": lambda t: 1.0,
    "cosine": lambda t: 0.5 * (1.0 + math.cos(math.pi * t)),
    "linear": lambda t: 1.0 - t,
    "step": lambda t: 0.1 ** ((t >= 0.5) + (t >= 0.75)),
})


def build_schedule(name: str, optimizer: torch.optim.Optimizer, total_steps: int,
                   warmup_steps: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step schedule: linear warm-up over ``warmup_steps``, then ``name`` to the end."""
    if name not in SCHEDULES:
        raise _unknown("schedule", name, SCHEDULES)
    shape = SCHEDULES[name]
    decay_steps = max(1, total_steps - warmup_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return shape(min(step - warmup_steps, decay_steps - 1) / decay_steps)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
