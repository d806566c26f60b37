"""`fit` and `evaluate`: the one training loop every study shares, open at the step level.

The loop is deliberately lean — no host synchronisation per step (losses and hits are summed on
the device and read once per epoch), channels-last and mixed precision only where they pay —
so it costs a few percent over a bare hand-written loop (see benchmarks/train_step.py).

Studies change what one step does through a few plain callables instead of writing a loop:

- ``loss_fn(output, batch) -> [B]`` per-example losses; the step minimises their mean. The
  default is cross-entropy with label smoothing, times the batch's importance weights when
  ``weights`` were given: weighted and unweighted training are one path.
- ``before_epoch(epoch) -> indices | None``: the rows of ``train`` to use this epoch (per-epoch
  subset selection), shuffled and batched by the loop; None trains on everything.
- ``after_backward(step)``: gradients are in ``.grad`` (unscaled under mixed precision); read
  them (statistics) or rewrite them (gradient surgery) before the optimiser steps. Returning
  ``False`` skips this optimiser step (a guard against a non-finite gradient): the schedule
  still advances, the step's loss stays out of the epoch's sum and the row counts ``skipped``.
- ``after_step(step)``: after the optimiser and schedule have stepped, with the batch's
  per-example losses (e.g. to keep a loss history or drive an agent).

A non-finite epoch loss (training, or validation when evaluated) raises `Diverged` by default
(``nonfinite="stop"``), so a blown-up run fails instead of being recorded as finished. It is
read from the per-epoch sum the loop syncs anyway: once a NaN or inf enters the sum it stays,
so checking once per epoch costs nothing per step.
"""

from __future__ import annotations

import copy
import logging
import math
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from thresher.data.dataset import ArrayDataset
from thresher.data.pipeline import Batch, BatchLoader, Normalize, to_float
from thresher.registry import did_you_mean
from thresher.train.device import choose_device
from thresher.train.optimizers import (
    adamw_state_bytes,
    build_optimizer,
    check_optimizer,
    state_bytes,
)
from thresher.train.schedules import SCHEDULES, build_schedule

Switch = Literal["auto", "on", "off"]
NONFINITE = ("stop", "warn")  # what `fit` does when an epoch's loss is NaN or infinite
log = logging.getLogger(__name__)


class Diverged(RuntimeError):
    """Training produced a non-finite loss (``fit.nonfinite="stop"``)."""

    run_status = "diverged"  # how the run store records a run this ends


@dataclass
class FitConfig:
    """How to train; studies nest this and override fields with ``--set fit.lr=...``."""

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    optimizer_options: dict[str, Any] = field(default_factory=dict)  # the optimiser's own knobs
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4  # on weights with >= 2 dims only, unless decay_1d
    decay_1d: bool = False  # also decay biases and normalisation gains
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    augment: str = "none"
    eval_every: int = 1  # epochs between evaluations on the validation data (0: never)
    early_stopping: int = 0  # patience in evaluations without a better accuracy (0: off)
    channels_last: Switch = "auto"  # auto: on for convolutional models
    amp: Switch = "auto"  # auto: bfloat16/float16 autocast on CUDA only
    progress: bool = True
    nonfinite: str = "stop"  # on a NaN/inf epoch loss: stop (raise Diverged) or warn once

    def validate(self) -> None:
        from thresher.data.augment import POLICIES

        for name in ("epochs", "batch_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"fit.{name} must be positive, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"fit.lr must be positive, got {self.lr}")
        if self.weight_decay < 0 or self.momentum < 0:
            raise ValueError("fit.weight_decay and fit.momentum must be >= 0")
        if self.early_stopping < 0 or self.eval_every < 0:
            raise ValueError("fit.early_stopping and fit.eval_every must be >= 0")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"fit.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.nonfinite not in NONFINITE:
            close = did_you_mean(self.nonfinite, NONFINITE)
            hint = f"; did you mean {close!r}?" if close else ""
            raise ValueError(f"fit.nonfinite must be one of {', '.join(map(repr, NONFINITE))}, "
                             f"got {self.nonfinite!r}{hint}")
        for key, check in (("schedule", lambda: SCHEDULES.get(self.schedule)),
                           ("augment", lambda: POLICIES.get(self.augment)),
                           ("optimizer", lambda: check_optimizer(self.optimizer,
                                                                 self.optimizer_options))):
            try:
                check()
            except (ValueError, LookupError) as e:
                raise ValueError(f"fit.{key}: {e}") from None


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)  # one row per epoch
    normalize: Normalize | None = None
    best_epoch: int | None = None
    seconds: float = 0.0
    # the optimiser's state after training: its bytes beside AdamW's for the same parameters,
    # and what the optimiser reports of itself (GaLore: what it projected)
    optimizer: dict[str, Any] = field(default_factory=dict)


