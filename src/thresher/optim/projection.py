"""Gradient-projection tools: flat gradient buffers and A-GEM's projection (Chaudhry et al.
2019, arXiv 1812.00420).

`FlatGrad` points every parameter's ``.grad`` into slices of one flat buffer, so
``loss.backward()`` accumulates straight into the vector A-GEM works on and ``optimizer.step()``
reads the projected result from the same memory: no per-parameter concatenation or copy-back,
and the optimiser's own state (momentum, Adam moments) only ever sees the final gradient.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


class FlatGrad:
    """The gradients of ``params`` as views into one flat vector ``self.flat``.

    ``self.flat`` is row 0 of ``self.buffer``; further ``rows`` have the same layout for
    gradients kept beside it (A-GEM's reference gradient), and ``self.views[r]`` splits row r
    per parameter. Zero row 0 with `zero` (not ``optimizer.zero_grad()``, whose default
    ``set_to_none`` would detach the views).
    """

    def __init__(self, params: Iterable[nn.Parameter], rows: int = 1) -> None:
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise ValueError("FlatGrad needs at least one parameter that requires grad")
        first = self.params[0]
        self.buffer = torch.zeros(rows, sum(p.numel() for p in self.params), device=first.device,
                                  dtype=first.dtype)
        self.flat = self.buffer[0]
        self.views: list[list[torch.Tensor]] = []
        for row in self.buffer:
            offset, views = 0, []
            for p in self.params:
                views.append(row[offset:offset + p.numel()].view_as(p))
                offset += p.numel()
            self.views.append(views)
        for p, view in zip(self.params, self.views[0]):
            p.grad = view

    def zero(self) -> None:
        self.flat.zero_()

    def intact(self) -> bool:
        """Whether every ``.grad`` is still a view of ``self.flat`` (for checks and tests)."""
        return all(p.grad is not None and p.grad._base is self.buffer for p in self.params)


def flatten_parameters(params: Iterable[nn.Parameter]) -> nn.Parameter:
    """One flat parameter whose storage the given parameters (and whose ``.grad`` their
    gradients) become views of, so an optimiser and gradient clipping over a small network
    run once over one vector instead of once per tensor: the same arithmetic element by
    element with a fraction of the per-call overhead. Backward accumulates into the views in
    place; zero the flat gradient (``flat.grad.zero_()``), never ``zero_grad()`` on the
    originals, whose default ``set_to_none`` would detach them."""
    params = [p for p in params if p.requires_grad]
    if not params or len({(p.dtype, p.device) for p in params}) != 1:
        raise ValueError("flatten_parameters needs parameters of one dtype on one device")
    flat = nn.Parameter(torch.cat([p.detach().reshape(-1) for p in params]))
    flat.grad = torch.zeros_like(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.data = flat.data[offset:offset + n].view_as(p)
        p.grad = flat.grad[offset:offset + n].view_as(p)
        offset += n
    return flat


def project(grads: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """A-GEM in place on ``grads = [g; g_ref]`` (``[2, n]``): if ``g . g_ref < 0``,
    ``g -= (g . g_ref / g_ref . g_ref) g_ref``; returns ``g``.

    Both dot products come from one matrix-vector product over the buffer. Branch-free (no
    host synchronisation): the coefficient is ``min(g . g_ref, 0) / |g_ref|^2``, exactly 0
    when the gradients agree, which leaves ``g`` bit-for-bit unchanged. Afterwards
    ``g . g_ref >= 0`` up to rounding: the step does not increase the memory loss to first
    order.
    """
    g, g_ref = grads[0], grads[1]
    dots = torch.mv(grads, g_ref)
    coef = dots[0].clamp(max=0.0) / dots[1].clamp(min=eps)
    return g.addcmul_(g_ref, coef, value=-1)
