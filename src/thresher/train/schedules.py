"""Learning-rate schedules: per-step shapes by name, and the loss-driven schedule of streams.

A named schedule maps training progress t in [0, 1) to a multiplier of the base rate, after an
optional linear warm-up. `LossSpikeScheduler` instead reacts to the loss itself, for a stream
whose task changes are never announced (TA-A-GEM).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from thresher.registry import Registry

Shape = Callable[[float], float]
SCHEDULES: Registry[Shape] = Registry("schedule")
SCHEDULES.register("constant", lambda t: 1.0, description="the base rate throughout")
SCHEDULES.register("cosine", lambda t: 0.5 * (1.0 + math.cos(math.pi * t)),
                   description="half a cosine from the base rate to 0")
SCHEDULES.register("linear", lambda t: 1.0 - t, description="straight down to 0")
SCHEDULES.register("step", lambda t: 0.1 ** ((t >= 0.5) + (t >= 0.75)),
                   description="x0.1 at 50% and again at 75% of training")


def build_schedule(name: str, optimizer: torch.optim.Optimizer, total_steps: int,
                   warmup_steps: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step schedule: linear warm-up over ``warmup_steps``, then ``name`` to the end."""
    shape = SCHEDULES[name]
    decay_steps = max(1, total_steps - warmup_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return shape(min(step - warmup_steps, decay_steps - 1) / decay_steps)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class LossSpikeScheduler:
    """TA-A-GEM's learning-rate schedule for a stream without announced task changes.

    The rate decays by ``factor`` after ``patience`` batches without a relative improvement of
    ``threshold`` on the best loss so far (a plateau), and jumps back to its initial value after
    ``patience`` batches with a loss more than ``spike`` above that best (a new task has most
    likely begun), which also restarts the best loss and the plateau count from there.
    """

    def __init__(self, lr: float, factor: float = 0.9999, min_lr: float = 1e-5,
                 patience: int = 5, threshold: float = 1e-4, spike: float = 1.0) -> None:
        self.initial = self.lr = lr
        self.factor, self.min_lr, self.patience = factor, min_lr, patience
        self.threshold, self.spike = threshold, spike
        self.best = math.inf
        self.plateau = 0
        self.spiking = 0

    def step(self, loss: float) -> float:
        if loss < self.best * (1 - self.threshold):
            self.best, self.plateau = loss, 0
        else:
            self.plateau += 1
        self.spiking = self.spiking + 1 if loss > self.best + self.spike else 0
        if self.spiking > self.patience:
            self.lr, self.best, self.spiking, self.plateau = self.initial, loss, 0, 0
        if self.plateau > self.patience:
            self.lr, self.plateau = max(self.lr * self.factor, self.min_lr), 0
        return self.lr
