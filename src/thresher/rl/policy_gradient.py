"""Policy-gradient agents for discrete actions: REINFORCE with a baseline, and advantage
actor-critic (A2C) with n-step returns or GAE(λ) and a PPO-clip option.

One file in the single-file style: a small network, the return arithmetic as functions, and two
agents over one shared base (acting, collecting, checkpointing). Both follow `thresher.rl.core`:
``observe`` only collects; ``update`` learns when a learning step is due (REINFORCE at an
episode's end, A2C every ``n_steps``: fixed-length rollouts that run across episode boundaries,
as Stable-Baselines3's do) and returns ``{}`` otherwise.

A network is any module mapping states ``[B, state_dim]`` to ``(logits [B, n_actions],
values [B])``; the built one (`PolicyValueNet`) is initialised from the agent's seed.
An episode cut short (the caller resets without ``done``) is noticed when the next state
observed is not the last one's successor: returns then stop there instead of running on into
the new episode (A2C bootstraps the cut step from the value of its next state, as
Stable-Baselines3 does at a time limit; REINFORCE's Monte-Carlo return just stops).

A2C computes logits and value once per step, in ``act``, and keeps the value and the action's
log-probability for the update, which then needs one forward pass with gradients over the
rollout's states plus the values of the next states nothing acted in (the rollout's last one,
and those of cut episodes).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from thresher.optim.projection import flatten_parameters
from thresher.rl.core import Transition
from thresher.seeding import make_generator

OPTIMIZERS = {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop}
BASELINES = ("value", "average", "none")
REWARD_CLIP = 10.0  # normalised rewards are clipped to [-10, 10], as VecNormalize does


@dataclass
class ReinforceConfig:
    """REINFORCE (Monte-Carlo policy gradient), one update per episode.

    ``baseline``: "value" (a learned critic; advantage = return - V(s)), "average" (a moving
    average of the returns, decay ``baseline_decay``) or "none".
    """

    gamma: float = 0.99
    lr: float = 1e-2
    optimizer: str = "adam"
    hidden: tuple[int, ...] = (64,)
    baseline: str = "value"
    baseline_decay: float = 0.9
    value_coef: float = 0.5
    entropy_coef: float = 0.0
    max_grad_norm: float | None = None
    return_window: int = 10  # mean_return: over this many most recent finished episodes


@dataclass
class A2CConfig:
    """Advantage actor-critic, an update every ``n_steps`` environment steps; a rollout runs
    across episode boundaries (no bootstrapping past a ``done``; a cut episode bootstraps from
    the value of its last next state).

    ``gae_lambda=1`` gives A2C's n-step returns (each step bootstraps at the rollout's end);
    below 1, GAE(λ). ``ppo_clip`` (e.g. 0.2) turns the update into PPO-clip: ``ppo_epochs``
    passes over the rollout with the clipped surrogate. ``normalize_rewards`` divides rewards
    by the running std of the discounted return and clips them to ``±REWARD_CLIP`` (returns
    keep a steady scale for the critic; VecNormalize's rule).
    """

    gamma: float = 0.99
    n_steps: int = 5
    gae_lambda: float = 1.0
    lr: float = 7e-4
    optimizer: str = "adam"
    hidden: tuple[int, ...] = (64, 64)
    shared: bool = False
    entropy_coef: float = 0.01
    value_coef: float = 0.5
    max_grad_norm: float | None = 0.5
    normalize_rewards: bool = False
    ppo_clip: float | None = None
    ppo_epochs: int = 4
    return_window: int = 10


def _check_common(config: ReinforceConfig | A2CConfig) -> None:
    if not 0.0 <= config.gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {config.gamma}")
    if config.lr <= 0:
        raise ValueError(f"lr must be > 0, got {config.lr}")
    if config.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, "
                         f"got {config.optimizer!r}")
    if config.max_grad_norm is not None and config.max_grad_norm <= 0:
        raise ValueError(f"max_grad_norm must be > 0 or None, got {config.max_grad_norm}")
    if config.return_window < 1:
        raise ValueError(f"return_window must be >= 1, got {config.return_window}")


def _trunk(sizes: Sequence[int], generator: torch.Generator) -> nn.ModuleList:
    """Linear layers (each followed by tanh in `_tanh_mlp`): orthogonal weights with
    ReLU-style gain √2, zero biases."""
    return nn.ModuleList(_linear(d_in, d_out, math.sqrt(2), generator)
                         for d_in, d_out in zip(sizes[:-1], sizes[1:]))


def _linear(d_in: int, d_out: int, gain: float, generator: torch.Generator) -> nn.Linear:
    layer = nn.Linear(d_in, d_out)
    nn.init.orthogonal_(layer.weight, gain, generator=generator)
    nn.init.zeros_(layer.bias)
    return layer


def _tanh_mlp(layers: Sequence[nn.Linear], x: torch.Tensor, head: nn.Linear | None = None
              ) -> torch.Tensor:
    """tanh(linear) through ``layers``, then the linear ``head``: the layers' own products
    without their module calls (which cost more than the arithmetic on one small state)."""
    for layer in layers:
        x = torch.addmm(layer.bias, x, layer.weight.t()).tanh()
    return x if head is None else torch.addmm(head.bias, x, head.weight.t())


class PolicyValueNet(nn.Module):
    """States ``[B, D]`` -> (action logits, state values). ``shared``: one tanh trunk under
    both heads; otherwise separate actor and critic MLPs. Without ``critic`` the values are
    None. The policy head starts at gain 0.01: a near-uniform first policy, so early samples
    explore."""

    def __init__(self, state_dim: int, n_actions: int, hidden: Sequence[int] = (64, 64),
                 shared: bool = False, critic: bool = True, seed: int = 0) -> None:
        super().__init__()
        g = make_generator(seed, "init")
        sizes = [state_dim, *hidden]
        width = sizes[-1]
        self.trunk = _trunk(sizes, g) if shared else nn.ModuleList()
        self.actor = nn.ModuleList() if shared else _trunk(sizes, g)
        self.actor_head = _linear(width, n_actions, 0.01, g)
        self.critic = nn.ModuleList() if shared or not critic else _trunk(sizes, g)
        self.critic_head = _linear(width, 1, 1.0, g) if critic else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = _tanh_mlp(self.trunk, x)
        values = (None if self.critic_head is None
                  else _tanh_mlp(self.critic, h, self.critic_head).squeeze(-1))
        return _tanh_mlp(self.actor, h, self.actor_head), values


def discounted_returns(rewards: Sequence[float], ends: Sequence[bool],
                       gamma: float) -> list[float]:
    """Monte-Carlo returns; ``ends[t]``: no return flows into step t from step t + 1."""
    out, running = [0.0] * len(rewards), 0.0
    for t in reversed(range(len(rewards))):
        running = rewards[t] + (0.0 if ends[t] else gamma * running)
        out[t] = running
    return out


def gae(rewards: Sequence[float], values: Sequence[float], next_values: Sequence[float],
        dones: Sequence[bool], ends: Sequence[bool], gamma: float,
        lam: float) -> tuple[list[float], list[float]]:
    """(advantages, value targets) by GAE(λ); ``ends[t]``: step t bootstraps from its own
    next value (episode end, a cut, the rollout's last step). λ = 1 gives n-step returns."""
    advantages, running = [0.0] * len(rewards), 0.0
    for t in reversed(range(len(rewards))):
        bootstrap = 0.0 if dones[t] else gamma * next_values[t]
        delta = rewards[t] + bootstrap - values[t]
        running = delta + (0.0 if ends[t] or dones[t] else gamma * lam * running)
        advantages[t] = running
    return advantages, [a + v for a, v in zip(advantages, values)]


class _RunningVariance:
    """Running variance of a scalar stream for reward normalisation, started from a prior of
    variance 1 worth ``prior`` observations (as Stable-Baselines3's VecNormalize does): with
    the plain sample variance, a stream of zeros (a sparse reward before it is first found)
    has a variance near 0, and the first real reward would be divided by it."""

    def __init__(self, prior: float = 1e-4) -> None:
        self.count, self.mean, self.m2 = prior, 0.0, prior  # m2 / count = 1

    def add(self, x: float) -> None:
        self.count += 1
        delta = x - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (x - self.mean)

    def std(self) -> float:
        return math.sqrt(self.m2 / self.count + 1e-8)


class _PolicyAgent:
    """What both agents share: acting by the policy, collecting transitions, checkpoints."""

    def __init__(self, state_dim: int, n_actions: int, config: ReinforceConfig | A2CConfig,
                 seed: int, device: torch.device | str, network: nn.Module | None,
                 critic: bool, shared: bool) -> None:
        _check_common(config)
        self.config, self.seed, self.n_actions = config, seed, n_actions
        self.device = torch.device(device)
        self.flat = None  # the built network's parameters as one vector (`flatten_parameters`)
        if network is None:
            network = PolicyValueNet(state_dim, n_actions, config.hidden, shared, critic,
                                     seed).to(self.device)
            self.flat = flatten_parameters(network.parameters())
        self.network = network.to(self.device)
        self.params = [self.flat] if self.flat is not None else list(self.network.parameters())
        self.optimizer = OPTIMIZERS[config.optimizer](self.params, lr=config.lr)
        self.generator = make_generator(seed, "actions", device=self.device)
        self.buffer: list[Transition] = []
        self.ends: list[bool] = []
        self.steps = self.updates = 0
        self.episode_return = 0.0
        self.returns: deque[float] = deque(maxlen=config.return_window)
        self.expected: torch.Tensor | None = None  # the next state if the episode goes on

    def _cut(self) -> None:
        """The last episode was cut short (a reset without ``done``): returns stop there."""
        if self.ends:
            self.ends[-1] = True
        self.episode_return = 0.0

    def act(self, state: torch.Tensor, explore: bool = True) -> torch.Tensor:
        """A 0-d long action: sampled from the policy, or its most likely action."""
        with torch.inference_mode():
            logits = self.network(state.to(self.device, torch.float32).unsqueeze(0))[0][0]
        if not explore:
            return logits.argmax()
        return torch.multinomial(torch.softmax(logits, -1), 1, generator=self.generator)[0]

    def observe(self, transition: Transition) -> None:
        t = Transition(transition.state.to(self.device, torch.float32),
                       transition.action.to(self.device, torch.long),
                       float(transition.reward),
                       transition.next_state.to(self.device, torch.float32),
                       bool(transition.done))
        if self.expected is not None and not torch.equal(self.expected, t.state):
            self._cut()
        self.expected = None if t.done else t.next_state
        self.steps += 1
        self.episode_return += t.reward
        if t.done:
            self.returns.append(self.episode_return)
            self.episode_return = 0.0
        self.buffer.append(t)
        self.ends.append(t.done)

    def _take_rollout(self) -> tuple[torch.Tensor, ...]:
        """Stacked states, actions, next states of the buffer, which is emptied."""
        states = torch.stack([t.state for t in self.buffer])
        actions = torch.stack([t.action for t in self.buffer])
        next_states = torch.stack([t.next_state for t in self.buffer])
        return states, actions, next_states

    def _step(self, loss: torch.Tensor) -> None:
        if self.flat is not None:
            self.flat.grad.zero_()  # the layers' gradients are views of it: keep them
        else:
            self.optimizer.zero_grad()
        loss.backward()
        if self.config.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.params, self.config.max_grad_norm)
        self.optimizer.step()

    def _mean_return(self) -> float:
        return sum(self.returns) / len(self.returns) if self.returns else math.nan

    def state_dict(self) -> dict[str, Any]:
        """Networks, optimiser, counters, RNG and the unfinished rollout (plain tensors and
        numbers: loads with ``torch.load(weights_only=True)``)."""
        return {"network": self.network.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(), "steps": self.steps,
                "updates": self.updates, "episode_return": self.episode_return,
                "returns": list(self.returns), "ends": list(self.ends),
                "expected": self.expected,
                "buffer": [(t.state, t.action, t.reward, t.next_state, t.done)
                           for t in self.buffer]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"].cpu())
        self.steps, self.updates = state["steps"], state["updates"]
        self.episode_return = state["episode_return"]
        self.returns = deque(state["returns"], maxlen=self.config.return_window)
        self.ends = list(state["ends"])
        expected = state["expected"]
        self.expected = None if expected is None else expected.to(self.device)
        self.buffer = [Transition(s.to(self.device), a.to(self.device), r,
                                  n.to(self.device), d) for s, a, r, n, d in state["buffer"]]


class Reinforce(_PolicyAgent):
    """REINFORCE with a baseline: after each episode, ascend mean_t (G_t - b_t) log π(a_t|s_t)
    with G_t the discounted return from t."""

    def __init__(self, state_dim: int, n_actions: int,
                 config: ReinforceConfig | None = None, seed: int = 0,
                 device: torch.device | str = "cpu", network: nn.Module | None = None) -> None:
        config = config if config is not None else ReinforceConfig()
        if config.baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {', '.join(BASELINES)}, "
                             f"got {config.baseline!r}")
        if not 0.0 <= config.baseline_decay < 1.0:
            raise ValueError(f"baseline_decay must be in [0, 1), got {config.baseline_decay}")
        super().__init__(state_dim, n_actions, config, seed, device, network,
                         critic=config.baseline == "value", shared=False)
        self.average = 0.0  # the moving-average baseline

    def update(self) -> dict[str, float]:
        if not self.buffer or not self.buffer[-1].done:
            return {}
        cfg = self.config
        states, actions, _ = self._take_rollout()
        returns = torch.tensor(discounted_returns([t.reward for t in self.buffer], self.ends,
                                                  cfg.gamma), device=self.device)
        self.buffer, self.ends = [], []
        logits, values = self.network(states)
        value_loss = torch.zeros((), device=self.device)
        if cfg.baseline == "value":
            advantages = returns - values.detach()
            value_loss = F.mse_loss(values, returns)
        elif cfg.baseline == "average":
            advantages = returns - self.average
            self.average += (1 - cfg.baseline_decay) * (returns.mean().item() - self.average)
        else:
            advantages = returns
        dist = torch.distributions.Categorical(logits=logits)
        entropy = dist.entropy().mean()
        policy_loss = -(dist.log_prob(actions) * advantages).mean()
        self._step(policy_loss + cfg.value_coef * value_loss - cfg.entropy_coef * entropy)
        self.updates += 1
        return {"policy_loss": policy_loss.item(),
                "value_loss": value_loss.item() if cfg.baseline == "value" else math.nan,
                "entropy": entropy.item(), "mean_return": self._mean_return(),
                "updates": float(self.updates)}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "average": self.average}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.average = state["average"]


