"""Set-up shared by every study: the common config fields, the seed loop, early checks of
dataset/model pairs and loading the data."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from thresher.data import ArrayDataset, DataError, load_splits
from thresher.data.sources import get_source
from thresher.models import build
from thresher.runs.config import ConfigError, check_positive
from thresher.runs.track import check_tracker
from thresher.seeding import derive_seed
from thresher.train.device import choose_device

MAX_SEED = 2**32 - 1  # NumPy's global seed is 32-bit: larger seeds would alias smaller ones
SEED_HELP = (f"root random seed (0 to {MAX_SEED}): every random stream of the run — data "
             "order, initialisation, augmentation, selection — is derived from it")
THREADS_HELP = ("torch CPU threads (0: one per core); CPU results are bit-identical only at the "
                "same count, which each run records")


@dataclass
class CommonConfig:
    """Fields every study command has; studies subclass this (their own fields follow)."""

    seed: int = 0  # see SEED_HELP
    device: str = "auto"  # auto: cuda > mps > cpu
    data_dir: str | None = None  # None: $THRESHER_DATA, else ./data
    threads: int = 0  # see THREADS_HELP
    track: str = "none"  # mirror the run into none, mlflow or tensorboard (thresher.runs.track)
    # mlflow: tracking URI (None: a local SQLite store ./mlflow.db, no server);
    # tensorboard: log folder (None: the run's folder, <run dir>/tensorboard)
    track_uri: str | None = None

    def validate(self) -> None:
        try:
            derive_seed(self.seed)
            choose_device(self.device)  # named and present on this machine
        except ValueError as e:
            raise ConfigError(str(e)) from None
        check_seeds(self.seed, 1)
        check_positive("threads", self.threads, allow_zero=True)
        check_tracker(self.track)


@dataclass
class StudyConfig(CommonConfig):
    """`CommonConfig` plus what a study repeated over seeds and datasets has."""

    runs: int = 1  # seeds seed, seed+1, ...; tables report mean ± 95% CI over them
    dataset_options: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        super().validate()
        check_positive("runs", self.runs)
        check_seeds(self.seed, self.runs)


def check_seeds(seed: int, runs: int) -> None:
    """Seeds ``seed .. seed+runs-1`` must all be distinct streams: within [0, MAX_SEED]."""
    if seed + runs - 1 > MAX_SEED:
        last = f" (with runs={runs} the last seed is {seed + runs - 1})" if runs > 1 else ""
        raise ConfigError(f"seed {seed} is out of range{last}: seeds go from 0 to {MAX_SEED}")


def for_seeds(cfg: StudyConfig) -> Iterator[int]:
    """The seeds a study repeats its work over: ``seed, seed+1, ..., seed+runs-1``. Each seed's
    work is a unit (`Run.unit`) that a resumed run reads back instead of repeating."""
    yield from range(cfg.seed, cfg.seed + cfg.runs)


def check_dataset_and_model(dataset: str, model: str, model_options: dict[str, Any],
                            dataset_options: dict[str, Any] | None = None) -> None:
    """Reject an unknown dataset/model or a model that cannot take the images, before any work.

    Builds the model once on the dataset's registered image shape (a fraction of a second),
    which catches e.g. a ResNet asked to run on 8x8 digits while the config is validated.
    """
    try:
        source = get_source(dataset)
    except DataError as e:
        raise ConfigError(str(e)) from None
    shape = None if dataset_options else source.shape  # options may change the image shape
    try:
        build(model, source.num_classes or 2, shape or (3, 32, 32), **model_options)
    except ValueError as e:
        if "unknown model" in str(e):
            raise ConfigError(str(e)) from None
        if shape is not None:  # otherwise the real shape is only known once the data is read
            raise ConfigError(f"{e} (dataset {dataset!r})") from None


def load_data(dataset: str, data_dir: str | None, device: torch.device,
              options: dict[str, Any] | None = None) -> tuple[ArrayDataset, ArrayDataset]:
    """(train, test) of ``dataset``, moved to ``device`` once."""
    train, test = load_splits(dataset, data_dir=data_dir, **(options or {}))
    return train.to(device), test.to(device)


def holdout(train: ArrayDataset, train_size: int, val_size: int, generator: torch.Generator
            ) -> tuple[ArrayDataset, ArrayDataset]:
    """A stratified validation split of ``val_size`` rows and, from the rest, a stratified
    training subset of ``train_size`` rows (0: all the rest), both drawn from ``generator``:
    the validation rows never overlap the rows trained on, and the test set stays untouched."""
    order = torch.randperm(len(train), generator=generator)
    labels = train.labels.cpu()[order]
    counts = train.class_counts().cpu().double()
    exact = counts * val_size / len(train)
    quota = torch.floor(exact).long()
    quota[torch.argsort(exact - quota, descending=True,
                        stable=True)[:val_size - int(quota.sum())]] += 1
    val_mask = torch.zeros(len(train), dtype=torch.bool)
    for c, n in enumerate(quota.tolist()):
        val_mask[(labels == c).nonzero().flatten()[:n]] = True
    rest = train.subset(order[~val_mask].to(train.device))
    val = train.subset(order[val_mask].to(train.device))
    return (rest.stratified(train_size, generator) if train_size else rest), val


def check_holdout(train: ArrayDataset, dataset: str, train_size: int, val_size: int,
                  study: str) -> None:
    """What `holdout` needs of ``train``, as ConfigErrors before any run exists: images (not
    feature vectors), room for both splits, and a validation example in every class."""
    if train.is_features:
        raise ConfigError(f"dataset {dataset!r} holds feature vectors; {study} trains image "
                          f"models")
    if train_size + val_size > len(train):
        raise ConfigError(f"train_size={train_size} + val_size={val_size} exceeds the "
                          f"{len(train)} training images of {dataset!r}")
    if int(train.class_counts().min()) * val_size < len(train):
        raise ConfigError(f"val_size={val_size} leaves some class of {dataset!r} with no "
                          f"validation example")
