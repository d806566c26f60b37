"""Set-up shared by every study: early checks of dataset/model pairs and loading the data."""

from __future__ import annotations

from typing import Any

import torch

from thresher.data import ArrayDataset, DataError, load_splits
from thresher.data.sources import get_source
from thresher.models import build
from thresher.runs.config import ConfigError


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
