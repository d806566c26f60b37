"""`fit` and `evaluate`: the one training loop every study shares.

The loop is deliberately lean — no host synchronisation per step (losses and hits are summed on
the device and read once per epoch), channels-last and mixed precision only where they pay —
so it costs a few percent over a bare hand-written loop (see benchmarks/train_step.py).
"""

from __future__ import annotations

import copy
import logging
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from thresher.data.dataset import ArrayDataset
from thresher.data.pipeline import BatchLoader, Normalize, to_float
from thresher.train.device import choose_device
from thresher.train.optimizers import build_optimizer, build_schedule

Switch = Literal["auto", "on", "off"]
log = logging.getLogger(__name__)


@dataclass
class FitConfig:
    """How to train; studies nest this and override fields with ``--set fit.lr=...``."""

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    augment: str = "none"
    eval_every: int = 1  # epochs between evaluations on the validation data (0: never)
    early_stopping: int = 0  # patience in evaluations without a better accuracy (0: off)
    channels_last: Switch = "auto"  # auto: on for convolutional models
    amp: Switch = "auto"  # auto: bfloat16/float16 autocast on CUDA only
    progress: bool = True

    def validate(self) -> None:
        from thresher.data.augment import POLICIES
        from thresher.train.optimizers import OPTIMIZERS, SCHEDULES

        for name in ("epochs", "batch_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"fit.{name} must be positive, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"fit.lr must be positive, got {self.lr}")
        if self.early_stopping < 0 or self.eval_every < 0:
            raise ValueError("fit.early_stopping and fit.eval_every must be >= 0")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"fit.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        for key, value, choices in (("optimizer", self.optimizer, OPTIMIZERS),
                                    ("schedule", self.schedule, SCHEDULES),
                                    ("augment", self.augment, POLICIES)):
            if value not in choices:
                raise ValueError(f"fit.{key} {value!r} is not one of {', '.join(choices)}")


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)  # one row per epoch
    normalize: Normalize | None = None
    best_epoch: int | None = None
    seconds: float = 0.0


def uses_channels_last(model: nn.Module, device: torch.device, switch: Switch) -> bool:
    """Channels-last speeds up convolutions on CPU (oneDNN) and CUDA (tensor cores)."""
    if switch != "auto":
        return switch == "on"
    has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    return has_conv and device.type in ("cpu", "cuda")


def autocast(device: torch.device, switch: Switch):
    """Mixed precision where it helps: CUDA only (on CPU it is slower for these models)."""
    if switch == "off" or (switch == "auto" and device.type != "cuda"):
        return nullcontext()
    dtype = torch.bfloat16 if device.type != "cuda" or torch.cuda.is_bf16_supported() \
        else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def fit(model: nn.Module, train: ArrayDataset, cfg: FitConfig, *,
        val: ArrayDataset | None = None, weights: torch.Tensor | None = None,
        normalize: Normalize | None = None, device: torch.device | None = None, seed: int = 0,
        on_epoch: Callable[[dict], None] | None = None) -> FitResult:
    """Train ``model`` in place on ``train``; returns per-epoch history.

    ``weights`` are per-example importance weights (e.g. 1/(m p) from sensitivity sampling);
    they are rescaled to mean 1 so the learning rate keeps its meaning, and the batch loss is
    the mean of weight x loss — an unbiased estimate of the full weighted loss.
    ``normalize`` defaults to statistics of ``train``; pass the same object to `evaluate`.
    """
    cfg.validate()
    device = device or choose_device("auto")
    normalize = normalize or Normalize.from_dataset(train)
    model.to(device)
    channels_last = uses_channels_last(model, device, cfg.channels_last)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if weights is not None:
        weights = weights.to(torch.float32)
        if (weights < 0).any() or not torch.isfinite(weights).all() or weights.sum() <= 0:
            raise ValueError("per-example weights must be finite, >= 0 and not all zero")
        weights = weights / weights.mean()
    if cfg.early_stopping and val is None:
        raise ValueError("fit.early_stopping needs validation data")

    loader = BatchLoader(train.to(device), cfg.batch_size, shuffle=True, augment=cfg.augment,
                         normalize=normalize, drop_last=len(train) > cfg.batch_size, seed=seed,
                         weights=weights, channels_last=channels_last)
    steps = len(loader) * cfg.epochs
    optimizer = build_optimizer(cfg.optimizer, model.parameters(), lr=cfg.lr,
                                momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                nesterov=cfg.nesterov)
    scheduler = build_schedule(cfg.schedule, optimizer, steps,
                               round(cfg.warmup_epochs * len(loader)))
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda"
                                  and cfg.amp != "off" and not torch.cuda.is_bf16_supported())
    result = FitResult(normalize=normalize)
    best_acc, best_state, stale = -1.0, None, 0
    start = time.perf_counter()
    bar = tqdm(total=steps, disable=not cfg.progress or not sys.stderr.isatty(), unit="batch",
               leave=False, desc=f"fit {type(model).__name__}")
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        loss_sum = torch.zeros((), device=device)
        hits = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        for batch in loader:
            with autocast(device, cfg.amp):
                logits = model(batch.x)
                if batch.weight is None:
                    loss = F.cross_entropy(logits, batch.y, label_smoothing=cfg.label_smoothing)
                else:
                    per_example = F.cross_entropy(logits, batch.y, reduction="none",
                                                  label_smoothing=cfg.label_smoothing)
                    loss = (per_example * batch.weight).mean()
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            loss_sum += loss.detach() * len(batch.y)
            hits += (logits.detach().argmax(1) == batch.y).sum()
            seen += len(batch.y)
            bar.update()
        row = {"epoch": epoch, "train_loss": loss_sum.item() / seen,
               "train_acc": hits.item() / seen, "lr": optimizer.param_groups[0]["lr"],
               "seconds": time.perf_counter() - start}
        if val is not None and cfg.eval_every and (epoch % cfg.eval_every == 0
                                                   or epoch == cfg.epochs):
            scores = evaluate(model, val, normalize=normalize, device=device, amp=cfg.amp)
            row.update(val_loss=scores["loss"], val_acc=scores["accuracy"])
            if scores["accuracy"] > best_acc:
                best_acc, stale, result.best_epoch = scores["accuracy"], 0, epoch
                if cfg.early_stopping:
                    best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
        result.history.append(row)
        shown = {k: f"{v:.4g}" for k, v in row.items() if k in ("train_loss", "val_acc")}
        bar.set_postfix(shown)
        log.debug("epoch %d/%d %s", epoch, cfg.epochs,
                  " ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"))
        if on_epoch is not None:
            on_epoch(row)
        if cfg.early_stopping and stale >= cfg.early_stopping:
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    result.seconds = time.perf_counter() - start
    return result


@torch.inference_mode()
def evaluate(model: nn.Module, data: ArrayDataset, *, normalize: Normalize | None,
             batch_size: int = 1024, device: torch.device | None = None,
             amp: Switch = "auto") -> dict[str, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``data`` (no augmentation)."""
    device = device or next(model.parameters()).device
    data = data.to(device)
    channels_last = uses_channels_last(model, device, "auto")
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    hits = torch.zeros((), device=device, dtype=torch.long)
    for start in range(0, len(data), batch_size):
        x = to_float(data.images[start:start + batch_size], normalize, channels_last)
        y = data.labels[start:start + batch_size]
        with autocast(device, amp):
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
        hits += (logits.argmax(1) == y).sum()
    model.train(was_training)
    return {"loss": loss_sum.item() / len(data), "accuracy": hits.item() / len(data),
            "n": len(data)}
