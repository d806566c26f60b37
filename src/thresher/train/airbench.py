"""The airbench94 recipe (Jordan 2024, arXiv 2404.00498) around `thresher.models.airbench94`.

A training loop of its own rather than `fit` options, because the recipe's parts only make
sense together: a loss summed over the batch with label smoothing 0.2, Nesterov SGD in the
reference's decoupled parametrisation (BatchNorm shifts at 64x the rate but not the decay),
a linear warm-up then warm-down per step, the whitening bias trained for 3 epochs only, a
lookahead average of every float tensor every 5 steps, images flipped once at random and
then all mirrored on odd epochs, 2-pixel reflect-padded translations, and test-time
averaging over mirror and 1-pixel shifts. Every step runs on whole tensors on the device.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from thresher.data.dataset import ArrayDataset
from thresher.data.pipeline import Normalize
from thresher.models.airbench import (
    AIRBENCH94_RECIPE,
    Airbench94,
    Airbench94Recipe,
    ShiftOnlyBatchNorm,
    init_whitening,
)
from thresher.seeding import make_generator
from thresher.train.device import choose_device
from thresher.train.engine import autocast


def lr_factor(step: int, total: int, recipe: Airbench94Recipe = AIRBENCH94_RECIPE) -> float:
    """The schedule's multiplier at ``step`` of ``total``: linear from the start factor to 1
    over the warm-up fraction of the steps, then linear down to the end factor."""
    warmup = int(total * recipe.lr_warmup_fraction)
    if step < warmup:
        frac = step / warmup
        return recipe.lr_start_factor * (1 - frac) + frac
    frac = (step - warmup) / max(1, total - warmup)
    return (1 - frac) + recipe.lr_end_factor * frac


def lookahead_decay(step: int, total: int, recipe: Airbench94Recipe = AIRBENCH94_RECIPE
                    ) -> float:
    """How much of the running average the weights keep at ``step``: 0 at the start (the
    average follows the weights), rising as the cube of progress to 0.95**5."""
    return recipe.lookahead_decay * (step / total) ** 3


def param_groups(model: Airbench94, recipe: Airbench94Recipe, batch_size: int) -> list[dict]:
    """Nesterov SGD groups in the reference's decoupled form (see `Airbench94Recipe`)."""
    scale = 1024 * (1 + 1 / (1 - recipe.momentum))
    lr = recipe.lr / scale
    wd = recipe.weight_decay * batch_size / scale
    shifts = [m.bias for m in model.modules() if isinstance(m, ShiftOnlyBatchNorm)]
    ids = {id(p) for p in shifts}
    others = [p for p in model.parameters() if id(p) not in ids]
    lr_shift = lr * recipe.bias_lr_scale
    return [{"params": shifts, "lr": lr_shift, "weight_decay": wd / lr_shift},
            {"params": others, "lr": lr, "weight_decay": wd / lr}]


def normalise(images: torch.Tensor, recipe: Airbench94Recipe) -> torch.Tensor:
    """uint8 images as the recipe's standardised floats (the pipeline's `Normalize`)."""
    return Normalize(recipe.mean, recipe.std)(images.float() / 255)


