"""`load`: one split of any dataset name, a registered source (``cifar10``) or a corrupted split
of one (``cifar10-c:fog:3``), so every study takes either wherever it takes a dataset."""

from __future__ import annotations

from pathlib import Path

from thresher.data.corrupt import parse_corrupted_name
from thresher.data.corrupted import load_corrupted
from thresher.data.dataset import ArrayDataset
from thresher.data.sources import load_source


def load(name: str, split: str = "train", data_dir: str | Path | None = None,
         download: bool = True, **options) -> ArrayDataset:
    """One split, decoded once and then served from the cache.

    ``<dataset>-c:<corruption>:<severity>`` is that split of the dataset with the corruption
    applied (`thresher.data.corrupted.load_corrupted`, whose keywords ``preset``, ``seed`` and
    ``source`` it takes beside the dataset's own options).
    """
    corrupted = parse_corrupted_name(name)
    if corrupted:
        return load_corrupted(*corrupted, split, data_dir, download, **options)
    return load_source(name, split, data_dir, download, **options)


def load_splits(name: str, data_dir: str | Path | None = None, download: bool = True,
                **options) -> tuple[ArrayDataset, ArrayDataset]:
    """The (train, test) pair of a dataset."""
    return (load(name, "train", data_dir, download, **options),
            load(name, "test", data_dir, download, **options))
