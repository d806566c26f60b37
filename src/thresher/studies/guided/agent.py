"""The agent that chooses the selection strategy for the next interval (an evolved
composition runs through `thresher.select.epoch`'s ``expression`` strategy).

State: the phase detector's latest z-scores (``grad_norm``, ``curvature``, ``alignment``,
``utility``; None as 0, clipped to [-5, 5]), its relative loss change (clipped to [-1, 1]),
a one-hot of the last action, the training progress in [0, 1] and a constant 1. Reward: the
validation-accuracy gain over the interval (times ``reward_scale``) divided by the compute
spent in it, in forward-equivalents per full training epoch (a backward costs about two
forwards): (train forward + 2 train backward + selection forward) / (3 N), so a full epoch
costs 1 and a selection pass 1/3.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from thresher.rl.bandits import UCB, LinUCB
from thresher.rl.core import Transition
from thresher.rl.policy_gradient import A2CConfig, ActorCritic
from thresher.seeding import derive_seed

Z_CLIP = 5.0
Z_SIGNALS = ("grad_norm", "curvature", "alignment", "utility")


def state_dim(actions: int) -> int:
    return len(Z_SIGNALS) + 1 + actions + 2


def make_state(observed: dict[str, Any] | None, last: int | None, actions: int,
               progress: float) -> torch.Tensor:
    """The agent's state (finite by construction)."""
    z = (observed or {}).get("z", {}) or {}
    values = []
    for name in Z_SIGNALS:
        v = z.get(name)
        v = 0.0 if v is None or not math.isfinite(v) else max(-Z_CLIP, min(Z_CLIP, v))
        values.append(v)
    change = ((observed or {}).get("signals", {}) or {}).get("loss_change", 0.0)
    change = 0.0 if change is None or not math.isfinite(change) else max(-1.0, min(1.0, change))
    onehot = [0.0] * actions
    if last is not None:
        onehot[last] = 1.0
    return torch.tensor([*values, change, *onehot, progress, 1.0], dtype=torch.float32)


class Chooser:
    """Picks an action per interval and learns from the reward of the interval before
    (``random`` and ``fixed:<strategy>`` choose without learning: the controls)."""

    def __init__(self, policy: str, bandit: str, actions: list[str], seed: int,
                 decisions: int) -> None:
        self.policy, self.actions = policy, actions
        k, dim = len(actions), state_dim(len(actions))
        agent_seed = derive_seed(seed, "guided", "agent")
        self.agent: Any = None
        if policy == "bandit":
            self.agent = LinUCB(k, dim, alpha=1.0, seed=agent_seed) if bandit == "linucb" \
                else UCB(k, seed=agent_seed)
        elif policy == "actor_critic":
            self.agent = ActorCritic(dim, k, A2CConfig(n_steps=max(1, min(4, decisions)),
                                                       hidden=(32,), lr=3e-3, gamma=0.9),
                                     seed=agent_seed)
        self.fixed = policy[6:] if policy.startswith("fixed:") else None
        self.rng = torch.Generator().manual_seed(agent_seed)  # the random policy's draws
        self.last: int | None = None
        self.state: torch.Tensor | None = None
        self.diagnostics: list[dict[str, float]] = []

    def act(self, state: torch.Tensor) -> int:
        if self.fixed is not None:
            action = self.actions.index(self.fixed) if self.fixed in self.actions else 0
        elif self.policy == "random":  # the control an agent must beat: uniform choices
            action = int(torch.randint(len(self.actions), (), generator=self.rng))
        else:
            a = self.agent.act(state if isinstance(self.agent, (LinUCB, ActorCritic))
                               else torch.empty(0))
            action = int(a)
        self.last, self.state = action, state
        return action

    def learn(self, reward: float, next_state: torch.Tensor, done: bool) -> None:
        if self.agent is None or self.state is None or self.last is None:
            return
        self.agent.observe(Transition(self.state, torch.tensor(self.last), float(reward),
                                      next_state, done))
        diag = self.agent.update()
        self.diagnostics.append({k: float(v) for k, v in diag.items()
                                 if isinstance(v, (int, float))})
