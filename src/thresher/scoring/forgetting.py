"""Per-example training records kept from the training pass itself: forgetting events and the
last loss.

Both are updated from a batch's row indices in one scatter (no loop over examples), so keeping
them costs nothing beyond the forward pass training does anyway; per-epoch selectors such as
InfoBatch (last loss) and forgetting-based pruning read them instead of paying a scoring pass.
"""

from __future__ import annotations

from typing import Any

import torch

Device = torch.device | str | None


class ForgettingCounter:
    """Forgetting events per example (Toneva et al. 2019, "An Empirical Study of Example
    Forgetting during Deep Neural Network Learning").

    An event is an example classified correctly at its previous presentation and wrongly at
    this one. Examples never classified correctly (``never_learned``) rank as the most
    forgettable, as in Toneva et al.'s ordering, where an unlearned example counts as forgotten
    at every presentation. Rows repeated within one `update` are all compared with the state
    before that call.
    """

    def __init__(self, n: int, device: Device = None) -> None:
        if n <= 0:
            raise ValueError(f"a forgetting counter needs n > 0 examples, got {n}")
        self.n = n
        self.counts = torch.zeros(n, dtype=torch.long, device=device)
        self.last_correct = torch.zeros(n, dtype=torch.bool, device=device)
        self.ever_correct = torch.zeros(n, dtype=torch.bool, device=device)
        self.presentations = torch.zeros(n, dtype=torch.long, device=device)

    @property
    def device(self) -> torch.device:
        return self.counts.device

    @property
    def never_learned(self) -> torch.Tensor:
        """True where an example has never been classified correctly (or never been seen)."""
        return ~self.ever_correct

    def update(self, index: torch.Tensor, correct: torch.Tensor) -> None:
        """Record one presentation of rows ``index`` with their correctness (bool ``[B]``)."""
        index = index.to(self.device, torch.long)
        correct = correct.to(self.device, torch.bool)
        if index.shape != correct.shape:
            raise ValueError(f"index {tuple(index.shape)} and correct {tuple(correct.shape)} "
                             "must have the same shape")
        forgot = self.last_correct[index] & ~correct
        self.counts.index_add_(0, index, forgot.long())
        self.presentations.index_add_(0, index, torch.ones_like(index))
        self.ever_correct[index] = self.ever_correct[index] | correct
        self.last_correct[index] = correct

    def scores(self) -> torch.Tensor:
        """Forgettability, higher = more forgettable: the event count, +inf if never learned."""
        inf = torch.tensor(float("inf"), dtype=torch.float64, device=self.device)
        return torch.where(self.ever_correct, self.counts.double(), inf)

    def to(self, device: Device) -> ForgettingCounter:
        for key in ("counts", "last_correct", "ever_correct", "presentations"):
            setattr(self, key, getattr(self, key).to(device))
        return self

    def state_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key).clone()
                for key in ("counts", "last_correct", "ever_correct", "presentations")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            getattr(self, key).copy_(value)


class LossRecord:
    """The last recorded loss of every example (what InfoBatch prunes on), with ``seen``
    marking the examples that have a record at all."""

    def __init__(self, n: int, device: Device = None) -> None:
        if n <= 0:
            raise ValueError(f"a loss record needs n > 0 examples, got {n}")
        self.n = n
        self.values = torch.zeros(n, dtype=torch.float32, device=device)
        self.seen = torch.zeros(n, dtype=torch.bool, device=device)

    @property
    def device(self) -> torch.device:
        return self.values.device

    def update(self, index: torch.Tensor, losses: torch.Tensor) -> None:
        """Overwrite the records of rows ``index`` with ``losses`` (``[B]``, detached here)."""
        index = index.to(self.device, torch.long)
        losses = losses.detach().to(self.device, torch.float32)
        if index.shape != losses.shape:
            raise ValueError(f"index {tuple(index.shape)} and losses {tuple(losses.shape)} "
                             "must have the same shape")
        self.values[index] = losses
        self.seen[index] = True

    def mean(self) -> float:
        """Mean over the examples seen so far (NaN when none has been)."""
        return float(self.values[self.seen].mean()) if bool(self.seen.any()) else float("nan")

    def to(self, device: Device) -> LossRecord:
        self.values, self.seen = self.values.to(device), self.seen.to(device)
        return self

    def state_dict(self) -> dict[str, Any]:
        return {"values": self.values.clone(), "seen": self.seen.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.values.copy_(state["values"])
        self.seen.copy_(state["seen"])
