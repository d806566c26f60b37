"""The continual learners: each trains one model one batch at a time through ``step(x, y)``.

``step`` sees a batch and nothing else: no task id, no boundary. Only learners that declare
``task_aware = True`` (A-GEM, as in its paper) have an ``end_task()``, and the training loop
calls it only for them; ``ta-agem`` and ``er`` get the bare stream of batches.

Every step is a handful of batched tensor operations; the loss comes back as a detached device
tensor so the loop can sum it without a host synchronisation per batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from thresher.studies.continual.agem import FlatGrad, project
from thresher.studies.continual.config import ContinualConfig, SchedulerConfig
from thresher.studies.continual.memory import ClusteringMemory, ReservoirMemory, TaskRingBuffer
from thresher.train import build_optimizer


class LossSpikeScheduler:
    """TA-A-GEM's learning-rate schedule for a stream without announced task changes.

    The rate decays by ``factor`` after ``patience`` batches without a relative improvement of
    ``threshold`` on the best loss so far (a plateau), and jumps back to its initial value after
    ``patience`` batches with a loss more than ``spike`` above that best (a new task has most
    likely begun), which also restarts the best loss and the plateau count from there.
    """

    def __init__(self, lr: float, cfg: SchedulerConfig) -> None:
        self.initial = self.lr = lr
        self.cfg = cfg
        self.best = math.inf
        self.plateau = 0
        self.spiking = 0

    def step(self, loss: float) -> float:
        cfg = self.cfg
        if loss < self.best * (1 - cfg.threshold):
            self.best, self.plateau = loss, 0
        else:
            self.plateau += 1
        self.spiking = self.spiking + 1 if loss > self.best + cfg.spike else 0
        if self.spiking > cfg.patience:
            self.lr, self.best, self.spiking, self.plateau = self.initial, loss, 0, 0
        if self.plateau > cfg.patience:
            self.lr, self.plateau = max(self.lr * cfg.factor, cfg.min_lr), 0
        return self.lr


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


class ExperienceReplay(Learner):
    """``er``: each batch is trained together with a batch drawn from a reservoir memory."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 memory: ReservoirMemory, replay_batch: int,
                 scheduler: LossSpikeScheduler | None = None) -> None:
        super().__init__(model, optimizer, scheduler)
        self.memory = memory
        self.replay_batch = replay_batch

    def memory_size(self) -> int:
        return len(self.memory)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        replay = self.memory.sample(self.replay_batch)
        if replay is None:
            loss = self._backward(x, y)
        else:
            loss = self._backward(torch.cat([x, replay[0]]), torch.cat([y, replay[1]]))
        self._update(loss)
        self.memory.add(x, y)
        return loss.detach()


class _Projected(Learner):
    """A-GEM's step: the batch gradient, projected so it does not increase the loss on a batch
    drawn from memory (one batched forward/backward for the reference gradient)."""

    gradient_rows = 2  # row 1: the reference gradient

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 memory: TaskRingBuffer | ClusteringMemory, reference_batch: int,
                 scheduler: LossSpikeScheduler | None = None) -> None:
        super().__init__(model, optimizer, scheduler)
        self.memory = memory
        self.reference_batch = reference_batch

    def memory_size(self) -> int:
        return len(self.memory)

    def _projected_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        reference = self.memory.sample(self.reference_batch)
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


def build_learner(name: str, model: nn.Module, cfg: ContinualConfig, num_classes: int,
                  shape: tuple[int, ...], device: torch.device, seed: int) -> Learner:
    """The learner ``name`` (see `config.LEARNERS`) around ``model``, already on ``device``."""
    fit, mem = cfg.fit, cfg.memory
    optimizer = build_optimizer(fit.optimizer, model.parameters(), lr=fit.lr,
                                momentum=fit.momentum, weight_decay=fit.weight_decay)
    scheduler = LossSpikeScheduler(fit.lr, cfg.scheduler) if cfg.scheduler.enabled else None
    generator = torch.Generator(device=device).manual_seed(seed)
    if name in ("naive", "joint"):
        return Learner(model, optimizer, scheduler)
    if name == "er":
        return ExperienceReplay(model, optimizer, ReservoirMemory(mem.size, shape, device,
                                                                  generator),
                                mem.replay_batch, scheduler)
    if name == "agem":
        return AGEM(model, optimizer, TaskRingBuffer(mem.per_task, shape, device, generator),
                    mem.reference_batch, scheduler)
    if name == "ta-agem":
        memory = ClusteringMemory(mem.pools or num_classes, mem.clusters, mem.cluster_size,
                                  shape, device, generator, mem.removal, seed, num_classes)
        return TaskAgnosticAGEM(model, optimizer, memory, mem.reference_batch, scheduler)
    raise ValueError(f"unknown learner {name!r}")
