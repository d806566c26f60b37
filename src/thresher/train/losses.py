"""Weighted loss terms and a safe step: the executor behind adaptive loss weighting.

It plugs into `fit` through its two seams rather than a loop of its own: ``loss_fn`` (the
per-example losses the step minimises) and ``after_backward`` (the guard). A loss is a base
term plus auxiliary terms, each per example:

- ``ce``: cross-entropy with the labels (the base of a classifier);
- ``uniform``: cross-entropy with the uniform distribution. Weighted ``eps / (1 - eps)`` beside
  ``ce`` under normalisation it is label smoothing ``eps`` exactly;
- ``confidence``: the confidence penalty (Pereyra et al. 2017), ``log K`` minus the predictive
  entropy: the same gradient as minus the entropy, but never negative like every other term,
  which uncertainty weighting needs (a negative term drives its learnt weight to infinity);
- ``consistency``: KL(p(view) || p(x)) between the prediction on a second augmented view of
  the same rows (held fixed, one extra forward pass and no backward through it) and on ``x``;
- ``recon`` / ``kl``: a VAE's per-example reconstruction NLL and KL, the columns of its output
  (`thresher.models.vae.ConvVAE.terms`).

Safety: auxiliary weights are clipped to ``[w_min, w_max]``; with ``normalize`` every weight
(the base's is 1) is divided by their sum, so reweighting redistributes the objective and can
never act as a hidden learning-rate change; the guard skips and counts a step whose gradient
is not finite, and clips the gradient norm. The guard reads the norm to the host once a step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from thresher.data.pipeline import Batch

CLASSIFICATION_TERMS = ("ce", "uniform", "confidence", "consistency")
VAE_TERMS = ("recon", "kl")
View = Callable[[Batch], torch.Tensor]  # a second augmented view of the batch's rows


@dataclass
class ExecutorConfig:
    """How weights are kept safe: the clip range, normalisation, gradient clipping."""

    w_min: float = 0.01
    w_max: float = 1.0
    normalize: bool = True  # divide all weights (base 1) by their sum
    max_grad_norm: float = 5.0  # 0: no clipping (the non-finite guard stays on)

    def validate(self) -> None:
        if not 0 <= self.w_min < self.w_max:
            raise ValueError(f"executor weights need 0 <= w_min < w_max, got w_min={self.w_min}"
                             f", w_max={self.w_max}")
        if self.max_grad_norm < 0:
            raise ValueError(f"executor.max_grad_norm must be >= 0, got {self.max_grad_norm}")


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = logits.log_softmax(1)
    return -(logp.exp() * logp).sum(1)


def term_values(names: Sequence[str], output: torch.Tensor, batch: Batch,
                view_logits: torch.Tensor | None) -> torch.Tensor:
    """``[B, len(names)]``: each named term per example, in float32."""
    out = output.float()
    cols = []
    for name in names:
        if name == "ce":
            cols.append(F.cross_entropy(out, batch.y, reduction="none"))
        elif name == "uniform":
            cols.append(-out.log_softmax(1).mean(1))
        elif name == "confidence":
            cols.append(math.log(out.shape[1]) - _entropy(out))
        elif name == "consistency":
            target = view_logits.float().log_softmax(1)
            cols.append((target.exp() * (target - out.log_softmax(1))).sum(1))
        elif name in VAE_TERMS:
            cols.append(out[:, VAE_TERMS.index(name)])
        else:
            raise ValueError(f"unknown loss term {name!r}; choose from "
                             f"{', '.join(CLASSIFICATION_TERMS + VAE_TERMS)}")
    return torch.stack(cols, 1)


class UncertaintyWeights(nn.Module):
    """Homoscedastic uncertainty weighting (Kendall et al. 2018): ``sum_k exp(-s_k) L_k + s_k``
    with a learnt log-variance ``s_k`` per term, trained by the same optimiser as the model
    (hence a module: wrap it with the model so `fit` sees its parameters).

    Each weight ``exp(-s_k)`` is held in ``[w_min, w_max]`` (``s_k`` clamped; no gradient
    beyond the bounds), the executor's safety range. Unbounded, the rule's optimum is
    ``exp(-s_k) = 1 / L_k``, so a term that can reach 0 (a confidence penalty or a consistency
    loss at the uniform prediction, a collapsed KL) takes an ever larger weight and pulls the
    model into that degenerate state."""

    def __init__(self, n_terms: int, w_min: float = 0.0, w_max: float = math.inf) -> None:
        super().__init__()
        self.log_vars = nn.Parameter(torch.zeros(n_terms))
        self.bounds = (-math.log(w_max) if math.isfinite(w_max) else None,
                       -math.log(w_min) if w_min > 0 else None)

    def _s(self) -> torch.Tensor:
        low, high = self.bounds
        return self.log_vars if low is None and high is None else \
            self.log_vars.clamp(low, high)

    def combine(self, terms: torch.Tensor) -> torch.Tensor:
        s = self._s()
        return terms @ torch.exp(-s) + s.sum()

    def weights(self) -> list[float]:
        return torch.exp(-self._s().detach()).tolist()


class WithLossParameters(nn.Module):
    """A model plus the parameters of its loss (uncertainty weights), so one optimiser trains
    both; ``embed`` and ``head`` pass through to the model."""

    def __init__(self, model: nn.Module, loss_params: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.loss_params = loss_params

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.embed(x)

    def head(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.head(z)


class LossExecutor:
    """Base term + auxiliary terms under weights a policy sets (`set_weights`) as training goes.

    ``loss_fn`` and ``guard`` are `fit`'s ``loss_fn`` and ``after_backward``. Per-term batch
    means and gradient norms accumulate on the device between `read` calls, so whoever
    watches training (an agent every N steps) pays one host read per look, not per step.
    ``learned`` replaces the fixed weights by uncertainty weighting.
    """

    def __init__(self, base: str, aux: Sequence[str], cfg: ExecutorConfig,
                 weights: Sequence[float], *, view: View | None = None,
                 model: nn.Module | None = None, learned: UncertaintyWeights | None = None,
                 device: torch.device | str = "cpu") -> None:
        cfg.validate()
        self.names = (base, *aux)
        for name in self.names:  # unknown names fail here, not mid-run
            if name not in CLASSIFICATION_TERMS + VAE_TERMS:
                raise ValueError(f"unknown loss term {name!r}; choose from "
                                 f"{', '.join(CLASSIFICATION_TERMS + VAE_TERMS)}")
        if "consistency" in aux and (view is None or model is None):
            raise ValueError("the consistency term needs a second view and the model")
        if len(weights) != len(aux):
            raise ValueError(f"{len(weights)} weights for {len(aux)} auxiliary terms "
                             f"({', '.join(aux)})")
        self.cfg, self.view, self.model, self.learned = cfg, view, model, learned
        self.device = torch.device(device)
        self.weights: list[float] = []
        self._w = torch.zeros(len(self.names), device=self.device)
        self.set_weights(weights)
        self._sums = torch.zeros(len(self.names), device=self.device)
        self._norm_sum = 0.0
        self._calls = self._steps = 0
        self.skipped = 0
        self.steps = 0

    def set_weights(self, weights: Sequence[float]) -> list[float]:
        """Clip the auxiliary weights to ``[w_min, w_max]``; returns what was kept."""
        self.weights = [min(max(float(w), self.cfg.w_min), self.cfg.w_max) for w in weights]
        full = [1.0, *self.weights]
        total = sum(full) if self.cfg.normalize else 1.0
        self._w.copy_(torch.tensor([w / total for w in full]))
        return self.weights

    def effective(self) -> list[float]:
        """The weights the step applies, base first (normalised when configured)."""
        if self.learned is not None:
            return self.learned.weights()
        return self._w.tolist()

    def loss_fn(self, output: torch.Tensor, batch: Batch) -> torch.Tensor:
        view = None
        if "consistency" in self.names:
            with torch.no_grad():
                view = self.model(self.view(batch))
        terms = term_values(self.names, output, batch, view)
        self._sums += terms.detach().mean(0).nan_to_num(0.0, 0.0, 0.0)
        self._calls += 1
        if self.learned is not None:
            return self.learned.combine(terms)
        return terms @ self._w

    def guard(self, step) -> bool:
        """``after_backward``: False (skip the step) on a non-finite gradient, else clip."""
        params = [p for p in step.model.parameters() if p.grad is not None]
        norm = nn.utils.get_total_norm([p.grad for p in params], foreach=True)
        value = float(norm)
        self.steps += 1
        if not math.isfinite(value):
            self.skipped += 1
            return False
        if self.cfg.max_grad_norm and value > self.cfg.max_grad_norm:
            nn.utils.clip_grads_with_norm_(params, self.cfg.max_grad_norm, norm, foreach=True)
        self._norm_sum += value
        self._steps += 1
        return True

    def read(self) -> dict[str, float]:
        """Means since the last read: each term (``term_<name>``) and ``grad_norm``."""
        out = {f"term_{k}": v / max(self._calls, 1)
               for k, v in zip(self.names, self._sums.tolist())}
        out["grad_norm"] = self._norm_sum / max(self._steps, 1)
        self._sums.zero_()
        self._norm_sum, self._calls, self._steps = 0.0, 0, 0
        return out