class ActorCritic(_PolicyAgent):
    """A2C (or PPO-clip with ``config.ppo_clip``): policy gradient on GAE advantages, a critic
    regressed on the value targets, an entropy bonus, gradient-norm clipping."""

    def __init__(self, state_dim: int, n_actions: int, config: A2CConfig | None = None,
                 seed: int = 0, device: torch.device | str = "cpu",
                 network: nn.Module | None = None) -> None:
        config = config if config is not None else A2CConfig()
        if config.n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {config.n_steps}")
        if not 0.0 <= config.gae_lambda <= 1.0:
            raise ValueError(f"gae_lambda must be in [0, 1], got {config.gae_lambda}")
        if config.ppo_clip is not None and config.ppo_clip <= 0:
            raise ValueError(f"ppo_clip must be > 0 or None, got {config.ppo_clip}")
        if config.ppo_epochs < 1:
            raise ValueError(f"ppo_epochs must be >= 1, got {config.ppo_epochs}")
        super().__init__(state_dim, n_actions, config, seed, device, network,
                         critic=True, shared=config.shared)
        self.reward_scale = _RunningVariance()
        self.discounted = 0.0  # the running discounted return the scale is taken from
        self.values: list[float] = []  # V(s_t) per buffered step, computed when acting
        self.log_probs: list[float] = []  # log π(a_t|s_t) per buffered step, when acting
        # (state, action, value, log-prob) of the last `act`, until its step is observed
        self.pending: tuple[torch.Tensor, torch.Tensor, float, float] | None = None

    def _cut(self) -> None:
        super()._cut()
        self.discounted = 0.0

    def _evaluate(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and value of one state, no graph."""
        with torch.inference_mode():
            logits, value = self.network(state.unsqueeze(0))
        return logits[0], value[0]

    def act(self, state: torch.Tensor, explore: bool = True) -> torch.Tensor:
        """A 0-d long action: sampled from the policy, or its most likely action. The state's
        value and the action's log-probability are kept for when the step is observed."""
        state = state.to(self.device, torch.float32)
        logits, value = self._evaluate(state)
        log_probs = torch.log_softmax(logits, -1)
        if explore:
            action = torch.multinomial(log_probs.exp(), 1, generator=self.generator)[0]
        else:
            action = logits.argmax()
        self.pending = (state, action, value.item(), log_probs[action].item())
        return action

    def observe(self, transition: Transition) -> None:
        super().observe(transition)
        t = self.buffer[-1]
        pending, self.pending = self.pending, None
        if (pending is not None and (pending[0] is t.state or torch.equal(pending[0], t.state))
                and (pending[1] is transition.action or int(pending[1]) == int(t.action))):
            value, log_prob = pending[2], pending[3]
        else:  # not acted on by `act` (or not in this state): evaluate it now
            logits, v = self._evaluate(t.state)
            value, log_prob = v.item(), torch.log_softmax(logits, -1)[t.action].item()
        self.values.append(value)
        self.log_probs.append(log_prob)
        if self.config.normalize_rewards:
            self.discounted = self.discounted * self.config.gamma + t.reward
            self.reward_scale.add(self.discounted)
            clip = REWARD_CLIP
            t.reward = min(max(t.reward / self.reward_scale.std(), -clip), clip)
            if t.done:
                self.discounted = 0.0

    def update(self) -> dict[str, float]:
        if len(self.buffer) < self.config.n_steps:
            return {}
        cfg = self.config
        buffer, values, old_log_probs = self.buffer, self.values, self.log_probs
        ends = self.ends[:-1] + [True]
        dones = [t.done for t in buffer]
        self.buffer, self.ends, self.values, self.log_probs = [], [], [], []
        # next values: the next step's value where the episode goes on in the rollout;
        # V(next state) at the rollout's end and at cuts; nothing past a done
        next_values = values[1:] + [0.0]
        boot = [i for i, (e, d) in enumerate(zip(ends, dones)) if e and not d]
        if boot:
            with torch.inference_mode():
                boot_values = self.network(torch.stack([buffer[i].next_state
                                                        for i in boot]))[1].tolist()
            for i, v in zip(boot, boot_values):
                next_values[i] = v
        advantages, targets = gae([t.reward for t in buffer], values, next_values, dones, ends,
                                  cfg.gamma, cfg.gae_lambda)
        states = torch.stack([t.state for t in buffer])
        actions = torch.stack([t.action for t in buffer]).unsqueeze(-1)
        advantages = torch.tensor(advantages, device=self.device)
        targets = torch.tensor(targets, device=self.device)
        old = torch.tensor(old_log_probs, device=self.device)
        for _ in range(cfg.ppo_epochs if cfg.ppo_clip is not None else 1):
            logits, values_now = self.network(states)
            log_probs = torch.log_softmax(logits, -1)
            log_prob = log_probs.gather(-1, actions).squeeze(-1)
            if cfg.ppo_clip is None:
                policy_loss = -(log_prob * advantages).mean()
            else:
                ratio = torch.exp(log_prob - old)
                clipped = ratio.clamp(1 - cfg.ppo_clip, 1 + cfg.ppo_clip) * advantages
                policy_loss = -torch.minimum(ratio * advantages, clipped).mean()
            value_loss = F.mse_loss(values_now, targets)
            entropy = -(log_probs.exp() * log_probs).sum(-1).mean()
            self._step(policy_loss + cfg.value_coef * value_loss - cfg.entropy_coef * entropy)
        self.updates += 1
        return {"policy_loss": policy_loss.item(), "value_loss": value_loss.item(),
                "entropy": entropy.item(), "mean_return": self._mean_return(),
                "updates": float(self.updates)}

    def state_dict(self) -> dict[str, Any]:
        scale = self.reward_scale
        return {**super().state_dict(), "discounted": self.discounted,
                "reward_scale": (scale.count, scale.mean, scale.m2),
                "values": list(self.values), "log_probs": list(self.log_probs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.discounted = state["discounted"]
        self.reward_scale.count, self.reward_scale.mean, self.reward_scale.m2 = (
            state["reward_scale"])
        self.values, self.log_probs = list(state["values"]), list(state["log_probs"])
        self.pending = None  # an `act` not yet observed is evaluated again when it is
