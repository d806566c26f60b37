"""Batched linear probes: P multinomial logistic regressions trained at once.

Dataset-distillation studies judge a set of M points per class by training a *fresh* linear
probe on just those points and testing it on real latents. An agent comparing many candidate
sets needs many such probes, so `fit_probes` stacks P independent problems into one
``[P, C, D]`` weight tensor and trains them with batched matrix products and one Adam.

The problems never interact: the minimised loss is the sum over problems of each problem's
mean cross-entropy, so the gradient of problem p is exactly what it would get alone, and Adam
is elementwise. The gradient is written in closed form (``softmax - target``), which skips
autograd's bookkeeping; the tests check it against a plain autograd loop. Weights and biases
start at zero, so the recipe is deterministic and identical for every method it judges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

CHUNK = 16384  # rows per matrix product when scoring large test sets


@dataclass
class ProbeConfig:
    """One probe recipe, shared by every method a study compares."""

    steps: int = 300  # optimiser steps (full batch, or one minibatch each when batch_size > 0)
    lr: float = 0.05  # Adam
    weight_decay: float = 5e-4  # L2 on the weights only, never the biases
    batch_size: int = 0  # 0: full batch; > 0: minibatches from a fresh shuffle every epoch
    label_smoothing: float = 0.0

    def validate(self) -> None:
        for name, low in (("steps", 1), ("batch_size", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"probe.{name} must be an integer >= {low}, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"probe.lr must be a finite number > 0, got {self.lr!r}")
        if not (isinstance(self.weight_decay, (int, float)) and math.isfinite(self.weight_decay)
                and self.weight_decay >= 0):
            raise ValueError(f"probe.weight_decay must be a finite number >= 0, "
                             f"got {self.weight_decay!r}")
        if not (isinstance(self.label_smoothing, (int, float))
                and 0 <= self.label_smoothing < 1):
            raise ValueError(f"probe.label_smoothing must be in [0, 1), "
                             f"got {self.label_smoothing!r}")


@dataclass
class Probes:
    """P trained linear probes: ``logits = x @ weight[p].T + bias[p]``."""

    weight: torch.Tensor  # [P, C, D]
    bias: torch.Tensor  # [P, C]

    @property
    def num_problems(self) -> int:
        return self.weight.shape[0]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``[P, n, C]`` logits of every probe: ``x`` is ``[n, D]`` (one test set scored by all
        probes, as one matrix product) or ``[P, n, D]`` (a set per probe)."""
        p, c, d = self.weight.shape
        x = x.to(self.weight.dtype)
        if x.dim() == 2 and x.shape[1] == d:
            out = (x @ self.weight.reshape(p * c, d).T).view(x.shape[0], p, c).transpose(0, 1)
            return out + self.bias[:, None]
        if x.dim() == 3 and x.shape[0] == p and x.shape[2] == d:
            return torch.baddbmm(self.bias[:, None], x, self.weight.transpose(1, 2))
        raise ValueError(f"x must be [n, {d}] or [{p}, n, {d}], got {list(x.shape)}")

    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``[P]`` accuracy of every probe; ``y`` is ``[n]`` or ``[P, n]`` like ``x``. Scored in
        row chunks so a large test set never materialises all P x n x C logits at once."""
        n = x.shape[-2]
        if y.shape[-1] != n or y.dim() > 2 or (y.dim() == 2 and y.shape[0] != self.num_problems):
            raise ValueError(f"y must be [{n}] or [{self.num_problems}, {n}] to match x "
                             f"{list(x.shape)}, got {list(y.shape)}")
        hits = torch.zeros(self.num_problems, device=self.weight.device)
        for start in range(0, n, CHUNK):
            part = x[..., start:start + CHUNK, :]
            pred = self.logits(part).argmax(-1)
            hits += (pred == y[..., start:start + CHUNK].to(pred.device)).sum(-1)
        return hits / max(n, 1)


def fit_probes(x: torch.Tensor, y: torch.Tensor, num_classes: int,
               config: ProbeConfig | None = None, generator: torch.Generator | None = None,
               sample_weight: torch.Tensor | None = None) -> Probes:
    """Train P independent multinomial logistic-regression probes at once.

    ``x`` is ``[P, n, D]`` (P problems of n points each) or ``[n, D]`` (P = 1); ``y`` is
    ``[P, n]`` (or ``[n]``) class indices in ``[0, num_classes)``. ``sample_weight`` (same
    shape as ``y``) scales each example's loss, whose mean over the problem is minimised, as
    `fit` does with importance weights. ``generator`` orders the minibatches and is needed only
    when ``config.batch_size > 0``; every problem sees the same order of its own rows, so a
    problem trained in a batch equals the same problem trained alone with the same seed.
    Everything runs on ``x``'s device, in float64 when ``x`` is float64 and float32 otherwise.
    """
    config = config or ProbeConfig()
    config.validate()
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if x.dim() == 2:
        x = x[None]
        y = y[None] if y.dim() == 1 else y
        if sample_weight is not None and sample_weight.dim() == 1:
            sample_weight = sample_weight[None]
    if x.dim() != 3:
        raise ValueError(f"x must be [n, D] or [P, n, D], got {list(x.shape)}")
    p, n, d = x.shape
    if y.shape != (p, n):
        raise ValueError(f"y must be [{p}, {n}] to match x {list(x.shape)}, got {list(y.shape)}")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise ValueError(f"y must hold integer class indices, got dtype {y.dtype}")
    if n == 0:
        raise ValueError("cannot fit a probe on 0 points")
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= num_classes:
        raise ValueError(f"labels must be in [0, {num_classes}), got values in [{low}, {high}]")
    if sample_weight is not None and sample_weight.shape != (p, n):
        raise ValueError(f"sample_weight must be [{p}, {n}] like y, "
                         f"got {list(sample_weight.shape)}")
    if config.batch_size and generator is None:
        raise ValueError("probe.batch_size > 0 shuffles the points: pass a torch.Generator")

    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    device = x.device
    x = x.to(dtype)
    smooth = config.label_smoothing
    target = torch.nn.functional.one_hot(y.to(device).long(), num_classes).to(dtype)
    target = target * (1 - smooth) + smooth / num_classes  # [P, n, C]
    weight = torch.zeros(p, num_classes, d, dtype=dtype, device=device, requires_grad=True)
    bias = torch.zeros(p, num_classes, dtype=dtype, device=device, requires_grad=True)
    groups = [{"params": [weight], "weight_decay": config.weight_decay},
              {"params": [bias], "weight_decay": 0.0}]
    try:  # the fused kernel is ~2x faster per step on CPU; older torch has it on CUDA only
        optimizer = torch.optim.Adam(groups, lr=config.lr, fused=True)
    except RuntimeError:
        optimizer = torch.optim.Adam(groups, lr=config.lr)
    coef = (torch.ones(p, n, dtype=dtype, device=device) if sample_weight is None
            else sample_weight.to(device, dtype))  # per-example loss weights

    def step(xb: torch.Tensor, tb: torch.Tensor, cb: torch.Tensor) -> None:
        # d(mean_i c_i CE_i)/d logits = c_i (softmax - target) / b; then the chain rule by hand
        logits = torch.baddbmm(bias[:, None], xb, weight.transpose(1, 2))
        # softmax by hand: torch's kernel is ~5x slower along a last dim as short as C
        probs = (logits - logits.amax(-1, keepdim=True)).exp_()
        probs /= probs.sum(-1, keepdim=True)
        g = (probs - tb).mul_((cb / xb.shape[1])[..., None])
        weight.grad = torch.bmm(g.transpose(1, 2), xb)
        bias.grad = g.sum(1)
        optimizer.step()

    with torch.no_grad():
        if not config.batch_size or config.batch_size >= n:
            for _ in range(config.steps):
                step(x, target, coef)
        else:
            taken, b = 0, config.batch_size
            while taken < config.steps:
                perm = torch.randperm(n, generator=generator, device=generator.device)
                perm = perm.to(device)
                for start in range(0, n, b):
                    if taken == config.steps:
                        break
                    idx = perm[start:start + b]
                    step(x[:, idx], target[:, idx], coef[:, idx])
                    taken += 1
    return Probes(weight.detach(), bias.detach())
