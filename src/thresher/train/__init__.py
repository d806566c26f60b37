"""Training engine: device and seeding, `fit`, `evaluate`, `predict`, optimisers by name."""

from thresher.train.device import choose_device, set_seed
from thresher.train.engine import FitConfig, FitResult, evaluate, fit
from thresher.train.optimizers import build_optimizer, build_schedule, register_optimizer
from thresher.train.predict import Outputs, last_layer_grad_embeddings, predict

__all__ = [
    "FitConfig", "FitResult", "Outputs", "build_optimizer", "build_schedule", "choose_device",
    "evaluate", "fit", "last_layer_grad_embeddings", "predict", "register_optimizer",
    "set_seed",
]
