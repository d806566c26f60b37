"""The floor every RL study reports its agent against: a uniformly random policy, run for the
same environment steps on the same seeds, compared by mean ± 95% CI and a paired t-test."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from thresher.rl.core import Transition
from thresher.runs.report import comparison_table
from thresher.runs.stats import PairedResult, Summary, paired_test, summarize
from thresher.seeding import make_generator


class RandomAgent:
    """Uniform random actions behind the agent interface (`thresher.rl.core`); it learns
    nothing, so ``explore=False`` is random too."""

    def __init__(self, n_actions: int, seed: int = 0,
                 device: torch.device | str = "cpu") -> None:
        if n_actions < 1:
            raise ValueError(f"n_actions must be >= 1, got {n_actions}")
        self.n_actions, self.seed, self.device = n_actions, seed, torch.device(device)
        self.generator = make_generator(seed, "random-agent", device=self.device)

    def act(self, state: torch.Tensor, explore: bool = True) -> torch.Tensor:
        return torch.randint(self.n_actions, (), generator=self.generator, device=self.device)

    def observe(self, transition: Transition) -> None:
        pass

    def update(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"].cpu())


@dataclass(frozen=True)
class Comparison:
    """The agent's and the random policy's scores over seeds, their paired test (agent minus
    random) and the table a study saves."""

    agent: Summary
    random: Summary
    paired: PairedResult
    table: str


def compare_to_random(agent_scores: Sequence[float], random_scores: Sequence[float],
                      metric_name: str = "return", agent_name: str = "agent",
                      markdown: bool = False) -> Comparison:
    """Element i of both score lists must come from seed i (the pairing removes the variance
    the two share through the seed's environment)."""
    if agent_name == "random":
        raise ValueError("agent_name 'random' is the baseline's row; choose another")
    table = comparison_table({agent_name: agent_scores, "random": random_scores},
                             metric_name=metric_name, baseline="random", markdown=markdown)
    return Comparison(agent=summarize(agent_scores), random=summarize(random_scores),
                      paired=paired_test(agent_scores, random_scores), table=table)
