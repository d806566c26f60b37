"""Who sets the loss weights while training: fixed weights, schedules, the RL monitor, the
meta-controller and the VAE's KL controls, all behind one small interface the study drives
from `fit`'s hooks (``after_step`` -> `step`, ``before_epoch`` -> `epoch_start`, ``on_epoch``
-> `epoch_end`). Each keeps a log of the weights it set, for the trajectory figure and CSV.

The monitor's reward and the controller's outcome come from validation losses computed as
they are (plain cross-entropy, or the beta=1 negative ELBO): no policy ever weights or
rescales a validation computation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from thresher.rl.core import Agent, Transition
from thresher.studies.adaptive_loss.config import ControllerConfig, KLControlConfig
from thresher.train.losses import LossExecutor

REWARD_CLIP = 10.0  # percent validation improvement per interval, either way
FEATURE_CLIP = 5.0


class Policy:
    """Fixed weights: the base class is the policy that never changes them."""

    def __init__(self, weights: list[float]) -> None:
        self.initial = list(weights)
        self.ex: LossExecutor | None = None
        self.total = self.per_epoch = 0
        self.log: list[dict[str, Any]] = []  # {"step", "weights", ...} whenever they change

    def begin(self, ex: LossExecutor, total_steps: int, per_epoch: int) -> None:
        self.ex, self.total, self.per_epoch = ex, total_steps, per_epoch
        self.set(0, self.initial)

    def set(self, step: int, weights: list[float], **extra: Any) -> None:
        kept = self.ex.set_weights(weights)
        self.log.append({"step": step, "weights": kept, **extra})

    def step(self, step) -> None:
        return None

    def epoch_start(self, epoch: int) -> None:
        return None

    def epoch_end(self, row: dict) -> None:
        return None

    def finish(self) -> dict[str, Any]:
        """What the policy learned or did, as plain JSON."""
        return {}


class Scheduled(Policy):
    """Weights as a function of training progress in [0, 1) (KL annealing)."""

    def __init__(self, schedule: Callable[[float], list[float]]) -> None:
        super().__init__(schedule(0.0))
        self.schedule = schedule
        self._last: list[float] | None = None

    def step(self, step) -> None:
        weights = self.schedule((step.step + 1) / self.total)
        if weights != self._last:
            self._last = weights
            self.set(step.step + 1, weights)


def linear_anneal(cfg: KLControlConfig) -> Callable[[float], list[float]]:
    """beta from 0 up to 1 over ``warmup_fraction`` of training, then 1."""
    return lambda t: [min(1.0, t / cfg.warmup_fraction) if cfg.warmup_fraction else 1.0]


def cyclical(cfg: KLControlConfig) -> Callable[[float], list[float]]:
    """Fu et al. (2019): ``cycles`` cycles, beta rising linearly over the first ``ratio`` of
    each and held at 1 for the rest."""
    def beta(t: float) -> list[float]:
        tau = (t * cfg.cycles) % 1.0
        return [min(1.0, tau / cfg.ratio) if cfg.ratio else 1.0]
    return beta


class PIControl(Policy):
    """ControlVAE's PI controller (Shao et al. 2020) on the batch KL: with error
    ``e = kl_target - KL``, ``beta = kp / (1 + exp(e)) - ki * sum(e) + beta_min``, clipped to
    ``[beta_min, beta_max]``; the integral stops accumulating while beta is saturated
    (anti-windup). A KL above target raises beta, one below lowers it."""

    def __init__(self, cfg: KLControlConfig) -> None:
        super().__init__([cfg.beta_min])
        self.cfg = cfg
        self.integral = 0.0

    def step(self, step) -> None:
        c = self.cfg
        kl = self.ex.read()["term_kl"]  # the batch's mean KL (this policy is the only reader)
        error = c.kl_target - kl
        p = c.kp / (1.0 + math.exp(min(error, 50.0)))
        beta = p - c.ki * (self.integral + error) + c.beta_min
        if c.beta_min < beta < c.beta_max:
            self.integral += error
        self.set(step.step + 1, [min(max(beta, c.beta_min), c.beta_max)], kl=kl)


@dataclass
class MetaState:
    """What the meta-controller carries across epochs and runs."""

    prior: list[float]  # log auxiliary weights
    step: list[float]  # per weight: the mirrored perturbation and the prior's step, log space
    last_sign: list[float]  # per weight: the direction of the last move (0: none yet)
    pairs: int = 0  # mirrored epoch pairs judged, over all runs
    runs: int = 0
    history: list[dict[str, float]] = field(default_factory=list)  # per pair, this run

    @classmethod
    def fresh(cls, weights: list[float], step: float) -> MetaState:
        return cls([math.log(w) for w in weights], [step] * len(weights), [0.0] * len(weights))


class MetaController:
    """The slow outer loop, learning across epochs and runs: mirrored sampling with Rprop's
    step rule on the log auxiliary weights.

    After a first epoch at the prior, epochs come in pairs: the first trains at
    ``exp(prior + step * e)``, the second at ``exp(prior - step * e)``, with ``e`` a random
    sign per weight. Comparing the two epochs'
    relative validation improvements (``d = gain_first - gain_second``) cancels most of the
    training-progress trend that any single epoch's gain is dominated by. Each weight's prior
    then moves by its step in the direction ``sign(d * (u_first - u_second))``, where ``u`` are
    the log-weights actually used over each epoch (their mean, so that in mode ``full`` the
    monitor's adjustments inside an epoch are what gets credited). A step grows by ``grow``
    while its direction repeats and shrinks by ``shrink`` when it reverses (Rprop, Riedmiller
    and Braun 1993): when the comparison is noise the directions flip at random and the steps
    shrink, so the controller settles instead of wandering. The state is saved at the end of a
    run and loaded by the next (``--meta-state``).
    """

    def __init__(self, cfg: ControllerConfig, state: MetaState, generator: torch.Generator
                 ) -> None:
        self.cfg, self.state, self.generator = cfg, state, generator
        self.k = len(state.prior)
        self.state.history = []
        self.signs = [0.0] * self.k
        self._log_sum = [0.0] * self.k
        self._count = 0
        self._first: tuple[float, list[float]] | None = None  # the pair's first epoch
        self.prev_val: float | None = None
        self.epochs = 0

    def epoch_weights(self) -> list[float]:
        """The next epoch's weights: a fresh mirrored pair starts, or its second half."""
        s = self.state
        self.epochs += 1
        if self.epochs == 1:  # the first epoch's gain is mostly the start: it trains at the prior
            return [math.exp(m) for m in s.prior]
        if self._first is None:
            draws = torch.randint(2, (self.k,), generator=self.generator).tolist()
            self.signs = [2.0 * d - 1.0 for d in draws]
            sign = 1.0
        else:
            sign = -1.0
        return [math.exp(m + sign * st * e) for m, st, e in zip(s.prior, s.step, self.signs)]

    def observe_weights(self, weights: list[float]) -> None:
        for i, w in enumerate(weights):
            self._log_sum[i] += math.log(max(w, 1e-8))
        self._count += 1

    def epoch_end(self, val_loss: float) -> None:
        s, c = self.state, self.cfg
        used = [v / max(self._count, 1) for v in self._log_sum]
        self._log_sum, self._count = [0.0] * self.k, 0
        prev, self.prev_val = self.prev_val, val_loss
        gain = (prev - val_loss) / max(abs(prev), 1e-8) if prev is not None else math.nan
        if self.epochs <= 1:
            return
        if self._first is None:
            self._first = (gain, used)
            return
        (gain_a, used_a), self._first = self._first, None
        d = gain_a - gain
        if not math.isfinite(d):
            return
        for i in range(self.k):
            direction = math.copysign(1.0, d * (used_a[i] - used[i])) \
                if d * (used_a[i] - used[i]) != 0 else 0.0
            if direction and s.last_sign[i]:
                factor = c.grow if direction == s.last_sign[i] else c.shrink
                s.step[i] = min(max(s.step[i] * factor, c.step_min), c.step_max)
            s.prior[i] += direction * s.step[i]
            if direction:
                s.last_sign[i] = direction
        s.pairs += 1
        s.history.append({"gain_difference": d, **{f"prior{i}": m for i, m in
                                                   enumerate(s.prior)},
                          **{f"step{i}": st for i, st in enumerate(s.step)}})

    def finish(self) -> dict[str, Any]:
        self.state.runs += 1
        return asdict(self.state)


class Monitor(Policy):
    """The fast inner loop: every ``interval`` steps an agent (a `thresher.rl` DQN, or a
    uniformly random policy for the jitter control) sees the training dynamics and acts.

    State (all scale-free): the base loss over the interval relative to the first interval's,
    its trend (relative change from the previous interval), the log gradient norm relative to
    the first interval's, the train/validation gap relative to the validation loss, progress,
    each auxiliary weight's position in its clip range on a log scale, and the last reward.
    Actions: keep the weights, or multiply or divide one weight by ``scale``. Reward:
    the percent drop of the validation loss over the interval, clipped to +-10.
    """

    def __init__(self, weights: list[float], agent: Agent, probe: Callable[[], float],
                 interval: int, scale: float, controller: MetaController | None = None
                 ) -> None:
        super().__init__(weights)
        self.agent, self.probe, self.interval = agent, probe, interval
        self.scale, self.controller = scale, controller
        self.k = len(weights)
        self.n_actions = 1 + 2 * self.k
        self.state: torch.Tensor | None = None
        self.action: torch.Tensor | None = None
        self.first: dict[str, float] = {}
        self.prev: dict[str, float] = {}
        self.reward = 0.0
        self.rewards: list[float] = []
        self.actions: list[int] = []
        self.diagnostics: list[dict[str, float]] = []

    @staticmethod
    def state_dim(k: int) -> int:
        return 6 + k

    def begin(self, ex: LossExecutor, total_steps: int, per_epoch: int) -> None:
        super().begin(ex, total_steps, per_epoch)
        self.prev["val"] = self.probe()
        ex.read()  # start the interval's statistics from zero

    def _features(self, stats: dict[str, float], val: float, step: int) -> torch.Tensor:
        base = stats[f"term_{self.ex.names[0]}"]
        norm = max(stats["grad_norm"], 1e-12)
        self.first.setdefault("base", max(abs(base), 1e-8))
        self.first.setdefault("norm", norm)
        prev_base = self.prev.get("base", base)
        lo, hi = math.log(max(self.ex.cfg.w_min, 1e-3)), math.log(self.ex.cfg.w_max)
        weights = [(math.log(max(w, 1e-3)) - lo) / max(hi - lo, 1e-8) for w in self.ex.weights]
        values = [base / self.first["base"], (base - prev_base) / max(abs(prev_base), 1e-8),
                  math.log(norm / self.first["norm"]), (val - base) / max(abs(val), 1e-8),
                  step / self.total, *weights, self.reward / REWARD_CLIP]
        self.prev["base"] = base
        return torch.tensor(values).nan_to_num(0.0).clamp(-FEATURE_CLIP, FEATURE_CLIP)

    def _decide(self, step: int, done: bool) -> None:
        stats = self.ex.read()
        val = self.probe()
        gain = 100.0 * (self.prev["val"] - val) / max(abs(self.prev["val"]), 1e-8)
        self.reward = max(-REWARD_CLIP, min(REWARD_CLIP, gain)) if math.isfinite(gain) \
            else -REWARD_CLIP
        self.prev["val"] = val
        state = self._features(stats, val, step)
        if self.state is not None:
            self.agent.observe(Transition(self.state, self.action, self.reward, state, done))
            self.diagnostics.append({"step": step, **self.agent.update()})
            self.rewards.append(self.reward)
        if done:
            return
        self.state, self.action = state, self.agent.act(state)
        a = int(self.action)
        self.actions.append(a)
        weights = list(self.ex.weights)
        if a:
            i, up = (a - 1) // 2, (a - 1) % 2 == 0
            floor = max(self.ex.cfg.w_min, 1e-2)
            weights[i] = max(weights[i], floor) * (self.scale if up else 1.0 / self.scale)
        self.set(step, weights, reward=self.reward, action=a, val=val)

    def step(self, step) -> None:
        n = step.step + 1
        if self.controller is not None:
            self.controller.observe_weights(self.ex.weights)
        if n % self.interval == 0 and n < self.total:
            self._decide(n, done=False)

    def epoch_start(self, epoch: int) -> None:
        if self.controller is not None:
            self.set((epoch - 1) * self.per_epoch, self.controller.epoch_weights())

    def epoch_end(self, row: dict) -> None:
        if self.controller is not None:
            self.controller.epoch_end(row["val_loss"])

    def finish(self) -> dict[str, Any]:
        self._decide(self.total, done=True)
        counts = [0] * self.n_actions
        for a in self.actions:
            counts[a] += 1
        out = {"decisions": len(self.actions), "mean_reward": _mean(self.rewards),
               "late_mean_reward": _mean(self.rewards[len(self.rewards) // 2:]),
               "action_counts": counts, "diagnostics": self.diagnostics}
        if self.controller is not None:
            out["controller"] = self.controller.finish()
        return out


class Controlled(Policy):
    """The meta-controller alone (mode ``controller_only``): weights change once an epoch."""

    def __init__(self, controller: MetaController) -> None:
        super().__init__([math.exp(m) for m in controller.state.prior])
        self.controller = controller

    def step(self, step) -> None:
        self.controller.observe_weights(self.ex.weights)

    def epoch_start(self, epoch: int) -> None:
        self.set((epoch - 1) * self.per_epoch, self.controller.epoch_weights())

    def epoch_end(self, row: dict) -> None:
        self.controller.epoch_end(row["val_loss"])

    def finish(self) -> dict[str, Any]:
        return {"controller": self.controller.finish()}


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
