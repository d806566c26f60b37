"""`PhaseDetector`: when does a training run change regime, and what regime is it in now?

An agent that picks the data-selection strategy as training goes needs to know *when* the run
changed (the learning rate dropped, the loss level moved, the chosen subset stopped paying)
and *what* the run is doing now. The detector reads cheap signals once per observation:

- ``grad_norm``: the change of the smoothed log gradient norm over ``lag`` observations;
- ``curvature``: the second difference of the smoothed loss at lag ``lag``, over its level,
  ``(s_t - 2 s_{t-lag} + s_{t-2 lag}) / |s_t|``: where the loss curve bends;
- ``alignment``: the cosine between this gradient and the running mean of the earlier ones,
  smoothed; its change over ``lag`` observations is what is standardised. A high learning rate
  makes momentum SGD bounce across the valley, so a gradient points partly against its recent
  mean; when the rate drops the bouncing stops within a few steps and the cosine jumps (by
  0.2-0.3 on the runs of the tests), long before the loss or the gradient norm settles;
- ``utility``: the relative trend of the selected subset's mean score, fed when a selection
  happens (``utility=``, or `PhaseDetector.note_utility` before the next observation).

Each signal is standardised by its own statistics: the median and MAD of its values over a
calibration window that starts once the lags are full. They are then frozen by default
(``adapt=0``). A smoothed change signal is correlated over ~``lag + 1/alpha`` observations, so
its scale takes a long window to learn (200 observations; 100 left some seeds' scales 2-3x too
large), and on the real runs a tracker slow enough not to absorb a transition still wandered
with the signal's own slow fluctuations and cost detection power (the weakest drop's z-score
over 8 seeds fell from 6.9 frozen to 5.5 at ``adapt=0.005``); ``adapt > 0`` moves them at a
bounded speed, for long runs whose noise level drifts. A transition fires when the largest
absolute z-score of the voting signals (``votes``) stays above ``threshold`` for
``persistence`` consecutive observations (the elevated evidence of a real change lasts, a
noise spike does not), outside the ``refractory`` period after the last event and once per
excursion (the evidence must fall back below the threshold before the next event).

Only ``alignment`` votes by default: on quiet constant-rate runs the log-norm change fired on
a label-smoothed run, and the relative curvature on runs without label smoothing (the loss
heads for zero, so its relative bends turn heavy-tailed). Their z-scores are still reported
for an agent's state, and ``votes`` can add them (``curvature`` for shifts of the loss level,
``utility`` once selections feed it).

The gradient `hooks` passes is the classifier head's (every Thresher classifier has
``model.head``): one concatenation of gradients that exist anyway, and the class-level
directions the bouncing shows in live there. The whole gradient's cosine separated drops from
quiet runs no better on the test runs, and a fixed random projection of it would cost a
product over all parameters per observation.

Phase labels (`LABELS`), the first rule that holds:

- ``warmup``: the first ``burn_in + 2 lag + calibration`` observations (calibrating);
- ``unstable``: the gradient norm's volatility, an EMA of ``|g - G| / G`` (G the smoothed
  norm), is above ``unstable`` times its median over the calibration window;
- over the last ``2 lag`` observations the smoothed loss: fell by more than the fraction
  ``fast`` (``fast``); rose by more than ``plateau`` (``rising``); moved by at most
  ``plateau`` (``plateau``); otherwise fell slowly (``slow``).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from thresher.registry import did_you_mean

SIGNALS = ("grad_norm", "curvature", "alignment", "utility")
LABELS = ("warmup", "unstable", "fast", "slow", "plateau", "rising")
# The smallest scale a signal is standardised by: a noiseless calibration window (MAD 0) must
# not make every later wobble an infinite z-score. In each signal's own units: log gradient
# norm, relative curvature, cosine, relative utility change.
SCALE_FLOOR = {"grad_norm": 1e-3, "curvature": 1e-4, "alignment": 1e-3, "utility": 1e-3}
MAD_TO_SIGMA = 1.4826  # MAD x this estimates the standard deviation of a normal sample
TINY = 1e-12


@dataclass
class PhaseConfig:
    """How the detector smooths, calibrates and decides; counts are observations.

    The defaults were set on real `fit` runs (an MLP on digits, SGD with label smoothing,
    ``step`` versus ``constant`` schedules over 8 seeds and 3 learning rates): see the tests.
    """

    alpha: float = 0.05  # EMA weight of a new loss, gradient norm and alignment
    grad_beta: float = 0.9  # EMA weight of the old mean gradient (the alignment reference)
    utility_alpha: float = 0.5  # EMA weight of a new subset utility (fed once per selection)
    lag: int = 20  # observations between the smoothed values a change or curvature compares
    burn_in: int = 0  # observations ignored before the calibration window
    calibration: int = 200  # values of each signal whose median and MAD standardise it
    utility_calibration: int = 5  # the same for utility, which arrives once per selection
    adapt: float = 0.0  # speed at which the statistics follow later values (0: frozen)
    threshold: float = 4.5  # robust z-units the strongest voting signal must exceed ...
    persistence: int = 5  # ... for this many consecutive observations
    refractory: int = 50  # observations after an event during which none fires
    votes: tuple[str, ...] = ("alignment",)  # the signals whose z-scores can fire
    fast: float = 0.1  # label "fast": the smoothed loss fell by more than this fraction
    plateau: float = 0.02  # label "plateau": it moved by at most this fraction
    unstable: float = 2.0  # label "unstable": volatility above this x its calibrated median

    def validate(self) -> None:
        for name in ("alpha", "utility_alpha"):
            value = getattr(self, name)
            if not _finite(value) or not 0 < value <= 1:
                raise ValueError(f"phases.{name} must be in (0, 1], got {value!r}")
        for name in ("grad_beta", "adapt"):
            value = getattr(self, name)
            if not _finite(value) or not 0 <= value < 1:
                raise ValueError(f"phases.{name} must be in [0, 1), got {value!r}")
        for name, low in (("lag", 1), ("burn_in", 0), ("calibration", 3),
                          ("utility_calibration", 3), ("persistence", 1), ("refractory", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"phases.{name} must be an integer >= {low}, got {value!r}")
        for name in ("threshold", "fast", "plateau"):
            value = getattr(self, name)
            if not _finite(value) or value <= 0:
                raise ValueError(f"phases.{name} must be a finite number > 0, got {value!r}")
        if self.plateau >= self.fast:
            raise ValueError(f"phases.plateau ({self.plateau}) must be below phases.fast "
                             f"({self.fast})")
        if not _finite(self.unstable) or self.unstable <= 1:
            raise ValueError(f"phases.unstable must be a finite number > 1, "
                             f"got {self.unstable!r}")
        if isinstance(self.votes, str) or not isinstance(self.votes, (tuple, list)) \
                or not self.votes:
            raise ValueError(f"phases.votes must be a non-empty list of signals from "
                             f"{', '.join(SIGNALS)}, got {self.votes!r}")
        for name in self.votes:
            if name not in SIGNALS:
                close = did_you_mean(name, SIGNALS)
                hint = f"; did you mean {close!r}?" if close else ";"
                raise ValueError(f"phases.votes: unknown signal {name!r}{hint} choose from "
                                 f"{', '.join(SIGNALS)}")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


class _Smooth:
    """An EMA that starts as the plain mean of what it has seen (weight ``max(alpha, 1/n)``),
    so its first values are not one noisy sample that takes ``1/alpha`` steps to forget."""

    def __init__(self, alpha: float) -> None:
        self.alpha, self.n, self.value = alpha, 0, None

    def __call__(self, x: float) -> float:
        self.n += 1
        weight = max(self.alpha, 1 / self.n)
        self.value = x if self.value is None else self.value + weight * (x - self.value)
        return self.value

    def state_dict(self) -> dict[str, Any]:
        return {"n": self.n, "value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.n, self.value = state["n"], state["value"]


class _Standardizer:
    """Median and MAD of a signal's first ``size`` values, then optionally tracked.

    Tracking (``rate > 0``) moves the center ``rate`` scales toward each value and multiplies
    the scale by ``exp(+-rate)`` as the value lies outside or inside the central half of a
    normal distribution: a stochastic-approximation median and MAD whose speed is bounded
    whatever the value, so one outlier cannot drag them.
    """

    def __init__(self, size: int, floor: float) -> None:
        self.size, self.floor = size, floor
        self.values: list[float] = []
        self.center: float | None = None
        self.scale: float | None = None

    @property
    def ready(self) -> bool:
        return self.center is not None

    def z(self, x: float) -> float | None:
        return None if self.center is None else (x - self.center) / self.scale

    def add(self, x: float, rate: float) -> None:
        """Collect ``x`` while calibrating; afterwards track it at ``rate``."""
        if self.center is None:
            self.values.append(x)
            if len(self.values) == self.size:
                values = torch.tensor(self.values, dtype=torch.float64)
                center = values.median().item()
                mad = (values - center).abs().median().item()
                self.center, self.scale = center, max(MAD_TO_SIGMA * mad, self.floor)
                self.values = []
            return
        if rate:
            dev = x - self.center
            self.center += rate * self.scale * ((dev > 0) - (dev < 0))
            outside = abs(dev) > self.scale / MAD_TO_SIGMA
            self.scale = max(self.scale * math.exp(rate if outside else -rate), self.floor)

    def state_dict(self) -> dict[str, Any]:
        return {"values": list(self.values), "center": self.center, "scale": self.scale}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.values = list(state["values"])
        self.center, self.scale = state["center"], state["scale"]


class PhaseDetector:
    """Online phase-transition detection from per-step loss, gradient norm and gradient.

    Feed `observe` once per observation (`hooks` does it from `fit`); its result is meant for
    an agent's state, ``events`` lists the transitions and `summary` is a run's record.
    """

    def __init__(self, cfg: PhaseConfig | None = None) -> None:
        self.cfg = cfg = cfg or PhaseConfig()
        cfg.validate()
        self.observations = 0
        self.events: list[dict[str, Any]] = []
        self.label = "warmup"
        self.signals: dict[str, float] = dict.fromkeys(
            ("loss", "loss_change", "grad_norm", "grad_norm_change", "volatility", "curvature",
             "alignment", "alignment_smooth", "alignment_change", "utility", "utility_trend"),
            0.0)
        self._stats = {name: _Standardizer(cfg.utility_calibration if name == "utility"
                                           else cfg.calibration, SCALE_FLOOR[name])
                       for name in SIGNALS}
        self._volatility_ref = _Standardizer(cfg.calibration, TINY)  # its median only
        self._smooth = {"loss": _Smooth(cfg.alpha), "norm": _Smooth(cfg.alpha),
                        "volatility": _Smooth(cfg.alpha), "alignment": _Smooth(cfg.alpha),
                        "utility": _Smooth(cfg.utility_alpha)}
        # (smoothed loss, log smoothed norm, smoothed alignment) of the last 2 lag + 1
        self._history: deque[tuple[float, float, float | None]] = deque(maxlen=2 * cfg.lag + 1)
        self._mean_grad: torch.Tensor | None = None
        self._pending_utility: float | None = None
        self._utility_z: float | None = None  # in force until the next selection
        self._quiet = 0  # observations of the refractory period left
        self._streak = 0  # consecutive observations with the evidence above the threshold
        self._onset = 0  # the step at which that streak began
        self._armed = True  # False from an event until the evidence falls below threshold

    @property
    def warmup(self) -> int:
        """Observations before the detector may fire: burn-in, the lags fill, calibration."""
        return self.cfg.burn_in + 2 * self.cfg.lag + self.cfg.calibration

    def note_utility(self, utility: float) -> None:
        """Remember a selection's mean score for the next `observe` (e.g. from
        ``before_epoch``, which selects before the epoch's first step)."""
        self._pending_utility = float(utility)

    def observe(self, step: int, loss: float | torch.Tensor, grad_norm: float | torch.Tensor,
                grad: torch.Tensor | None = None, utility: float | None = None
                ) -> dict[str, Any]:
        """Fold in one observation; returns the signals (0.0 until defined), their z-scores
        (None until calibrated), the evidence (the largest voting |z|), the phase label and
        whether a transition fired at this observation.

        ``loss`` and ``grad_norm`` may be 0-dim tensors and ``grad`` a flat gradient on any
        device: the cosine is computed there and all of it is read back in one transfer.
        A non-finite loss, norm or gradient is not folded in (it would poison every
        average); that observation is labelled ``unstable``.
        """
        cfg = self.cfg
        cos = new_mean = None
        if grad is not None:
            g = grad.detach().flatten().float()
            mean = self._mean_grad
            if mean is not None and mean.shape != g.shape:
                raise ValueError(f"grad has {g.numel()} entries but the earlier ones had "
                                 f"{mean.numel()}: pass the same flat gradient every time")
            if mean is None:
                new_mean = g.clone()
                cos = g.sum() * 0  # NaN if g is not finite; the first cosine is undefined
            else:
                mean = mean.to(g.device)
                cos = F.cosine_similarity(g, mean, dim=0, eps=TINY)
                new_mean = mean * cfg.grad_beta + g * (1 - cfg.grad_beta)
        first = self._mean_grad is None
        loss, grad_norm, cos = _read([loss, grad_norm, cos])  # the one host sync
        if not (math.isfinite(loss) and math.isfinite(grad_norm) and grad_norm >= 0) \
                or (cos is not None and not math.isfinite(cos)):
            return self._result(step, "unstable", False, None)
        if grad is not None:
            self._mean_grad = new_mean
            cos = None if first else cos
        if utility is None:
            utility, self._pending_utility = self._pending_utility, None
        self.observations += 1
        values = self._update(loss, grad_norm, cos, utility)
        z = {name: self._stats[name].z(value) for name, value in values.items()
             if name != "utility"}
        if "utility" in values:
            self._utility_z = self._stats["utility"].z(values["utility"])
        z["utility"] = self._utility_z
        blocked = self._quiet > 0
        if blocked:
            self._quiet -= 1
        warm = self.observations <= self.warmup
        window = self.observations > self.warmup - cfg.calibration  # calibration began
        if not blocked:  # the transient of an event stays out of the statistics
            for name, value in values.items():
                stats = self._stats[name]
                if name == "utility" or (window and not stats.ready) or not warm:
                    stats.add(value, cfg.adapt)
        if window and not self._volatility_ref.ready:
            self._volatility_ref.add(self._smooth["volatility"].value, 0.0)
        label_before, self.label = self.label, self._label(warm)
        voting = [name for name in cfg.votes if z.get(name) is not None]
        evidence = max((abs(z[name]) for name in voting), default=0.0)
        above = evidence > cfg.threshold and not warm
        self._armed = self._armed or not above
        self._streak = self._streak + 1 if above and self._armed else 0
        if self._streak == 1:
            self._onset = step
        fired = not blocked and self._streak >= cfg.persistence
        if fired:
            self.events.append({
                "step": step, "onset": self._onset, "observation": self.observations,
                "trigger": max(voting, key=lambda name: abs(z[name])), "evidence": evidence,
                "signals": dict(self.signals), "z": dict(z), "label_before": label_before,
                "label_after": None})
            self._quiet, self._streak, self._armed = cfg.refractory, 0, False
        if self.events and self.events[-1]["label_after"] is None and self._quiet == 0:
            self.events[-1]["label_after"] = self.label  # the regime once the event settled
        return self._result(step, self.label, fired, evidence, z)

    def _update(self, loss: float, grad_norm: float, cos: float | None,
                utility: float | None) -> dict[str, float]:
        """Advance the smoothed values and the signals; returns the values of the
        standardised signals this observation defines (utility only when one was fed)."""
        sig, smooth, lag = self.signals, self._smooth, self.cfg.lag
        prev_norm = smooth["norm"].value
        loss_s, norm_s = smooth["loss"](loss), smooth["norm"](grad_norm)
        if prev_norm is not None:
            smooth["volatility"](abs(grad_norm - prev_norm) / max(prev_norm, TINY))
        align_s = smooth["alignment"](cos) if cos is not None else smooth["alignment"].value
        log_norm = math.log(max(norm_s, TINY))
        hist = self._history
        hist.append((loss_s, log_norm, align_s))
        sig.update(loss=loss_s, grad_norm=norm_s, volatility=smooth["volatility"].value or 0.0,
                   alignment=0.0 if cos is None else cos, alignment_smooth=align_s or 0.0)
        values: dict[str, float] = {}
        if len(hist) > lag:
            then = hist[-1 - lag]
            values["grad_norm"] = sig["grad_norm_change"] = log_norm - then[1]
            if align_s is not None and then[2] is not None:
                values["alignment"] = sig["alignment_change"] = align_s - then[2]
        if len(hist) > 2 * lag:
            oldest = hist[0][0]
            sig["loss_change"] = (loss_s - oldest) / max(abs(oldest), TINY)
            values["curvature"] = sig["curvature"] = curvature(loss_s, hist[-1 - lag][0],
                                                               oldest)
        if utility is not None and math.isfinite(utility):
            before = smooth["utility"].value
            sig["utility"] = now = smooth["utility"](float(utility))
            if before is not None:
                values["utility"] = sig["utility_trend"] = (now - before) / max(abs(before),
                                                                                 TINY)
        return values

    def _label(self, warm: bool) -> str:
        """The documented rules of the module docstring, on the smoothed signals."""
        if warm:
            return "warmup"
        cfg = self.cfg
        ref, volatility = self._volatility_ref.center, self._smooth["volatility"].value
        if ref is not None and volatility is not None \
                and volatility > cfg.unstable * max(ref, TINY):
            return "unstable"
        change = self.signals["loss_change"]
        if change < -cfg.fast:
            return "fast"
        if change > cfg.plateau:
            return "rising"
        return "plateau" if change >= -cfg.plateau else "slow"

    def _result(self, step: int, label: str, fired: bool, evidence: float | None,
                z: dict[str, float | None] | None = None) -> dict[str, Any]:
        z = z or {}
        return {"step": step, "observation": self.observations, "label": label,
                "transition": fired, "evidence": evidence, "signals": dict(self.signals),
                "z": {name: z.get(name) for name in SIGNALS}}

    def summary(self) -> dict[str, Any]:
        """A run's record: how many transitions, at which steps, and what fired them."""
        return {"transitions": len(self.events), "steps": [e["step"] for e in self.events],
                "triggers": [e["trigger"] for e in self.events],
                "observations": self.observations, "label": self.label}

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue calibrated: plain values and one
        tensor, safe for ``torch.load(weights_only=True)``."""
        return {"config": asdict(self.cfg), "observations": self.observations,
                "events": [dict(e) for e in self.events], "label": self.label,
                "signals": dict(self.signals),
                "stats": {name: s.state_dict() for name, s in self._stats.items()},
                "volatility_ref": self._volatility_ref.state_dict(),
                "smooth": {name: s.state_dict() for name, s in self._smooth.items()},
                "history": [list(h) for h in self._history],
                "mean_grad": None if self._mean_grad is None else self._mean_grad.cpu(),
                "pending_utility": self._pending_utility, "utility_z": self._utility_z,
                "quiet": self._quiet, "streak": self._streak, "onset": self._onset,
                "armed": self._armed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state_dict`; the configuration must be the one it was saved with
        (a different lag or calibration would misread the saved history)."""
        saved = {**state["config"], "votes": tuple(state["config"]["votes"])}
        ours = {**asdict(self.cfg), "votes": tuple(self.cfg.votes)}
        differ = [f.name for f in fields(self.cfg) if saved.get(f.name) != ours[f.name]]
        if differ:
            changes = ", ".join(f"{n}={saved.get(n)!r} (now {ours[n]!r})" for n in differ)
            raise ValueError(f"phase detector state was saved with other settings: {changes}")
        self.observations, self.label = state["observations"], state["label"]
        self.events = [dict(e) for e in state["events"]]
        self.signals = dict(state["signals"])
        for name, s in self._stats.items():
            s.load_state_dict(state["stats"][name])
        self._volatility_ref.load_state_dict(state["volatility_ref"])
        for name, s in self._smooth.items():
            s.load_state_dict(state["smooth"][name])
        self._history = deque((tuple(h) for h in state["history"]), maxlen=2 * self.cfg.lag + 1)
        self._mean_grad = state["mean_grad"]
        self._pending_utility, self._utility_z = state["pending_utility"], state["utility_z"]
        self._quiet, self._streak = state["quiet"], state["streak"]
        self._onset, self._armed = state["onset"], state["armed"]


