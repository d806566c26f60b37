"""What every agent in `thresher.rl` shares: the transition it observes and the interface.

An agent knows nothing of what its actions mean. States and actions are tensors (a bandit's
state is an empty tensor; a discrete action a 0-d long tensor), on any device. Each agent is a
plain class in its algorithm family's file (bandits, dqn, policy_gradient) with:

- ``act(state, explore=True) -> action``: with ``explore=False`` the greedy choice;
- ``observe(transition)``: what happened after an action;
- ``update() -> dict``: a learning step where one is due, and its diagnostics (TD loss,
  epsilon, policy entropy, value loss, mean reward, ...) as plain floats a study can log;
- ``state_dict()`` / ``load_state_dict(state)``: to carry an agent's learning from one run to
  the next;
- a ``seed`` (its random draws come from `thresher.seeding`) and a ``device``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch


@dataclass
class Transition:
    """One step: the state an action was taken in, the action, its reward, the next state and
    whether the episode ended there (no bootstrapping past it)."""

    state: torch.Tensor
    action: torch.Tensor
    reward: float
    next_state: torch.Tensor
    done: bool


class Agent(Protocol):
    def act(self, state: torch.Tensor, explore: bool = True) -> torch.Tensor: ...

    def observe(self, transition: Transition) -> None: ...

    def update(self) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
