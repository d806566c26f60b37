"""The continual learners: each trains one model one batch at a time through ``step(x, y)``.

``step`` sees a batch and nothing else: no task id, no boundary. Only learners that declare
``task_aware = True`` (A-GEM, as in its paper) have an ``end_task()``, and the training loop
calls it only for them; ``ta-agem`` and ``er`` get the bare stream of batches.

Every step is a handful of batched tensor operations; the loss comes back as a detached device
tensor so the loop can sum it without a host synchronisation per batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from thresher.data.memory import ClusteringMemory, ReservoirMemory, TaskRingBuffer
from thresher.optim import FlatGrad, project
from thresher.registry import Registry
from thresher.seeding import make_generator
from thresher.train import LossSpikeScheduler, build_optimizer

if TYPE_CHECKING:
    from thresher.studies.continual.config import ContinualConfig


class Learner:
    """Plain fine-tuning (``naive``); the base of the others."""

    task_aware = False

    gradient_rows = 1  # flat gradient vectors kept (A-GEM adds its reference gradient's)

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: LossSpikeScheduler | None = None) -> None:
        self.model = model
        self.optimizer = optimizer
        self.grads = FlatGrad(model.parameters(), self.gradient_rows)
        self.scheduler = scheduler
        # a model's closed-form gradient (see Classifier.loss_grad) needs every parameter's slot
        self.closed_form = (callable(getattr(model, "loss_grad", None))
                            and len(self.grads.params) == len(list(model.parameters())))

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def memory_size(self) -> int:
        return 0

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = self._backward(x, y)
        self._update(loss)
        return loss.detach()

    def _backward(self, x: torch.Tensor, y: torch.Tensor, row: int = 0) -> torch.Tensor:
        """The batch's mean cross-entropy; its gradient replaces row ``row`` of the gradient
        buffer (row 0: the parameters' ``.grad``)."""
        loss = self.model.loss_grad(x, y, self.grads.views[row]) if self.closed_form else None
        if loss is None:
            self.grads.zero()
            loss = F.cross_entropy(self.model(x), y)
            loss.backward()
            if row:
                self.grads.buffer[row].copy_(self.grads.flat)
        return loss

    def _update(self, loss: torch.Tensor) -> None:
        if self.scheduler is not None:  # the one per-batch host read, only when asked for
            lr = self.scheduler.step(loss.item())
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        self.optimizer.step()


class _Replaying(Learner):
    """A learner with an episodic memory, drawing ``sample_size`` samples from it per step."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 memory: ReservoirMemory | TaskRingBuffer | ClusteringMemory, sample_size: int,
                 scheduler: LossSpikeScheduler | None = None) -> None:
        super().__init__(model, optimizer, scheduler)
        self.memory = memory
        self.sample_size = sample_size

    def memory_size(self) -> int:
        return len(self.memory)


class ExperienceReplay(_Replaying):
    """``er``: each batch is trained together with a batch drawn from a reservoir memory."""

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        replay = self.memory.sample(self.sample_size)
        if replay is None:
            loss = self._backward(x, y)
        else:
            loss = self._backward(torch.cat([x, replay[0]]), torch.cat([y, replay[1]]))
        self._update(loss)
        self.memory.add(x, y)
        return loss.detach()


class _Projected(_Replaying):
    """A-GEM's step: the batch gradient, projected so it does not increase the loss on a batch
    drawn from memory (one batched forward/backward for the reference gradient)."""

    gradient_rows = 2  # row 1: the reference gradient

    def _projected_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        reference = self.memory.sample(self.sample_size)
        if reference is not None:
            self._backward(*reference, row=1)
        loss = self._backward(x, y)
        if reference is not None:
            project(self.grads.buffer)
        self._update(loss)
        return loss.detach()


class AGEM(_Projected):
    """``agem``: A-GEM as published, told where tasks end; reference gradients come from a
    ring buffer of every finished task."""

    task_aware = True

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = self._projected_step(x, y)
        self.memory.add(x, y)
        return loss

    def end_task(self) -> None:
        self.memory.end_task()


class TaskAgnosticAGEM(_Projected):
    """``ta-agem``: A-GEM whose memory is the clustering memory, fed one sample of every batch;
    it never learns where a task starts or ends."""

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = self._projected_step(x, y)
        self.memory.offer(x[0], y[0])  # batches are shuffled, so the first is a random pick
        return loss


class Parts:
    """What every learner is built from: the model, its optimiser and scheduler, the run's
    config and the memory's shape, device and generator."""

    def __init__(self, model: nn.Module, cfg: ContinualConfig, num_classes: int,
                 shape: tuple[int, ...], device: torch.device, seed: int) -> None:
        fit = cfg.fit
        self.model, self.cfg, self.num_classes, self.shape = model, cfg, num_classes, shape
        self.device, self.seed = device, seed
        self.optimizer = build_optimizer(fit.optimizer, model, lr=fit.lr, momentum=fit.momentum,
                                         weight_decay=fit.weight_decay)
        options = {k: v for k, v in asdict(cfg.scheduler).items() if k != "enabled"}
        self.scheduler = LossSpikeScheduler(fit.lr, **options) if cfg.scheduler.enabled \
            else None
        self.generator = make_generator(seed, "memory", device=device)


LEARNERS: Registry[Callable[[Parts], Learner]] = Registry("learner")
LEARNERS.register("naive", lambda p: Learner(p.model, p.optimizer, p.scheduler),
                  description="plain fine-tuning on each batch")
LEARNERS.register("joint", lambda p: Learner(p.model, p.optimizer, p.scheduler),
                  description="all tasks shuffled together: the upper bound")
LEARNERS.register("er", lambda p: ExperienceReplay(
    p.model, p.optimizer,
    ReservoirMemory(p.cfg.memory.size, p.shape, p.device, p.generator),
    p.cfg.memory.replay_batch, p.scheduler), description="experience replay from a reservoir")
LEARNERS.register("agem", lambda p: AGEM(
    p.model, p.optimizer, TaskRingBuffer(p.cfg.memory.per_task, p.shape, p.device, p.generator),
    p.cfg.memory.reference_batch, p.scheduler), description="A-GEM, told where tasks end")
LEARNERS.register("ta-agem", lambda p: TaskAgnosticAGEM(
    p.model, p.optimizer,
    ClusteringMemory(p.cfg.memory.pools or p.num_classes, p.cfg.memory.clusters,
                     p.cfg.memory.cluster_size, p.shape, p.device, p.generator,
                     p.cfg.memory.removal, p.seed, p.num_classes),
    p.cfg.memory.reference_batch, p.scheduler),
    description="task-agnostic A-GEM with a clustering memory")


def build_learner(name: str, model: nn.Module, cfg: ContinualConfig, num_classes: int,
                  shape: tuple[int, ...], device: torch.device, seed: int) -> Learner:
    """The learner ``name`` (see `LEARNERS`) around ``model``, already on ``device``."""
    return LEARNERS[name](Parts(model, cfg, num_classes, shape, device, seed))
