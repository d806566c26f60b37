"""GaLore: gradient low-rank projection (Zhao et al. 2024, arXiv 2403.03507) around AdamW and
SGD with momentum.

For each chosen weight W (a matrix; a convolution kernel counts as ``out x in*kh*kw``) the
gradient G is projected onto r directions taken from its SVD, the optimiser's moments live in
that r-dimensional space, and the update is projected back and multiplied by ``scale``. The
projector is recomputed every ``update_proj_gap`` steps (the first step included), so training
still explores the full space over time while the state shrinks from ``2mn`` floats per
weight (AdamW) to ``2mr + nr`` (moments plus projector, ``m >= n``).

``proj_type`` says which side is projected, as the reference package names it: ``std``
projects the smaller side (``m >= n``: ``G Q^T`` with Q the top-r right singular vectors;
otherwise ``P^T G`` with P the left ones), ``reverse_std`` the larger, ``left`` / ``right``
always that side, ``full`` both (``P^T G Q^T``). Every other parameter (biases, norms, and
weights whose rank would not be smaller than their smaller side) gets the plain update of the
same optimiser, so `GaLoreAdamW` over a model with nothing projected is AdamW.

Adam's arithmetic follows the reference operation by operation (``denom = sqrt(v) + eps``,
bias corrections folded into the step size, weight decay decoupled and applied to the updated
weight), so the two agree bit for bit on the same gradients; it differs from
`torch.optim.AdamW` only in where eps enters and when the decay applies. Failure modes are loud,
never a silent NaN: a non-finite gradient at a projector refresh raises, an all-zero one keeps
the previous projector, and an SVD that does not converge is retried in float64 before it
raises.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from thresher.seeding import derive_seed
from thresher.train.optimizers import register_optimizer

PROJ_TYPES = ("std", "reverse_std", "left", "right", "full")
SVD_METHODS = ("full", "randomized")
TARGETS = ("all", "linear", "conv")  # or a regular expression over parameter names


def _choice(name: str, value: Any, valid: Iterable[str]) -> None:
    valid = tuple(valid)
    if value not in valid:
        raise ValueError(f"galore {name} must be one of {', '.join(map(repr, valid))}, "
                         f"got {value!r}")


def projection_side(m: int, n: int, proj_type: str) -> str:
    """Which side of an ``m x n`` gradient ``proj_type`` projects: left, right or full."""
    if proj_type in ("left", "right", "full"):
        return proj_type
    small_right = m >= n  # the smaller side is the right one
    return "right" if small_right == (proj_type == "std") else "left"


def chosen_weights(model: nn.Module | None, params: list[nn.Parameter],
                   target: str) -> set[nn.Parameter]:
    """The parameters ``target`` picks for projection: ``all`` (every trainable parameter of
    two or more dimensions), ``linear`` / ``conv`` (the weights of those layers; need the
    model), or a regular expression searched in the model's parameter names."""
    params = [p for p in params if p.requires_grad]
    if target == "all":
        return {p for p in params if p.dim() >= 2}
    if model is None:
        raise ValueError(f"galore target {target!r} needs the model, not bare parameters; "
                         f"use target='all'")
    trainable = {id(p) for p in params}
    if target in ("linear", "conv"):
        kind = nn.Linear if target == "linear" else nn.modules.conv._ConvNd
        return {m.weight for m in model.modules()
                if isinstance(m, kind) and id(m.weight) in trainable}
    try:
        pattern = re.compile(target)
    except re.error as e:
        raise ValueError(f"galore target must be one of {', '.join(map(repr, TARGETS))} or a "
                         f"regular expression over parameter names; {target!r}: {e}") from None
    chosen = {p for name, p in model.named_parameters()
              if id(p) in trainable and p.dim() >= 2 and pattern.search(name)}
    if not chosen:
        names = [n for n, p in model.named_parameters() if p.dim() >= 2]
        raise ValueError(f"galore target {target!r} matches no weight of two or more "
                         f"dimensions; they are: {', '.join(names[:12])}"
                         f"{', ...' if len(names) > 12 else ''}")
    return chosen


