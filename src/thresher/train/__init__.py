"""Training engine: `fit` with step hooks, `evaluate`, `predict` (every per-example output in
one pass), optimisers and schedules by name, device choice, batched linear probes."""

from thresher.seeding import set_seed
from thresher.train.device import choose_device, default_threads, set_threads
from thresher.train.engine import (
                                   Diverged,
                                   FitConfig,
                                   FitResult,
                                   LossFn,
                                   Step,
                                   cross_entropy,
                                   evaluate,
                                   fit,
                                   forward_batches,
)
from thresher.train.optimizers import (
                                   OPTIMIZERS,
                                   build_optimizer,
                                   optimizer_options,
                                   param_groups,
                                   register_optimizer,
)
from thresher.train.predict import Outputs, last_layer_grad_embeddings, predict
from thresher.train.probe import ProbeConfig, Probes, fit_probes
from thresher.train.schedules import SCHEDULES, LossSpikeScheduler, build_schedule

__all__ = [
    "Diverged", "FitConfig", "FitResult", "LossFn", "LossSpikeScheduler", "OPTIMIZERS", "Outputs",
    "ProbeConfig", "Probes", "SCHEDULES", "Step", "build_optimizer", "build_schedule",
    "choose_device", "cross_entropy", "default_threads", "evaluate", "fit", "fit_probes",
    "forward_batches", "last_layer_grad_embeddings", "optimizer_options", "param_groups",
    "predict", "register_optimizer", "set_seed", "set_threads",
]
