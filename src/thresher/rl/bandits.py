"""Bandit agents: multi-armed (epsilon-greedy, UCB1, Thompson sampling) and contextual (LinUCB,
a neural epsilon-greedy), one small class each.

A multi-armed agent ignores the state (an empty tensor) and returns a 0-d long action. Built with
``problems=B`` it plays B independent problems in lockstep: ``act`` returns ``[B]`` actions and
``record(action, reward)`` takes ``[B]`` tensors, so a testbed of many problems is one tensor
computation per step instead of B agents. Rewards drift inside a training run, so the value
estimates can forget: ``step_size`` (a constant step, recency-weighted average) or ``window``
(statistics over the last ``window`` pulls only, as in sliding-window UCB).

Every random draw comes from the agent's own generator (``make_generator(seed, "bandit")``),
which ``state_dict`` carries, so a restored agent makes the same future choices.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from thresher.data.memory import ReservoirMemory
from thresher.rl.core import Transition
from thresher.seeding import make_generator

Device = torch.device | str


def argmax_random_ties(values: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Argmax over the last dimension with ties broken uniformly at random: greedy agents start
    with equal estimates, and always taking the lowest index would bias which arm is learnt."""
    best = values == values.max(-1, keepdim=True).values
    noise = torch.rand(values.shape, generator=generator, device=values.device)
    return torch.where(best, noise, -1.0).argmax(-1)


def linear_epsilon(start: float, end: float | None, decay_steps: int, step: int) -> float:
    """Epsilon after ``step`` actions: ``start`` decayed linearly to ``end`` over
    ``decay_steps`` (constant when ``end`` is None or ``decay_steps`` is 0)."""
    if end is None or decay_steps <= 0:
        return start
    return start + (end - start) * min(step / decay_steps, 1.0)


def count_entropy(pulls: torch.Tensor) -> float:
    """Entropy (nats) of how the pulls spread over arms, averaged over problems: log(K) while
    exploring evenly, near 0 once an agent commits to one arm."""
    share = pulls / pulls.sum(-1, keepdim=True).clamp_min(1)
    return float(-(share * share.clamp_min(1e-12).log()).sum(-1).mean())


def _batch(problems: int | None) -> tuple[int, ...]:
    return () if problems is None else (problems,)