def translate(padded: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Each image cropped back to size at its own random shift in [-pad, pad]^2 (one gather
    per axis, no loop over images or shifts)."""
    n, c, h, w = padded.shape
    h, w = h - 2 * pad, w - 2 * pad
    shifts = torch.randint(0, 2 * pad + 1, (n, 2), generator=gen, device=padded.device)
    rows = (shifts[:, :1] + torch.arange(h, device=padded.device)).view(n, 1, h, 1)
    cols = (shifts[:, 1:] + torch.arange(w, device=padded.device)).view(n, 1, 1, w)
    out = padded.gather(2, rows.expand(n, c, h, padded.shape[3]))
    return out.gather(3, cols.expand(n, c, h, w))


def tta_logits(model: Airbench94, images: torch.Tensor, level: str, batch_size: int = 2000
               ) -> torch.Tensor:
    """Logits of normalised ``images``: ``none``; ``mirror`` (mean with the mirror image);
    ``mirror+translate`` (half that, plus a quarter each of the same at 1 pixel up-left and
    down-right, reflect-padded)."""
    def mirror(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (model(x) + model(x.flip(-1)))

    out = []
    model.eval()
    with torch.no_grad():
        for x in images.split(batch_size):
            if level == "none":
                out.append(model(x))
            elif level == "mirror":
                out.append(mirror(x))
            else:
                h, w = x.shape[-2:]
                p = F.pad(x, (1, 1, 1, 1), mode="reflect")
                shifted = 0.5 * (mirror(p[..., :h, :w]) + mirror(p[..., 2:h + 2, 2:w + 2]))
                out.append(0.5 * mirror(x) + 0.5 * shifted)
    return torch.cat(out).float()


def accuracy(model: Airbench94, data: ArrayDataset, recipe: Airbench94Recipe, level: str,
             device: torch.device) -> float:
    images = normalise(data.images.to(device), recipe)
    return float((tta_logits(model, images, level).argmax(1) == data.labels.to(device)
                  ).float().mean())


def train_airbench94(model: Airbench94, train: ArrayDataset, recipe: Airbench94Recipe =
                     AIRBENCH94_RECIPE, *, test: ArrayDataset | None = None,
                     device: torch.device | None = None, seed: int = 0,
                     on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Train ``model`` in place by the recipe; returns the final test accuracy with and
    without test-time augmentation (when ``test`` is given), the seconds spent training
    (whitening included, evaluation excluded, as the paper times it) and per-epoch rows."""
    if train.is_features or train.images.shape[1] != 3:
        raise ValueError(f"airbench94's recipe trains on RGB uint8 images, got "
                         f"{train.name!r} of shape {tuple(train.images.shape[1:])}")
    device = device or choose_device("auto")
    model.to(device)
    gen = make_generator(seed, "airbench", device=device)
    bs = recipe.batch_size
    per_epoch = len(train) // bs if len(train) >= bs else 1
    total = math.ceil(per_epoch * recipe.epochs)
    labels = train.labels.to(device)
    log: list[dict] = []
    seconds = 0.0
    started = time.perf_counter()
    images = normalise(train.images.to(device), recipe)
    init_whitening(model, images[:recipe.whiten_images], recipe.whiten_eps)
    flip = torch.rand(len(images), generator=gen, device=device) < 0.5  # once, then alternate
    images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
    padded = F.pad(images, (recipe.translate,) * 4, mode="reflect") if recipe.translate \
        else images
    optimizer = torch.optim.SGD(param_groups(model, recipe, bs), momentum=recipe.momentum,
                                nesterov=recipe.nesterov)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    _set_lr(optimizer, base_lrs, lr_factor(0, total, recipe))
    average = {k: v.detach().clone() for k, v in model.state_dict().items()
               if v.is_floating_point()}
    step = 0
    for epoch in range(math.ceil(recipe.epochs)):
        model.whiten.bias.requires_grad_(epoch < recipe.whiten_bias_epochs)
        model.train()
        x_all = translate(padded, recipe.translate, gen) if recipe.translate else images
        if epoch % 2 == 1:
            x_all = x_all.flip(-1)
        order = torch.randperm(len(x_all), generator=gen, device=device)
        loss_sum, seen = torch.zeros((), device=device), 0
        for b in range(per_epoch):
            idx = order[b * bs:(b + 1) * bs]
            with autocast(device, "auto"):
                logits = model(x_all[idx])
            loss = F.cross_entropy(logits.float(), labels[idx], reduction="sum",
                                   label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            _set_lr(optimizer, base_lrs, lr_factor(step, total, recipe))
            loss_sum += loss.detach()
            seen += len(idx)
            if step % recipe.lookahead_every == 0:
                _lookahead(model, average, lookahead_decay(step, total, recipe))
            if step >= total:  # the weights take the average
                _lookahead(model, average, 1.0)
                break
        seconds += time.perf_counter() - started
        row = {"epoch": epoch + 1, "step": step, "seconds": seconds,
               "train_loss": loss_sum.item() / seen}
        if test is not None and on_epoch is not None:
            row["test_acc"] = accuracy(model, test, recipe, "none", device)
        log.append(row)
        if on_epoch is not None:
            on_epoch(row)
        started = time.perf_counter()
    out = {"seconds": seconds, "steps": step, "epochs": recipe.epochs, "log": log}
    if test is not None:
        out["test_acc"] = accuracy(model, test, recipe, "none", device)
        out["tta_test_acc"] = accuracy(model, test, recipe, recipe.tta, device)
    return out


def _set_lr(optimizer: torch.optim.Optimizer, base: list[float], factor: float) -> None:
    for group, lr in zip(optimizer.param_groups, base):
        group["lr"] = lr * factor


@torch.no_grad()
def _lookahead(model: Airbench94, average: dict[str, torch.Tensor], decay: float) -> None:
    """average <- lerp(average, weights, 1 - decay); weights <- average (every float tensor,
    BatchNorm statistics too). With decay 1 the weights take the average: the final step."""
    state = model.state_dict()
    for k, avg in average.items():
        avg.lerp_(state[k], 1 - decay)
        state[k].copy_(avg)
