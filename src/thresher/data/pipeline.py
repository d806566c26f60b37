"""Device batch pipeline: no DataLoader, no per-example Python.

The dataset lives on the device as one uint8 tensor. Each batch is a slice picked by a shuffled
index tensor; float conversion, augmentation and normalisation are a few tensor operations on
that slice. Randomness comes from one generator seeded once, so a seed fixes every epoch's order
and every augmentation draw.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import torch

from thresher.data.augment import Policy, get_policy
from thresher.data.dataset import ArrayDataset
from thresher.seeding import make_generator


@dataclass(frozen=True)
class Normalize:
    """Per-channel standardisation with statistics of the training split."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_dataset(cls, data: ArrayDataset, chunk: int = 8192) -> Normalize:
        """Channel mean and std of pixels scaled to [0, 1], accumulated in float64 chunks."""
        c = data.images.shape[1]
        total = torch.zeros(c, dtype=torch.float64)
        total_sq = torch.zeros(c, dtype=torch.float64)
        for start in range(0, len(data), chunk):
            x = data.images[start:start + chunk].to(torch.float64) / 255.0
            total += x.sum(dim=(0, 2, 3)).cpu()
            total_sq += x.square().sum(dim=(0, 2, 3)).cpu()
        count = len(data) * data.images.shape[2] * data.images.shape[3]
        mean = total / count
        std = (total_sq / count - mean.square()).clamp_min(1e-12).sqrt()
        return cls(tuple(mean.tolist()), tuple(std.tolist()))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Standardise float images in [0, 1]."""
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype)[None, :, None, None]
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype)[None, :, None, None]
        return (x - mean) / std

    @cached_property
    def _affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        std = torch.tensor(self.std)[None, :, None, None]
        mean = torch.tensor(self.mean)[None, :, None, None]
        return -mean / std, 1.0 / (255.0 * std)

    def from_uint8(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 pixels -> standardised float32 in one fused multiply-add (no [0, 1] copy)."""
        shift, scale = (t.to(images.device) for t in self._affine)
        return torch.addcmul(shift, images, scale)


class Batch(NamedTuple):
    x: torch.Tensor  # float [B, C, H, W], augmented and normalised
    y: torch.Tensor  # int64 [B]
    index: torch.Tensor  # int64 [B], rows of the dataset
    weight: torch.Tensor | None  # float [B] per-example weights, when given


def to_float(images: torch.Tensor, normalize: Normalize | None,
             channels_last: bool = False) -> torch.Tensor:
    """uint8 images -> normalised float batch (the un-augmented path used for evaluation);
    float features pass through unchanged."""
    if images.is_floating_point():
        return images
    x = images.float().div_(255.0) if normalize is None else normalize.from_uint8(images)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


class BatchLoader:
    """Iterate over an `ArrayDataset` in device batches.

    Each ``iter()`` is one epoch: a fresh permutation (when ``shuffle``) and fresh augmentation
    draws from the loader's generator, so epoch k is the same for the same seed.
    """

    def __init__(self, data: ArrayDataset, batch_size: int, *, shuffle: bool = False,
                 augment: str | Policy = "none", normalize: Normalize | None = None,
                 drop_last: bool = False, seed: int = 0, weights: torch.Tensor | None = None,
                 channels_last: bool = False) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if len(data) == 0:
            raise ValueError(f"dataset {data.name!r} is empty")
        if weights is not None and weights.shape != (len(data),):
            raise ValueError(f"weights of shape {tuple(weights.shape)} do not match "
                             f"{len(data)} examples")
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.policy = get_policy(augment) if isinstance(augment, str) else augment
        if data.is_features and self.policy.name != "none":
            raise ValueError(f"augmentation {self.policy.name!r} works on uint8 images; "
                             f"{data.name!r} holds float features: use augment 'none'")
        self.normalize = normalize
        self.drop_last = drop_last
        self.weights = None if weights is None else weights.to(data.device, torch.float32)
        self.channels_last = channels_last
        self.generator = make_generator(seed, device=data.device)

    def __len__(self) -> int:
        return self._count(len(self.data))

    def _count(self, n: int) -> int:
        return n // self.batch_size if self.drop_last and n >= self.batch_size \
            else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.data)
        device = self.data.device
        if self.shuffle:
            order = torch.randperm(n, device=device, generator=self.generator)
        else:
            order = torch.arange(n, device=device)
        return self._batches(order)

    def epoch(self, rows: torch.Tensor) -> Iterator[Batch]:
        """One epoch over ``rows`` of the dataset only (shuffled when ``shuffle``): what
        per-epoch subset selection trains on. Rows may repeat (oversampling). A selection is
        trained in full, in ``ceil(len(rows) / batch_size)`` batches of near-equal size (they
        differ by at most one row), whatever ``drop_last`` says for full epochs: no row is
        dropped and no step sees a tail of a few rows (whose noisy gradient and batch-norm
        statistics cost accuracy)."""
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.data.device)
        if rows.dim() != 1 or len(rows) == 0:
            raise ValueError(f"an epoch needs a non-empty 1-D tensor of row indices, got shape "
                             f"{tuple(rows.shape)}")
        if int(rows.min()) < 0 or int(rows.max()) >= len(self.data):
            raise ValueError(f"epoch rows must lie in [0, {len(self.data)}), got "
                             f"[{int(rows.min())}, {int(rows.max())}]")
        if self.shuffle:
            rows = rows[torch.randperm(len(rows), device=rows.device, generator=self.generator)]
        count = -(-len(rows) // self.batch_size)
        bounds = [len(rows) * b // count for b in range(count + 1)]
        return (self.batch(rows[lo:hi]) for lo, hi in zip(bounds, bounds[1:]))

    def _batches(self, order: torch.Tensor) -> Iterator[Batch]:
        for b in range(self._count(len(order))):
            yield self.batch(order[b * self.batch_size:(b + 1) * self.batch_size])

    def batch(self, idx: torch.Tensor) -> Batch:
        """Rows ``idx`` as one batch, with fresh augmentation draws: what an epoch yields, and
        a second augmented view of a batch already seen (consistency losses)."""
        images = self.data.images.index_select(0, idx)
        weight = None if self.weights is None else self.weights[idx]
        if self.data.is_features:  # already float and normalised: nothing to do
            return Batch(images, self.data.labels[idx], idx, weight)
        policy, gen = self.policy, self.generator
        images = policy.on_uint8(images, gen)
        if policy.has_float_steps:
            x = policy.on_float(images.float().div_(255.0), gen)
            x = x if self.normalize is None else self.normalize(x)
        else:
            x = to_float(images, self.normalize)
        x = policy.on_normalized(x, gen)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return Batch(x, self.data.labels[idx], idx, weight)