class ArmStats:
    """Count, reward sum and sum of squares per arm, over every pull or over the last ``window``
    pulls (kept as a ring of (arm, reward) and summed afresh, so nothing drifts)."""

    def __init__(self, shape: tuple[int, ...], num_arms: int, window: int | None,
                 device: Device) -> None:
        if window is not None and window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.num_arms, self.window = num_arms, window
        self.counts = torch.zeros(*shape, num_arms, device=device)
        self.sums = torch.zeros(*shape, num_arms, device=device)
        self.squares = torch.zeros(*shape, num_arms, device=device)
        if window is not None:
            self.arms = torch.full((*shape, window), -1, dtype=torch.long, device=device)
            self.rewards = torch.zeros(*shape, window, device=device)
            self.position = 0

    def add(self, action: torch.Tensor, reward: torch.Tensor) -> None:
        if self.window is None:
            onehot = nn.functional.one_hot(action, self.num_arms).to(self.sums.dtype)
            self.counts += onehot
            self.sums += onehot * reward[..., None]
            self.squares += onehot * reward[..., None] ** 2
            return
        slot = self.position % self.window
        self.arms[..., slot] = action
        self.rewards[..., slot] = reward
        self.position += 1
        valid = (self.arms >= 0).to(self.rewards.dtype)
        index = self.arms.clamp_min(0)
        for total, value in ((self.counts, valid), (self.sums, self.rewards * valid),
                             (self.squares, self.rewards ** 2 * valid)):
            total.zero_().scatter_add_(-1, index, value)

    def means(self) -> torch.Tensor:
        """Average reward per arm (0 for an arm with no pull in the statistics)."""
        return self.sums / self.counts.clamp_min(1)

    def state_dict(self) -> dict[str, Any]:
        state = {"counts": self.counts, "sums": self.sums, "squares": self.squares}
        if self.window is not None:
            state |= {"arms": self.arms, "rewards": self.rewards, "position": self.position}
        return {k: v.clone() if torch.is_tensor(v) else v for k, v in state.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            current = getattr(self, key)
            if torch.is_tensor(current):
                current.copy_(value)
            else:
                setattr(self, key, value)


def _as_reward(reward: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(reward, dtype=like.dtype, device=like.device)


class Tracker:
    """What every multi-armed agent reports: steps, pulls per arm and the reward so far."""

    def __init__(self, shape: tuple[int, ...], num_arms: int, device: Device) -> None:
        self.steps = 0
        self.pulls = torch.zeros(*shape, num_arms, device=device)
        self.reward_total = torch.zeros(shape, device=device)

    def add(self, action: torch.Tensor, reward: torch.Tensor) -> None:
        """One step of every problem."""
        self.steps += 1
        self.pulls += nn.functional.one_hot(action, self.pulls.shape[-1]).to(self.pulls.dtype)
        self.reward_total += reward

    def add_steps(self, actions: torch.Tensor, rewards: torch.Tensor) -> None:
        """``n`` successive steps of one problem (a contextual agent's batch)."""
        self.steps += actions.numel()
        self.pulls += torch.bincount(actions, minlength=self.pulls.shape[-1]).to(self.pulls.dtype)
        self.reward_total += rewards.sum()

    def diagnostics(self) -> dict[str, float]:
        mean = float(self.reward_total.mean()) / max(self.steps, 1)
        return {"steps": float(self.steps), "mean_reward": mean,
                "count_entropy": count_entropy(self.pulls)}

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "pulls": self.pulls.clone(),
                "reward_total": self.reward_total.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = state["steps"]
        self.pulls.copy_(state["pulls"])
        self.reward_total.copy_(state["reward_total"])


class EpsilonGreedy:
    """Epsilon-greedy over action-value estimates: with probability epsilon a uniform arm, else
    the best estimate. ``epsilon_end`` with ``decay_steps`` decays epsilon linearly; estimates
    are sample averages, or recency-weighted with a constant ``step_size``."""

    def __init__(self, num_arms: int, epsilon: float = 0.1, *, epsilon_end: float | None = None,
                 decay_steps: int = 0, step_size: float | None = None, initial: float = 0.0,
                 problems: int | None = None, seed: int = 0, device: Device = "cpu") -> None:
        self.num_arms, self.epsilon_start = num_arms, epsilon
        self.epsilon_end, self.decay_steps, self.step_size = epsilon_end, decay_steps, step_size
        self.shape, self.device = _batch(problems), torch.device(device)
        self.generator = make_generator(seed, "bandit", device=self.device)
        self.values = torch.full((*self.shape, num_arms), float(initial), device=self.device)
        self.counts = torch.zeros(*self.shape, num_arms, device=self.device)
        self.tracker = Tracker(self.shape, num_arms, self.device)

    @property
    def epsilon(self) -> float:
        return linear_epsilon(self.epsilon_start, self.epsilon_end, self.decay_steps,
                              self.tracker.steps)

    def act(self, state: torch.Tensor | None = None, explore: bool = True) -> torch.Tensor:
        greedy = argmax_random_ties(self.values, self.generator)
        if not explore:
            return greedy
        uniform = torch.randint(self.num_arms, self.shape, generator=self.generator,
                                device=self.device)
        coin = torch.rand(self.shape, generator=self.generator, device=self.device)
        return torch.where(coin < self.epsilon, uniform, greedy)

    def record(self, action: torch.Tensor, reward: torch.Tensor | float) -> None:
        reward = _as_reward(reward, self.values)
        onehot = nn.functional.one_hot(action, self.num_arms).to(self.values.dtype)
        self.counts += onehot
        rate = 1 / self.counts.clamp_min(1) if self.step_size is None else self.step_size
        self.values += onehot * rate * (reward[..., None] - self.values)
        self.tracker.add(action, reward)

    def observe(self, transition: Transition) -> None:
        self.record(transition.action, transition.reward)

    def update(self) -> dict[str, float]:
        return self.tracker.diagnostics() | {"epsilon": self.epsilon}

    def state_dict(self) -> dict[str, Any]:
        return {"values": self.values.clone(), "counts": self.counts.clone(),
                "tracker": self.tracker.state_dict(), "rng": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.values.copy_(state["values"])
        self.counts.copy_(state["counts"])
        self.tracker.load_state_dict(state["tracker"])
        self.generator.set_state(state["rng"])


class _Counted:
    """What UCB and the Thompson samplers share: per-arm statistics, diagnostics and a random
    stream (each sets ``stats``, ``tracker`` and ``generator``); they differ in how they choose."""

    stats: ArmStats
    tracker: Tracker
    generator: torch.Generator

    def record(self, action: torch.Tensor, reward: torch.Tensor | float) -> None:
        reward = _as_reward(reward, self.stats.sums)
        self.stats.add(action, reward)
        self.tracker.add(action, reward)

    def observe(self, transition: Transition) -> None:
        self.record(transition.action, transition.reward)

    def update(self) -> dict[str, float]:
        return self.tracker.diagnostics()

    def state_dict(self) -> dict[str, Any]:
        return {"stats": self.stats.state_dict(), "tracker": self.tracker.state_dict(),
                "rng": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stats.load_state_dict(state["stats"])
        self.tracker.load_state_dict(state["tracker"])
        self.generator.set_state(state["rng"])


class UCB(_Counted):
    """UCB1 (Auer et al. 2002; Sutton & Barto eq. 2.10): the arm maximising
    ``Q(a) + c * sqrt(ln t / N(a))``, each arm tried once first. ``step_size`` gives
    recency-weighted estimates; ``window`` counts and averages over the last pulls only, and
    ``t`` is then capped at the window (sliding-window UCB, Garivier & Moulines 2011)."""

    def __init__(self, num_arms: int, c: float = 2.0, *, step_size: float | None = None,
                 window: int | None = None, problems: int | None = None, seed: int = 0,
                 device: Device = "cpu") -> None:
        if step_size is not None and window is not None:
            raise ValueError("choose step_size or window, not both")
        self.num_arms, self.c, self.step_size = num_arms, c, step_size
        self.shape, self.device = _batch(problems), torch.device(device)
        self.generator = make_generator(seed, "bandit", device=self.device)
        self.stats = ArmStats(self.shape, num_arms, window, self.device)
        self.values = torch.zeros(*self.shape, num_arms, device=self.device)
        self.tracker = Tracker(self.shape, num_arms, self.device)

    def estimates(self) -> torch.Tensor:
        return self.stats.means() if self.step_size is None else self.values

    def act(self, state: torch.Tensor | None = None, explore: bool = True) -> torch.Tensor:
        if not explore:
            return argmax_random_ties(self.estimates(), self.generator)
        steps = self.tracker.steps
        t = steps if self.stats.window is None else min(steps, self.stats.window)
        counts = self.stats.counts
        bonus = self.c * torch.sqrt(math.log(t + 1) / counts.clamp_min(1))
        scores = torch.where(counts > 0, self.estimates() + bonus, math.inf)
        return argmax_random_ties(scores, self.generator)

    def record(self, action: torch.Tensor, reward: torch.Tensor | float) -> None:
        reward = _as_reward(reward, self.values)
        self.stats.add(action, reward)
        if self.step_size is not None:
            onehot = nn.functional.one_hot(action, self.num_arms).to(self.values.dtype)
            first = onehot * (self.stats.counts == 1)  # the first pull sets the estimate
            rate = torch.where(first > 0, 1.0, onehot * self.step_size)
            self.values += rate * (reward[..., None] - self.values)
        self.tracker.add(action, reward)

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {"values": self.values.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.values.copy_(state["values"])


def sample_gamma(concentration: torch.Tensor, generator: torch.Generator,
                 candidates: int = 4) -> torch.Tensor:
    """Gamma(concentration, 1) draws from ``generator`` (torch's own sampler takes none).

    Marsaglia & Tsang (2000): ``d * v`` with ``v = (1 + c x)^3``, x standard normal, accepted
    with probability >= 0.95; ``candidates`` proposals per element make a second round rare.
    A concentration below 1 is drawn at ``a + 1`` and scaled by ``U ** (1 / a)``.
    """
    boost = concentration < 1
    a = torch.where(boost, concentration + 1, concentration)
    d = a - 1 / 3
    c = 1 / torch.sqrt(9 * d)
    out = torch.zeros_like(a)
    pending = torch.ones_like(a, dtype=torch.bool)
    while bool(pending.any()):
        x = torch.randn((candidates, *a.shape), generator=generator, device=a.device)
        u = torch.rand((candidates, *a.shape), generator=generator, device=a.device)
        v = (1 + c * x) ** 3
        log_v = v.clamp_min(1e-30).log()
        accept = (v > 0) & (u.log() < 0.5 * x ** 2 + d - d * v + d * log_v)
        first = accept.to(torch.uint8).argmax(0, keepdim=True)
        draw = (d * v).gather(0, first).squeeze(0)
        take = pending & accept.any(0)
        out = torch.where(take, draw, out)
        pending &= ~take
    scale = torch.rand(a.shape, generator=generator, device=a.device)
    return torch.where(boost, out * scale.pow(1 / concentration), out)


class BernoulliThompson(_Counted):
    """Thompson sampling for rewards in [0, 1]: a Beta(prior_alpha + successes, prior_beta +
    failures) posterior per arm; each step plays the arm whose posterior draw is largest.
    ``window`` keeps the posterior to the last pulls, so it forgets a drifted arm."""

    def __init__(self, num_arms: int, *, prior_alpha: float = 1.0, prior_beta: float = 1.0,
                 window: int | None = None, problems: int | None = None, seed: int = 0,
                 device: Device = "cpu") -> None:
        self.num_arms, self.prior = num_arms, (prior_alpha, prior_beta)
        self.shape, self.device = _batch(problems), torch.device(device)
        self.generator = make_generator(seed, "bandit", device=self.device)
        self.stats = ArmStats(self.shape, num_arms, window, self.device)
        self.tracker = Tracker(self.shape, num_arms, self.device)

    def posterior(self) -> tuple[torch.Tensor, torch.Tensor]:
        successes = self.stats.sums
        return self.prior[0] + successes, self.prior[1] + self.stats.counts - successes

    def act(self, state: torch.Tensor | None = None, explore: bool = True) -> torch.Tensor:
        alpha, beta = self.posterior()
        if not explore:
            return argmax_random_ties(alpha / (alpha + beta), self.generator)
        draws = sample_gamma(torch.stack([alpha, beta]), self.generator)
        return argmax_random_ties(draws[0] / (draws[0] + draws[1]), self.generator)


class GaussianThompson(_Counted):
    """Thompson sampling for Gaussian rewards: a Normal(prior_mean, prior_std^2) prior on each
    arm's mean and its conjugate Normal posterior. The noise is ``noise_std`` when known; with
    ``noise_std=None`` each arm's noise variance is its own sample variance, pooled with one
    pseudo-observation of ``noise_prior_std^2`` (so one pull does not claim zero noise).
    ``window`` keeps the posterior to the last pulls."""

    def __init__(self, num_arms: int, *, prior_mean: float = 0.0, prior_std: float = 1.0,
                 noise_std: float | None = 1.0, noise_prior_std: float = 1.0,
                 window: int | None = None, problems: int | None = None, seed: int = 0,
                 device: Device = "cpu") -> None:
        self.num_arms, self.prior_mean, self.prior_std = num_arms, prior_mean, prior_std
        self.noise_std, self.noise_prior_std = noise_std, noise_prior_std
        self.shape, self.device = _batch(problems), torch.device(device)
        self.generator = make_generator(seed, "bandit", device=self.device)
        self.stats = ArmStats(self.shape, num_arms, window, self.device)
        self.tracker = Tracker(self.shape, num_arms, self.device)

    def noise_variance(self) -> torch.Tensor | float:
        if self.noise_std is not None:
            return self.noise_std ** 2
        n, sums = self.stats.counts, self.stats.sums
        deviations = (self.stats.squares - sums ** 2 / n.clamp_min(1)).clamp_min(0)
        return (deviations + self.noise_prior_std ** 2) / n.clamp_min(1)

    def posterior(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of each arm's posterior over its mean reward."""
        prior_precision, noise = self.prior_std ** -2, self.noise_variance()
        precision = prior_precision + self.stats.counts / noise
        mean = self.prior_mean * prior_precision + self.stats.sums / noise
        return mean / precision, precision.rsqrt()

    def act(self, state: torch.Tensor | None = None, explore: bool = True) -> torch.Tensor:
        mean, std = self.posterior()
        if not explore:
            return argmax_random_ties(mean, self.generator)
        noise = torch.randn(mean.shape, generator=self.generator, device=self.device)
        return argmax_random_ties(mean + std * noise, self.generator)


def _contexts(state: torch.Tensor, dim: int) -> torch.Tensor:
    if state.shape[-1] != dim:
        raise ValueError(f"expected contexts of dimension {dim}, got shape {tuple(state.shape)}")
    return state.reshape(-1, dim)


class LinUCB:
    """Disjoint LinUCB (Li et al. 2010): one ridge regression per arm, ``theta_a = A_a^-1 b_a``
    with ``A_a = ridge * I + sum x x^T``; plays ``argmax_a x.theta_a + alpha * sqrt(x^T A_a^-1
    x)``. ``act`` takes one context ``[dim]`` (a 0-d action) or a batch ``[n, dim]``."""

    def __init__(self, num_arms: int, dim: int, alpha: float = 1.0, *, ridge: float = 1.0,
                 seed: int = 0, device: Device = "cpu") -> None:
        self.num_arms, self.dim, self.alpha = num_arms, dim, alpha
        self.device = torch.device(device)
        self.generator = make_generator(seed, "bandit", device=self.device)
        eye = torch.eye(dim, device=self.device)
        self.A = ridge * eye.repeat(num_arms, 1, 1)
        self.b = torch.zeros(num_arms, dim, device=self.device)
        self.A_inv = self.A.inverse()
        self.tracker = Tracker((), num_arms, self.device)

    def act(self, state: torch.Tensor, explore: bool = True) -> torch.Tensor:
        x = _contexts(state.to(self.device, torch.float32), self.dim)
        theta = (self.A_inv @ self.b[..., None]).squeeze(-1)  # [K, d]
        scores = x @ theta.T
        if explore:
            width = torch.einsum("nd,kde,ne->nk", x, self.A_inv, x).clamp_min(0).sqrt()
            scores = scores + self.alpha * width
        return argmax_random_ties(scores, self.generator).reshape(state.shape[:-1])

    def record(self, context: torch.Tensor, action: torch.Tensor,
               reward: torch.Tensor | float) -> None:
        """Add one ``[dim]`` context or a batch ``[n, dim]`` with its actions and rewards."""
        x = _contexts(context.to(self.device, torch.float32), self.dim)
        a = action.reshape(-1)
        r = _as_reward(reward, self.b).reshape(-1)
        self.A.index_add_(0, a, x[:, :, None] * x[:, None, :])
        self.b.index_add_(0, a, r[:, None] * x)
        self.A_inv = torch.linalg.inv(self.A)
        self.tracker.add_steps(a, r)

    def observe(self, transition: Transition) -> None:
        self.record(transition.state, transition.action, transition.reward)

    def update(self) -> dict[str, float]:
        return self.tracker.diagnostics()

    def state_dict(self) -> dict[str, Any]:
        return {"A": self.A.clone(), "b": self.b.clone(), "tracker": self.tracker.state_dict(),
                "rng": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.A.copy_(state["A"])
        self.b.copy_(state["b"])
        self.A_inv = torch.linalg.inv(self.A)
        self.tracker.load_state_dict(state["tracker"])
        self.generator.set_state(state["rng"])


class NeuralEpsilonGreedy:
    """Epsilon-greedy on an MLP's predicted reward per arm, trained by ``update`` on a minibatch
    of replayed (context, arm, reward) with the squared error of the played arm's output.

    The replay is a reservoir (`thresher.data.memory.ReservoirMemory`) of rows ``[context,
    reward]`` labelled with the arm; the MLP is initialised from the agent's generator, so the
    seed alone fixes the agent."""

    def __init__(self, num_arms: int, dim: int, *, hidden: tuple[int, ...] = (64,),
                 epsilon: float = 0.1, epsilon_end: float | None = None, decay_steps: int = 0,
                 lr: float = 1e-3, batch_size: int = 64, capacity: int = 10_000,
                 learning_starts: int = 64, seed: int = 0, device: Device = "cpu") -> None:
        self.num_arms, self.dim = num_arms, dim
        self.epsilon_start, self.epsilon_end, self.decay_steps = epsilon, epsilon_end, decay_steps
        self.batch_size, self.learning_starts = batch_size, learning_starts
        self.device = torch.device(device)
        self.generator = make_generator(seed, "bandit", device=self.device)
        widths = (dim, *hidden, num_arms)
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        self.network = nn.Sequential(*layers[:-1]).to(self.device)
        init = make_generator(seed, "bandit", "init")
        with torch.no_grad():
            for layer in self.network:  # nn.Linear's default range, from our own stream
                if isinstance(layer, nn.Linear):
                    bound = 1 / math.sqrt(layer.in_features)
                    for parameter in (layer.weight, layer.bias):
                        draw = torch.rand(parameter.shape, generator=init) * 2 - 1
                        parameter.copy_(draw * bound)
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=lr)
        self.memory = ReservoirMemory(capacity, (dim + 1,), self.device, self.generator)
        self.tracker = Tracker((), num_arms, self.device)
        self.last_loss = math.nan

    @property
    def epsilon(self) -> float:
        return linear_epsilon(self.epsilon_start, self.epsilon_end, self.decay_steps,
                              self.tracker.steps)

    def act(self, state: torch.Tensor, explore: bool = True) -> torch.Tensor:
        x = _contexts(state.to(self.device, torch.float32), self.dim)
        with torch.no_grad():
            greedy = argmax_random_ties(self.network(x), self.generator)
        if explore:
            uniform = torch.randint(self.num_arms, greedy.shape, generator=self.generator,
                                    device=self.device)
            coin = torch.rand(greedy.shape, generator=self.generator, device=self.device)
            greedy = torch.where(coin < self.epsilon, uniform, greedy)
        return greedy.reshape(state.shape[:-1])

    def record(self, context: torch.Tensor, action: torch.Tensor,
               reward: torch.Tensor | float) -> None:
        """Add one ``[dim]`` context or a batch ``[n, dim]`` with its actions and rewards."""
        x = _contexts(context.to(self.device, torch.float32), self.dim)
        a = action.reshape(-1).to(self.device)
        r = torch.as_tensor(reward, dtype=torch.float32, device=self.device).reshape(-1)
        self.memory.add(torch.cat([x, r[:, None]], 1), a)
        self.tracker.add_steps(a, r)

    def observe(self, transition: Transition) -> None:
        self.record(transition.state, transition.action, transition.reward)

    def update(self) -> dict[str, float]:
        """One Adam step on a replayed minibatch once ``learning_starts`` samples are in."""
        if len(self.memory) >= self.learning_starts:
            rows, arms = self.memory.sample(self.batch_size)
            predicted = self.network(rows[:, :-1]).gather(1, arms[:, None]).squeeze(1)
            loss = nn.functional.mse_loss(predicted, rows[:, -1])
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.last_loss = float(loss.detach())
        return self.tracker.diagnostics() | {"epsilon": self.epsilon, "loss": self.last_loss}

    def state_dict(self) -> dict[str, Any]:
        return {"network": {k: v.clone() for k, v in self.network.state_dict().items()},
                "optimizer": copy.deepcopy(self.optimizer.state_dict()),
                "memory": {"x": self.memory.x.clone(), "y": self.memory.y.clone(),
                           "seen": self.memory.seen},
                "tracker": self.tracker.state_dict(), "last_loss": self.last_loss,
                "rng": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.memory.x.copy_(state["memory"]["x"])
        self.memory.y.copy_(state["memory"]["y"])
        self.memory.seen = state["memory"]["seen"]
        self.tracker.load_state_dict(state["tracker"])
        self.last_loss = state["last_loss"]
        self.generator.set_state(state["rng"])
