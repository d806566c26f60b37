"""Train one learner through a stream of tasks and measure it as it goes.

The loop hands the learner device batches ``(x, y)`` and nothing else. Task boundaries reach
only learners that declare ``task_aware`` (A-GEM), through ``end_task()``. The host reads the
device only every ``testing_interval`` batches, when every task's test set is evaluated (one
point of the accuracy curves) and the summed training loss is read.

Why this is not `thresher.train.fit` with hooks: a stream takes thousands of steps of 10
examples, where the fixed cost of a step decides the run time. The learners write the MLP's
cross-entropy gradient in closed form straight into a flat buffer that the optimiser reads
(`thresher.optim.FlatGrad`), and A-GEM projects inside that buffer against a reference gradient
written into a second row. `fit`'s step — an autograd forward and backward,
``zero_grad(set_to_none=True)`` (which would detach the flat views A-GEM relies on), the
schedule and per-step bookkeeping — takes 1.5x the learner's step for plain fine-tuning at
batch 10 (`benchmarks/online_step.py`: 301 vs 198 us per step on one CPU thread), and `fit`
evaluates per epoch where a stream evaluates every ``testing_interval`` batches. The batches
themselves come from the shared pipeline (`BatchLoader`), seeded from the run's seed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import torch

from thresher.data.dataset import ArrayDataset
from thresher.data.pipeline import BatchLoader, Normalize
from thresher.seeding import derive_seed
from thresher.studies.continual.config import OnlineFitConfig
from thresher.studies.continual.learners import Learner
from thresher.studies.continual.metrics import (
    average_accuracy,
    average_incremental_accuracy,
    backward_transfer,
    forgetting,
)
from thresher.train import evaluate

log = logging.getLogger("thresher.continual")


def accuracies(learner: Learner, tests: Sequence[ArrayDataset], normalize: Normalize
               ) -> list[float]:
    """Test accuracy on every task, in task order."""
    return [evaluate(learner.model, test, normalize=normalize)["accuracy"] for test in tests]


def train_stream(learner: Learner, phases: Sequence[ArrayDataset], tests: Sequence[ArrayDataset],
                 fit: OnlineFitConfig, normalize: Normalize, seed: int,
                 on_point: Callable[[dict], None] | None = None, name: str = "") -> dict:
    """Train on ``phases`` in order (one per task; a single one for ``joint``), evaluating on
    every task of ``tests`` every ``fit.testing_interval`` batches and after each phase.

    Returns the accuracy matrix ``R`` (a row per phase), average accuracy, average
    incremental accuracy, forgetting, BWT,
    the curve (a point per interval: batch, phase, per-task and seen-task accuracy, mean loss,
    learning rate, memory size), and training seconds per phase (evaluation excluded).
    """
    device = next(learner.model.parameters()).device
    R: list[list[float]] = []
    curve: list[dict] = []
    phase_seconds: list[float] = []
    loss_sum = torch.zeros((), device=device)
    batches = since = 0
    seen_tasks = len(tests) if len(phases) == 1 else 1

    def add_point(phase: int) -> None:
        nonlocal since
        accs = accuracies(learner, tests, normalize)
        point = {"batch": batches, "phase": phase, "accuracy": [round(a, 5) for a in accs],
                 "seen": sum(accs[:seen_tasks]) / seen_tasks,
                 "loss": loss_sum.item() / max(since, 1), "lr": learner.lr,
                 "memory": learner.memory_size()}
        curve.append(point)
        loss_sum.zero_()
        since = 0
        if on_point is not None:
            on_point(point)

    for phase, data in enumerate(phases):
        seen_tasks = len(tests) if len(phases) == 1 else phase + 1
        loader = BatchLoader(data, fit.batch_size, shuffle=True, normalize=normalize,
                             seed=derive_seed(seed, "order", phase))
        started, evaluating = time.perf_counter(), 0.0
        for _ in range(fit.epochs):
            for batch in loader:
                loss_sum += learner.step(batch.x, batch.y)
                batches += 1
                since += 1
                if batches % fit.testing_interval == 0:
                    tick = time.perf_counter()
                    add_point(phase)
                    evaluating += time.perf_counter() - tick
        if learner.task_aware:
            learner.end_task()
        phase_seconds.append(time.perf_counter() - started - evaluating)
        R.append(accuracies(learner, tests, normalize))
        log.info("%s phase %d/%d: accuracy on seen tasks %.4f, %.2f s", name, phase + 1,
                 len(phases), sum(R[-1][:seen_tasks]) / seen_tasks, phase_seconds[-1])
    if since:
        add_point(len(phases) - 1)
    return {"R": R, "avg_acc": average_accuracy(R), "inc_acc": average_incremental_accuracy(R),
            "forgetting": forgetting(R),
            "bwt": backward_transfer(R), "phase_seconds": phase_seconds,
            "seconds_per_task": sum(phase_seconds) / len(tests), "curve": curve}