def curvature(now: float, lagged: float, lagged2: float) -> float:
    """The second difference of a smoothed series over its current level."""
    return (now - 2 * lagged + lagged2) / max(abs(now), TINY)


def _read(values: list[float | torch.Tensor | None]) -> list[float | None]:
    """Python floats of a mix of numbers and 0-dim tensors, with one device-to-host copy."""
    tensors = [v for v in values if isinstance(v, torch.Tensor)]
    if not tensors:
        return [None if v is None else float(v) for v in values]
    device = tensors[0].device
    read = iter(torch.stack([t.detach().reshape(()).to(device, torch.float64)
                             for t in tensors]).tolist())
    return [next(read) if isinstance(v, torch.Tensor) else (None if v is None else float(v))
            for v in values]


def total_grad_norm(model: nn.Module) -> torch.Tensor:
    """The L2 norm of all parameter gradients as one 0-dim tensor (fused, no host sync)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        raise ValueError(f"{type(model).__name__} has no gradients: call after backward")
    get_total_norm = getattr(nn.utils, "get_total_norm", None)  # torch >= 2.6
    if get_total_norm is not None:
        return get_total_norm(grads)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def head_gradient(model: nn.Module) -> torch.Tensor:
    """The classifier head's gradient as one flat vector (the alignment signal's input)."""
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Module):
        raise ValueError(f"{type(model).__name__} has no `head` module to read a gradient "
                         "from: pass grad= to observe yourself")
    grads = [p.grad.flatten() for p in head.parameters() if p.grad is not None]
    if not grads:
        raise ValueError(f"{type(model).__name__}.head has no gradients: call after backward")
    return torch.cat(grads)


def hooks(detector: PhaseDetector, every: int = 1) -> dict[str, Callable]:
    """`fit` keyword arguments that feed ``detector`` every ``every`` optimiser steps:
    ``fit(model, data, cfg, **hooks(detector))`` (a study with its own ``after_backward``
    calls this one inside it). The hook only reads gradients and returns None (False would
    skip the optimiser step); per observation it costs one fused norm, one head-gradient
    concatenation, a cosine and one host sync."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be an integer >= 1, got {every!r}")

    def after_backward(step) -> None:
        if step.step % every == 0:
            detector.observe(step.step, step.loss.detach(), total_grad_norm(step.model),
                             grad=head_gradient(step.model))

    return {"after_backward": after_backward}
