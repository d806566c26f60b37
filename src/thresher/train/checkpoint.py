"""The checkpoint format: one place that writes and reads a trained classifier.

A checkpoint carries what is needed to rebuild and use the model without its run's config:
the registry name and options, the input shape, the classes and the normalisation statistics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from thresher.data.dataset import ArrayDataset
from thresher.data.pipeline import Normalize
from thresher.models import build


def checkpoint(model: nn.Module, name: str, options: dict[str, Any], data: ArrayDataset,
               normalize: Normalize) -> dict[str, Any]:
    """A plain dict (tensors, numbers, strings) safe for ``torch.load(weights_only=True)``."""
    return {"model": name, "model_options": options, "num_classes": data.num_classes,
            "in_shape": data.in_shape, "classes": data.classes, "dataset": data.name,
            "normalize": {"mean": normalize.mean, "std": normalize.std},
            "state_dict": model.state_dict()}


def load_checkpoint(path: str | Path,
                    device: torch.device) -> tuple[nn.Module, Normalize, dict[str, Any]]:
    """(model in eval mode on ``device``, its normalisation, the rest of the checkpoint)."""
    ckpt = torch.load(path, map_location=device, weights_only=True)
    model = build(ckpt["model"], ckpt["num_classes"], tuple(ckpt["in_shape"]),
                  **ckpt["model_options"])
    model.load_state_dict(ckpt["state_dict"])
    norm = Normalize(tuple(ckpt["normalize"]["mean"]), tuple(ckpt["normalize"]["std"]))
    return model.to(device).eval(), norm, ckpt
