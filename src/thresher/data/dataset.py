"""`ArrayDataset`: a whole image dataset held as two tensors.

Keeping the dataset as one uint8 tensor (not a list of files or PIL images) is what lets every
later stage — batching, augmentation, scoring, selection — run as tensor operations on the
device with no per-example Python.

The same container carries float *features* (an encoder's latents, ``[N, D]`` or any
``[N, ...]`` float tensor) already normalised by whoever made them: the pipeline passes them
through untouched, so a linear probe trains through the same `fit` as an image model while the
uint8 image path stays exactly as fast as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class ArrayDataset:
    """Images as uint8 ``[N, C, H, W]`` (or float features ``[N, ...]``), labels as int64
    ``[N]``, plus class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.images, np.ndarray):
            self.images = torch.from_numpy(np.ascontiguousarray(self.images))
        if isinstance(self.labels, np.ndarray):
            self.labels = torch.from_numpy(np.ascontiguousarray(self.labels))
        is_image = self.images.dtype == torch.uint8 and self.images.dim() == 4
        if not is_image and not (self.images.is_floating_point() and self.images.dim() >= 2):
            raise ValueError(
                f"{self.name}: images must be uint8 [N, C, H, W] or float features [N, ...], "
                f"got {self.images.dtype} {tuple(self.images.shape)}"
            )
        self.labels = self.labels.to(torch.int64)
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"{self.name}: {self.images.shape[0]} images but labels of shape "
                f"{tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def in_shape(self) -> tuple[int, ...]:
        """``(C, H, W)`` of one image (``(D,)`` of a feature vector): what `models.build`
        needs."""
        return tuple(self.images.shape[1:])

    @property
    def is_features(self) -> bool:
        """Float features (pass through the pipeline as they are), not uint8 images."""
        return self.images.is_floating_point()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def device(self) -> torch.device:
        return self.images.device

    def subset(self, indices: torch.Tensor | np.ndarray | list[int]) -> ArrayDataset:
        """A new dataset of the given rows (a copy: later edits do not alias)."""
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.images.device)
        return ArrayDataset(self.images[idx], self.labels[idx], list(self.classes), self.name,
                            dict(self.meta))

    def to(self, device: torch.device | str) -> ArrayDataset:
        """The same dataset on ``device`` (moved once; batches are then sliced in place)."""
        device = torch.device(device)
        if self.images.device == device:
            return self
        return ArrayDataset(self.images.to(device), self.labels.to(device), list(self.classes),
                            self.name, dict(self.meta))

    def class_counts(self) -> torch.Tensor:
        return torch.bincount(self.labels, minlength=self.num_classes)

    def stratified(self, n: int, generator: torch.Generator) -> ArrayDataset:
        """``n`` rows drawn at random with each class's share kept (largest remainders round
        the quotas), in a random order: the small training sets CPU experiments use."""
        if not 0 < n <= len(self):
            raise ValueError(f"{self.name}: a subset of {n} rows needs 0 < n <= {len(self)}")
        counts = self.class_counts().double().cpu()
        exact = counts * n / len(self)
        quota = exact.floor().long()
        extra = n - int(quota.sum())
        quota[torch.argsort(exact - quota, descending=True, stable=True)[:extra]] += 1
        order = torch.randperm(len(self), generator=generator)
        labels = self.labels.cpu()[order]
        by_class = torch.argsort(labels, stable=True)  # within a class: the random order
        starts = torch.cumsum(counts.long(), 0) - counts.long()
        rank = torch.arange(len(self)) - starts[labels[by_class]]
        chosen = order[by_class[rank < quota[labels[by_class]]]]
        return self.subset(chosen[torch.randperm(n, generator=generator)])