class _GaLore(torch.optim.Optimizer):
    """The projection shared by `GaLoreAdamW` and `GaLoreSGD`: which weights are projected
    and at what rank, the projectors (optimiser state, so `state_dict` carries them), and
    their refresh. Subclasses give ``_update(p, group, state, grad, project_back)``."""

    def __init__(self, params: Iterable, defaults: dict, *, projected: set[nn.Parameter] | None,
                 rank: int | None, rank_fraction: float, update_proj_gap: int, scale: float,
                 proj_type: str, svd: str, seed: int, per_layer: bool) -> None:
        _choice("proj_type", proj_type, PROJ_TYPES)
        _choice("svd", svd, SVD_METHODS)
        if rank is not None and rank < 1:
            raise ValueError(f"galore rank must be >= 1 (or None for rank_fraction), got {rank}")
        if not 0.0 < rank_fraction <= 1.0:
            raise ValueError(f"galore rank_fraction must lie in (0, 1], got {rank_fraction}")
        if update_proj_gap < 1:
            raise ValueError(f"galore update_proj_gap must be >= 1, got {update_proj_gap}")
        super().__init__(params, {**defaults, "scale": scale})
        if projected is None:  # every parameter of two or more dimensions
            projected = {p for g in self.param_groups for p in g["params"] if p.dim() >= 2}
        self.update_proj_gap, self.proj_type, self.svd, self.seed = (update_proj_gap, proj_type,
                                                                     svd, seed)
        # each parameter's rank (None: not projected) and position, fixed at construction
        self.ranks: dict[nn.Parameter, int | None] = {}
        self.index: dict[nn.Parameter, int] = {}
        self.full_rank: list[tuple[tuple[int, ...], str]] = []  # chosen, but not worth it
        for group in self.param_groups:
            for p in group["params"]:
                self.index[p] = len(self.index)
                r = None
                if p in projected:
                    m, n = p.shape[0], p[0].numel()
                    r = rank if rank is not None else max(1, round(rank_fraction * min(m, n)))
                    if r >= min(m, n):
                        self.full_rank.append((tuple(p.shape), f"rank {r} >= {min(m, n)}"))
                        r = None
                self.ranks[p] = r
        self.steps_in_backward = per_layer
        if per_layer:
            for group in self.param_groups:
                for p in group["params"]:
                    p.register_post_accumulate_grad_hook(self._hook(group))

    def _hook(self, group: dict) -> Callable[[torch.Tensor], None]:
        def step_now(p: torch.Tensor) -> None:
            with torch.no_grad():
                self._step_param(p, group)
            p.grad = None  # this weight's full gradient never coexists with the next one's
        return step_now

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One step for every parameter with a gradient (none are left in ``per_layer`` mode,
        where each weight was stepped as its gradient arrived)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._step_param(p, group)
        return loss

    def _step_param(self, p: torch.Tensor, group: dict) -> None:
        if p.grad.is_sparse:
            raise RuntimeError("GaLore does not support sparse gradients")
        state = self.state[p]
        if "step" not in state:
            state["step"] = 0
        r = self.ranks[p]
        if r is None:
            self._update(p, group, state, p.grad, None)
            return
        g = p.grad.reshape(p.shape[0], -1)
        side = projection_side(*g.shape, self.proj_type)
        if state["step"] % self.update_proj_gap == 0 or "projector" not in state:
            self._refresh(p, g, r, side, state)
        left, right = state.get("projector"), state.get("projector_right")
        if side == "left":
            low = left.t() @ g
        elif side == "right":
            low = g @ left.t()
        else:
            low = left.t() @ g @ right.t()
        self._update(p, group, state, low,
                     lambda update, alpha: _add_back(p, update, left, right, side,
                                                     group["scale"], alpha))

    def _refresh(self, p: torch.Tensor, g: torch.Tensor, r: int, side: str,
                 state: dict) -> None:
        """New projectors from the gradient's SVD; one host read per refresh."""
        norm = torch.linalg.vector_norm(g).item()
        if not math.isfinite(norm):
            raise FloatingPointError(
                f"GaLore: non-finite gradient for the weight of shape {tuple(p.shape)} at step "
                f"{state['step']}; the projector cannot be refreshed (lower the learning rate)")
        if norm == 0.0 and "projector" in state:
            return  # a zero gradient has no directions to offer: keep the current ones
        u, vh = self._svd(g.float(), r, state["step"], self.index[p])
        u, vh = u.to(p.dtype), vh.to(p.dtype)
        if side == "left":
            state["projector"] = u[:, :r].contiguous()
        elif side == "right":
            state["projector"] = vh[:r].contiguous()
        else:
            state["projector"], state["projector_right"] = (u[:, :r].contiguous(),
                                                            vh[:r].contiguous())

    def _svd(self, g: torch.Tensor, r: int, step: int, index: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(U, Vh)``, their leading r singular vectors at least. Randomised SVD draws its
        test matrix from a seed derived from (seed, step, parameter), so a resumed run draws
        the same one without the global generator being touched."""
        if self.svd == "randomized":
            devices = [g.device] if g.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(derive_seed(self.seed, "galore", step, index))
                u, _, v = torch.svd_lowrank(g, q=min(r + 8, *g.shape), niter=2)
            return u, v.t()
        try:
            u, _, vh = torch.linalg.svd(g, full_matrices=False)
        except torch.linalg.LinAlgError:
            try:  # ill-conditioned in float32: float64 usually converges
                u, _, vh = torch.linalg.svd(g.double(), full_matrices=False)
            except torch.linalg.LinAlgError as e:
                raise RuntimeError(f"GaLore: the SVD of a gradient of shape {tuple(g.shape)} "
                                   f"did not converge at step {step} (in float32 or float64); "
                                   f"try svd='randomized'") from e
        return u, vh

    def _update(self, p: torch.Tensor, group: dict, state: dict, grad: torch.Tensor,
                project_back: Callable[[torch.Tensor, float], None] | None) -> None:
        raise NotImplementedError

    def report(self) -> dict[str, Any]:
        """What a run records beside the state's bytes: how many parameters are projected,
        which chosen weights were not (and why), and the projection's settings."""
        return {"projected": sum(r is not None for r in self.ranks.values()),
                "parameters": len(self.ranks),
                "full_rank": [f"{shape}: {why}" for shape, why in self.full_rank],
                "proj_type": self.proj_type, "update_proj_gap": self.update_proj_gap,
                "svd": self.svd}


def _add_back(p: torch.Tensor, update: torch.Tensor, left: torch.Tensor,
              right: torch.Tensor | None, side: str, scale: float, alpha: float) -> None:
    """``p += alpha * scale * (the low-rank update projected back)``, rounded as the reference
    rounds it (product, then scale, then add) so the two agree bit for bit. A power-of-two
    ``scale`` (the usual 0.25) multiplies exactly, so it is applied to the small r-dimensional
    factor instead, saving a pass over the full-size product."""
    exact = scale > 0 and math.frexp(scale)[0] == 0.5
    if exact:
        update = update * scale
    if side == "left":
        back = left @ update
    elif side == "right":
        back = update @ left
    else:
        back = left @ update @ right
    p.add_((back if exact else back * scale).view_as(p), alpha=alpha)


class GaLoreAdamW(_GaLore):
    """AdamW whose chosen weights keep their moments in GaLore's r-dimensional space.

    ``projected`` are the weights to project (see `chosen_weights`); ``rank`` fixes r for
    all of them, else r is ``rank_fraction`` of each weight's smaller side. ``per_layer``
    steps each parameter from a post-accumulate-grad hook as soon as its gradient is complete
    and frees that gradient, so full gradients of different layers never coexist; ``step``
    then has nothing left to do.
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, *,
                 projected: set[nn.Parameter] | None = None, rank: int | None = None,
                 rank_fraction: float = 0.125, update_proj_gap: int = 200, scale: float = 0.25,
                 proj_type: str = "std", svd: str = "full",
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0, seed: int = 0, per_layer: bool = False) -> None:
        if not 0.0 <= betas[0] < 1.0 or not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"galore betas must lie in [0, 1), got {betas}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps,
                                  "weight_decay": weight_decay},
                         projected=projected, rank=rank, rank_fraction=rank_fraction,
                         update_proj_gap=update_proj_gap, scale=scale, proj_type=proj_type,
                         svd=svd, seed=seed, per_layer=per_layer)

    def _update(self, p, group, state, grad, project_back) -> None:
        if "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(grad)
            state["exp_avg_sq"] = torch.zeros_like(grad)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        beta1, beta2 = group["betas"]
        state["step"] += 1
        exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        denom = exp_avg_sq.sqrt().add_(group["eps"])
        step_size = group["lr"] * math.sqrt(1.0 - beta2 ** state["step"]) / (
            1.0 - beta1 ** state["step"])
        if project_back is None:
            p.add_(exp_avg / denom, alpha=-step_size)
        else:
            project_back(exp_avg / denom, -step_size)
        if group["weight_decay"]:  # decoupled, on the updated weight (the reference's order)
            p.add_(p, alpha=-group["lr"] * group["weight_decay"])


class GaLoreSGD(_GaLore):
    """SGD with momentum (the CIFAR recipes' optimiser) whose chosen weights keep their
    momentum buffer in GaLore's r-dimensional space. Unprojected parameters get exactly
    `torch.optim.SGD`'s update; projected weights decay decoupled (``w *= 1 - lr * wd``),
    because a decay term projected onto the gradient's r directions would mostly vanish."""

    def __init__(self, params: Iterable, lr: float = 0.1, *,
                 projected: set[nn.Parameter] | None = None, rank: int | None = None,
                 rank_fraction: float = 0.125, update_proj_gap: int = 200, scale: float = 0.25,
                 proj_type: str = "std", svd: str = "full", momentum: float = 0.9,
                 dampening: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0,
                 seed: int = 0, per_layer: bool = False) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "dampening": dampening,
                                  "nesterov": nesterov, "weight_decay": weight_decay},
                         projected=projected, rank=rank, rank_fraction=rank_fraction,
                         update_proj_gap=update_proj_gap, scale=scale, proj_type=proj_type,
                         svd=svd, seed=seed, per_layer=per_layer)

    def _update(self, p, group, state, grad, project_back) -> None:
        lr, wd, mu = group["lr"], group["weight_decay"], group["momentum"]
        state["step"] += 1
        if wd and project_back is None:
            grad = grad.add(p, alpha=wd)
        if mu:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = grad.clone()
            else:
                state["momentum_buffer"].mul_(mu).add_(grad, alpha=1.0 - group["dampening"])
            buf = state["momentum_buffer"]
            grad = grad.add(buf, alpha=mu) if group["nesterov"] else buf
        if project_back is None:
            p.add_(grad, alpha=-lr)
        else:
            if wd:
                p.mul_(1.0 - lr * wd)
            project_back(grad, -lr)