@dataclass
class Step:
    """What a hook sees of one optimisation step."""

    epoch: int
    step: int  # optimiser steps taken before this one
    batch: Batch
    output: torch.Tensor  # the model's output (logits for a classifier)
    losses: torch.Tensor  # [B] per-example losses (detached in after_step)
    loss: torch.Tensor  # their mean, the minimised scalar
    model: nn.Module
    optimizer: torch.optim.Optimizer


LossFn = Callable[[torch.Tensor, Batch], torch.Tensor]
StepHook = Callable[[Step], None]


def cross_entropy(label_smoothing: float = 0.0) -> LossFn:
    """The default ``loss_fn``: per-example cross-entropy, times the batch's weights if any."""
    def loss_fn(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        losses = F.cross_entropy(logits, batch.y, reduction="none",
                                 label_smoothing=label_smoothing)
        return losses if batch.weight is None else losses * batch.weight
    return loss_fn


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimiser steps in one full epoch of `fit` over ``n`` rows: the last partial batch is
    dropped whenever there is more than one batch (so every step sees a full batch)."""
    return n // batch_size if n > batch_size else 1


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
        loss_fn: LossFn | None = None,
        before_epoch: Callable[[int], torch.Tensor | None] | None = None,
        after_backward: Callable[[Step], bool | None] | None = None,
        after_step: StepHook | None = None,
        on_epoch: Callable[[dict], None] | None = None, accuracy: bool = True) -> FitResult:
    """Train ``model`` in place on ``train``; returns per-epoch history.

    ``weights`` are per-example importance weights (e.g. 1/(m p) from sensitivity sampling);
    they are rescaled to mean 1 so the learning rate keeps its meaning, and the batch loss is
    the mean of weight x loss — an unbiased estimate of the full weighted loss.
    ``normalize`` defaults to statistics of ``train`` (None for float features, which arrive
    normalised); pass the same object to `evaluate`. ``seed`` fixes the data order and the
    augmentation draws. The hooks are described in the module docstring. The learning-rate
    schedule spans ``epochs`` full passes; an epoch on a subset still advances it by one
    epoch's share, so subset selection keeps the schedule's shape. ``accuracy=False`` is for
    models whose output is not class logits (a VAE's loss terms): rows then carry no
    ``train_acc`` and ``val`` must be None (the study scores such a model in ``on_epoch``).
    """
    cfg.validate()
    device = device or choose_device("auto")
    if normalize is None and not train.is_features:
        normalize = Normalize.from_dataset(train)
    model.to(device)
    channels_last = uses_channels_last(model, device, cfg.channels_last)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if weights is not None:
        weights = weights.to(torch.float32)
        if (weights < 0).any() or not torch.isfinite(weights).all() or weights.sum() <= 0:
            raise ValueError("per-example weights must be finite, >= 0 and not all zero")
        weights = weights / weights.mean()
    if not accuracy and val is not None:
        raise ValueError("fit with accuracy=False scores no validation data: pass val=None and "
                         "evaluate in on_epoch")
    if cfg.early_stopping and val is None:
        raise ValueError("fit.early_stopping needs validation data")
    loss_fn = loss_fn or cross_entropy(cfg.label_smoothing)

    loader = BatchLoader(train.to(device), cfg.batch_size, shuffle=True, augment=cfg.augment,
                         normalize=normalize, drop_last=len(train) > cfg.batch_size, seed=seed,
                         weights=weights, channels_last=channels_last)
    per_epoch = len(loader)  # = steps_per_epoch(len(train), cfg.batch_size)
    optimizer = build_optimizer(cfg.optimizer, model, lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay, nesterov=cfg.nesterov,
                                decay_1d=cfg.decay_1d, options=cfg.optimizer_options)
    scheduler = build_schedule(cfg.schedule, optimizer, per_epoch * cfg.epochs,
                               round(cfg.warmup_epochs * per_epoch))
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda"
                                  and cfg.amp != "off" and not torch.cuda.is_bf16_supported())
    if getattr(optimizer, "steps_in_backward", False) and (scaler.is_enabled()
                                                           or after_backward is not None):
        raise ValueError(f"fit.optimizer {cfg.optimizer!r} with per_layer steps each weight "
                         "during the backward pass, so nothing can read or unscale the "
                         "gradients afterwards: drop per_layer (this study's gradient hook or "
                         "float16 loss scaling needs them)")
    result = FitResult(normalize=normalize)
    best_acc, best_state, stale, steps, scheduled = -1.0, None, 0, 0, 0
    warned = False
    start = time.perf_counter()
    bar = tqdm(total=per_epoch * cfg.epochs, disable=not cfg.progress or not sys.stderr.isatty(),
               unit="batch", leave=False, desc=f"fit {type(model).__name__}")
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        loss_sum = torch.zeros((), device=device)
        hits = torch.zeros((), device=device, dtype=torch.long)
        seen = skipped = 0
        rows = before_epoch(epoch) if before_epoch is not None else None
        for batch in (loader if rows is None else loader.epoch(rows)):
            with autocast(device, cfg.amp):
                output = model(batch.x)
                losses = loss_fn(output, batch)
                loss = losses.mean()
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            skip = False
            if after_backward is not None:
                scaler.unscale_(optimizer)
                skip = after_backward(Step(epoch, steps, batch, output, losses, loss, model,
                                           optimizer)) is False
            if skip:  # the guard refused this step: no update, no share of the epoch's loss
                optimizer.zero_grad(set_to_none=True)
                skipped += 1
            else:
                scaler.step(optimizer)
            scaler.update()
            if scheduled < epoch * per_epoch:  # a subset epoch of more steps holds the rate
                scheduler.step()
                scheduled += 1
            if not skip:
                if after_step is not None:
                    after_step(Step(epoch, steps, batch, output.detach(), losses.detach(),
                                    loss.detach(), model, optimizer))
                loss_sum += loss.detach() * len(batch.y)
                if accuracy:
                    hits += (output.detach().argmax(1) == batch.y).sum()
                seen += len(batch.y)
            steps += 1
            bar.update()
        for _ in range(scheduled, epoch * per_epoch):  # a subset epoch: the schedule keeps pace
            scheduler.step()
        scheduled = epoch * per_epoch
        row = {"epoch": epoch, "train_loss": loss_sum.item() / max(seen, 1),
               "train_acc": hits.item() / max(seen, 1), "lr": optimizer.param_groups[0]["lr"],
               "seconds": time.perf_counter() - start}
        if not accuracy:
            del row["train_acc"]
        if rows is not None:
            row["examples"] = seen
        if skipped:
            row["skipped"] = skipped
        warned = _check_finite(row, "train_loss", cfg, warned, bar)
        if val is not None and cfg.eval_every and (epoch % cfg.eval_every == 0
                                                   or epoch == cfg.epochs):
            scores = evaluate(model, val, normalize=normalize, device=device, amp=cfg.amp)
            row.update(val_loss=scores["loss"], val_acc=scores["accuracy"])
            warned = _check_finite(row, "val_loss", cfg, warned, bar)
            if scores["accuracy"] > best_acc:
                best_acc, stale, result.best_epoch = scores["accuracy"], 0, epoch
                if cfg.early_stopping:
                    best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
        result.history.append(row)
        bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k in ("train_loss", "val_acc")})
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
    result.optimizer = {"state_bytes": state_bytes(optimizer),
                        "adamw_state_bytes": adamw_state_bytes(model)}
    result.optimizer["vs_adamw"] = (result.optimizer["state_bytes"]
                                    / max(result.optimizer["adamw_state_bytes"], 1))
    if hasattr(optimizer, "report"):
        result.optimizer.update(optimizer.report())
    return result


def _check_finite(row: dict, key: str, cfg: FitConfig, warned: bool, bar: tqdm) -> bool:
    """Raise `Diverged` (or warn once per fit) when ``row[key]`` is NaN or infinite, so a
    blown-up run is not recorded as finished; returns whether the warning has been given."""
    value = row[key]
    if math.isfinite(value):
        return warned
    what = f"training diverged at epoch {row['epoch']}: {key}={value} (fit.lr={cfg.lr:g})"
    if cfg.nonfinite == "stop":
        bar.close()
        raise Diverged(f"{what}; lower fit.lr or set fit.nonfinite=warn to carry on")
    if not warned:
        log.warning("%s; carrying on (fit.nonfinite=warn), later ones are not reported", what)
    return True


def forward_batches(model: nn.Module, data: ArrayDataset, normalize: Normalize | None, *,
                    batch_size: int = 1024, device: torch.device | None = None,
                    amp: Switch = "auto", embed: bool = False):
    """The one inference loop behind `evaluate` and `predict`: yields, per batch of ``data``
    in order, ``(labels, logits, embeddings)`` (embeddings None unless ``embed``, which uses
    the model seam ``head(embed(x))``). Call under ``torch.inference_mode()``; the model is in
    eval mode while the generator runs and back in its previous mode afterwards."""
    device = device or next(model.parameters()).device
    data = data.to(device)
    channels_last = uses_channels_last(model, device, "auto")
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(data), batch_size):
            x = to_float(data.images[start:start + batch_size], normalize, channels_last)
            with autocast(device, amp):
                emb = model.embed(x) if embed else None
                logits = model.head(emb) if embed else model(x)
            yield data.labels[start:start + batch_size], logits, emb
    finally:
        model.train(was_training)


@torch.inference_mode()
def evaluate(model: nn.Module, data: ArrayDataset, *, normalize: Normalize | None,
             batch_size: int = 1024, device: torch.device | None = None,
             amp: Switch = "auto") -> dict[str, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``data`` (no augmentation)."""
    device = device or next(model.parameters()).device
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    hits = torch.zeros((), device=device, dtype=torch.long)
    for y, logits, _ in forward_batches(model, data, normalize, batch_size=batch_size,
                                        device=device, amp=amp):
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
        hits += (logits.argmax(1) == y).sum()
    return {"loss": loss_sum.item() / len(data), "accuracy": hits.item() / len(data),
            "n": len(data)}
