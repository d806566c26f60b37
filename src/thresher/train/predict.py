"""`predict`: every per-example statistic a study needs, from one forward pass.

Scoring (margin, entropy, EL2N, loss, gradient norms) and selection (k-means on embeddings,
BADGE on gradient embeddings) all read the same `Outputs`, so a selection round costs exactly
one pass over the pool.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from thresher.data.dataset import ArrayDataset
from thresher.data.pipeline import Normalize
from thresher.train.engine import Switch, forward_batches


@dataclass
class Outputs:
    """Per-example model outputs, row i belonging to dataset index i."""

    logits: torch.Tensor  # [N, K]
    probs: torch.Tensor  # [N, K]
    embeddings: torch.Tensor  # [N, D] penultimate features (input of model.head)
    labels: torch.Tensor | None  # [N], None when predicted without labels
    losses: torch.Tensor | None  # [N] cross-entropy, None without labels
    grad_embeddings: torch.Tensor | None = None  # [N, K * D], when requested
    head_bias: bool = True  # whether model.head adds a bias (gradient norms count its term)

    @property
    def preds(self) -> torch.Tensor:
        return self.probs.argmax(1)

    def __len__(self) -> int:
        return self.logits.shape[0]


def last_layer_grad_embeddings(probs: torch.Tensor, embeddings: torch.Tensor,
                               targets: torch.Tensor) -> torch.Tensor:
    """Gradient of the cross-entropy w.r.t. the head's weight matrix, per example, flattened.

    For logits z = W e + b, dL/dW = (p - onehot(y)) e^T: a closed form, so no per-example
    backward pass is needed (BADGE, Ash et al. 2020). Bias gradients are left out as in BADGE.
    """
    residual = probs - F.one_hot(targets, probs.shape[1]).to(probs.dtype)
    return (residual[:, :, None] * embeddings[:, None, :]).flatten(1)


@torch.inference_mode()
def predict(model: nn.Module, data: ArrayDataset, *, normalize: Normalize | None,
            batch_size: int = 1024, device: torch.device | None = None,
            use_labels: bool = True, grad_embed: bool = False,
            amp: Switch = "auto") -> Outputs:
    """One pass over ``data``: logits, probabilities, embeddings and, with labels, losses.

    ``use_labels=False`` is how selection code scores an unlabelled pool: labels are never read,
    and gradient embeddings use the model's own predicted class instead (as BADGE does).
    Requires the model seam: ``embed(x)`` and ``head``.
    """
    logits, feats = [], []
    for _, out, emb in forward_batches(model, data, normalize, batch_size=batch_size,
                                       device=device, amp=amp, embed=True):
        feats.append(emb.float())
        logits.append(out.float())
    logits_t, emb_t = torch.cat(logits), torch.cat(feats)
    probs = logits_t.softmax(1)
    labels = data.labels.to(logits_t.device) if use_labels else None
    losses = F.cross_entropy(logits_t, labels, reduction="none") if use_labels else None
    grads = None
    if grad_embed:
        grads = last_layer_grad_embeddings(probs, emb_t, labels if use_labels
                                           else probs.argmax(1))
    return Outputs(logits_t, probs, emb_t, labels, losses, grads,
                   head_bias=getattr(model.head, "bias", None) is not None)