@register_optimizer("galore_adamw")
def _galore_adamw(groups: list[dict], *, lr: float, momentum: float, nesterov: bool,
                  model: nn.Module | None = None, rank: int | None = None,
                  rank_fraction: float = 0.125, update_proj_gap: int = 200, scale: float = 0.25,
                  proj_type: str = "std", svd: str = "full", target: str = "all",
                  betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                  per_layer: bool = False, seed: int = 0) -> GaLoreAdamW:
    """``fit.optimizer=galore_adamw``; each group's ``weight_decay`` is kept."""
    params = [p for g in groups for p in g["params"]]
    return GaLoreAdamW(groups, lr=lr, projected=chosen_weights(model, params, target),
                       rank=rank, rank_fraction=rank_fraction, update_proj_gap=update_proj_gap,
                       scale=scale, proj_type=proj_type, svd=svd, betas=tuple(betas), eps=eps,
                       seed=seed, per_layer=per_layer)


@register_optimizer("galore_sgd")
def _galore_sgd(groups: list[dict], *, lr: float, momentum: float, nesterov: bool,
                model: nn.Module | None = None, rank: int | None = None,
                rank_fraction: float = 0.125, update_proj_gap: int = 200, scale: float = 0.25,
                proj_type: str = "std", svd: str = "full", target: str = "all",
                dampening: float = 0.0, per_layer: bool = False, seed: int = 0) -> GaLoreSGD:
    """``fit.optimizer=galore_sgd``: momentum and Nesterov from ``fit`` as for ``sgd``."""
    params = [p for g in groups for p in g["params"]]
    return GaLoreSGD(groups, lr=lr, projected=chosen_weights(model, params, target),
                     rank=rank, rank_fraction=rank_fraction, update_proj_gap=update_proj_gap,
                     scale=scale, proj_type=proj_type, svd=svd, momentum=momentum,
                     dampening=dampening, nesterov=nesterov and momentum > 0, seed=seed,
                     per_layer=per_layer)
