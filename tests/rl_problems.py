"""Small MDPs with known optimal policies, for showing that an RL agent learns.

`Chain` is a corridor of ``n`` states, one-hot encoded as float vectors. An episode starts in
state 1; action 1 moves right, action 0 left. Reaching the far end (state ``n - 1``) pays 1 and
ends the episode; reaching the near end (state 0) pays ``lure`` (0.1 by default) and ends it.
Every other step pays 0. The lure makes it a test of exploration and bootstrapping: a random
walk from state 1 reaches the far end first only with probability 1 / (n - 1), so a random or
myopic policy collects the lure, while the optimal policy (for any discount with
``gamma ** (n - 3) > lure``) moves right in every state and collects 1 in ``n - 2`` steps.

With ``slip > 0`` each action is replaced by the other one with that probability, drawn from the
chain's own seeded generator; the optimal action stays "right".
"""

from __future__ import annotations

import torch

from thresher.rl.core import Agent
from thresher.seeding import make_generator

LEFT, RIGHT = 0, 1


class Chain:
    """A corridor MDP whose optimal action is ``RIGHT`` in every non-terminal state."""

    n_actions = 2

    def __init__(self, n: int = 10, seed: int = 0, lure: float = 0.1, slip: float = 0.0,
                 device: torch.device | str = "cpu") -> None:
        if n < 4:
            raise ValueError(f"a chain needs at least 4 states, got n={n}")
        self.n_states = n
        self.lure = lure
        self.slip = slip
        self.device = torch.device(device)
        self.generator = make_generator(seed, "chain")
        self.position = 1
        self.optimal_return = 1.0  # undiscounted, collected in n - 2 steps

    def _one_hot(self, position: int) -> torch.Tensor:
        state = torch.zeros(self.n_states, device=self.device)
        state[position] = 1.0
        return state

    def reset(self) -> torch.Tensor:
        self.position = 1
        return self._one_hot(self.position)

    def step(self, action: torch.Tensor | int) -> tuple[torch.Tensor, float, bool]:
        """Apply ``action``; returns ``(next_state, reward, done)``."""
        if not 0 < self.position < self.n_states - 1:
            raise RuntimeError("the episode has ended: call reset()")
        move = int(action)
        if move not in (LEFT, RIGHT):
            raise ValueError(f"action must be 0 (left) or 1 (right), got {move}")
        if self.slip > 0 and torch.rand((), generator=self.generator).item() < self.slip:
            move = 1 - move
        self.position += 1 if move == RIGHT else -1
        if self.position == self.n_states - 1:
            return self._one_hot(self.position), 1.0, True
        if self.position == 0:
            return self._one_hot(self.position), self.lure, True
        return self._one_hot(self.position), 0.0, False

    def nonterminal_states(self) -> torch.Tensor:
        """The one-hot states ``1 .. n - 2`` as rows ``[n - 2, n]``: where a policy is judged."""
        return torch.eye(self.n_states, device=self.device)[1:-1]

    def optimal_action(self, state: torch.Tensor) -> int:
        """The optimal action in a non-terminal one-hot ``state``: always ``RIGHT``."""
        position = int(state.argmax())
        if not 0 < position < self.n_states - 1:
            raise ValueError(f"state {position} is terminal")
        return RIGHT


def greedy_return(agent: Agent, env: Chain, max_steps: int) -> tuple[float, int]:
    """Undiscounted return and length of one greedy episode (``explore=False``), cut after
    ``max_steps`` steps so a policy that walks back and forth still ends."""
    state = env.reset()
    total = 0.0
    for step in range(1, max_steps + 1):
        state, reward, done = env.step(agent.act(state, explore=False))
        total += reward
        if done:
            return total, step
    return total, max_steps
