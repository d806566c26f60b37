"""Optimisation tools beyond `torch.optim`: gradient projection (flat gradient buffers,
A-GEM's projection); low-rank projected optimisers register into `thresher.train`'s
optimiser registry from here."""

from thresher.optim.projection import FlatGrad, project

__all__ = ["FlatGrad", "project"]
