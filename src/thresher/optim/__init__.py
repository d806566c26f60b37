"""Optimisation tools beyond `torch.optim`: gradient projection (flat gradient buffers,
A-GEM's projection) and GaLore's low-rank projected optimisers, which register into
`thresher.train`'s optimiser registry as ``galore_adamw`` and ``galore_sgd``."""

from thresher.optim.galore import GaLoreAdamW, GaLoreSGD, chosen_weights
from thresher.optim.projection import FlatGrad, flatten_parameters, project

__all__ = ["FlatGrad", "GaLoreAdamW", "GaLoreSGD", "chosen_weights", "flatten_parameters",
           "project"]
