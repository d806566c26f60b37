"""Convolutional variational autoencoder (Kingma & Welling 2014) for images in [0, 1].

The loss is returned as its two parts per example (reconstruction NLL, KL), not pre-summed, so
that studies which adapt the KL weight beta while training can form ``terms @ [1, beta]``
themselves and log both parts. The posterior mean is the embedding, so the model also plugs
into everything that expects the `Classifier` seam (a probe head on ``mu``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from thresher.models.autoencoder import conv_stages, deconv_stages
from thresher.models.base import Classifier, positive_ints
from thresher.models.registry import register_model


class ConvVAE(Classifier):
    """Stride-2 convs -> hidden FC -> ``(mu, logvar)``; FC -> transposed convs -> pixel logits.

    Each encoder stage maps a side n to ceil(n / 2); the matching decoder stage picks its
    ``output_padding`` so odd sizes (28 -> 14 -> 7) come back exactly. The decoder outputs
    Bernoulli logits (no sigmoid) so the likelihood is computed stably from logits.
    """

    def __init__(self, num_classes: int, in_shape: tuple[int, int, int], latent_dim: int = 16,
                 channels: Sequence[int] = (32, 64), hidden: int = 256) -> None:
        super().__init__()
        (latent_dim,) = positive_ints("latent_dim", latent_dim)
        (hidden,) = positive_ints("hidden", hidden)
        channels = positive_ints("channels", channels)
        encoder, (c, h, w), sizes = conv_stages(in_shape, channels)
        self.latent_dim = latent_dim
        self.encoder = nn.Sequential(*encoder, nn.Flatten(), nn.Linear(c * h * w, hidden),
                                     nn.ReLU(inplace=True))
        # One layer for both statistics: [mu | logvar] = posterior(features).
        self.posterior = nn.Linear(hidden, 2 * latent_dim)
        self.decoder = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(inplace=True),
                                     nn.Linear(hidden, c * h * w), nn.ReLU(inplace=True),
                                     *deconv_stages((c, h, w), sizes, channels, in_shape[0]))
        self.head = nn.Linear(latent_dim, num_classes)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, C, H, W] -> (mu, logvar)``, each ``[B, latent_dim]``: q(z|x) = N(mu, e^logvar)."""
        mu, logvar = self.posterior(self.encoder(x)).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``[B, latent_dim] -> [B, C, H, W]`` Bernoulli logits, the input's shape."""
        return self.decoder(z)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor,
                       noise: torch.Tensor | None = None) -> torch.Tensor:
        """``z = mu + exp(logvar / 2) * noise``, differentiable in ``mu`` and ``logvar``.

        ``noise`` defaults to a draw from the global generator, which studies seed; pass it to
        evaluate with a fixed sample."""
        if noise is None:
            noise = torch.randn_like(mu)
        return mu + torch.exp(0.5 * logvar) * noise

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior mean: deterministic, so probes and cached embeddings are repeatable."""
        return self.encode(x)[0]

    def terms(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Per-example ``[B, 2]``: (reconstruction NLL, KL(q(z|x) || N(0, I))), both in nats.

        ``x`` in [0, 1] is both the input and the Bernoulli target. The negative ELBO is the sum
        of the columns; a beta-weighted loss is ``terms @ torch.tensor([1.0, beta])``. Computed
        in float32 even under autocast, where a half-precision sum over pixels would lose the
        small differences that the KL weight trades against.
        """
        mu, logvar = self.encode(x)
        logits = self.decode(self.reparameterize(mu, logvar, noise))
        recon = F.binary_cross_entropy_with_logits(logits.float(), x.float(), reduction="none")
        mu, logvar = mu.float(), logvar.float()
        kl = 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(1)
        return torch.stack([recon.flatten(1).sum(1), kl], dim=1)


def vae_metrics(vae: ConvVAE, images: torch.Tensor, *, batch_size: int = 1000,
                device: torch.device | str | None = None,
                generator: torch.Generator | None = None) -> dict[str, float]:
    """Mean per-image ELBO parts of ``vae`` on uint8 ``images`` ``[N, C, H, W]`` (scaled by /255).

    One reparameterisation sample per image, all drawn up front from ``generator`` (default: a
    fresh one seeded 0), so the result is deterministic, does not depend on ``batch_size`` and
    leaves the global RNG alone. The model is evaluated in eval mode, then put back in the mode
    it was in. ``device`` defaults to the model's.

    With grey levels in [0, 1] as Bernoulli targets this is the standard continuous-target
    Bernoulli ELBO, not the dynamically binarised MNIST benchmark: the numbers are not
    comparable to published binarised-MNIST NLLs (nor is the Bernoulli likelihood a normalised
    density for non-binary targets).

    Returns ``recon_nats``, ``kl_nats``, ``neg_elbo_nats`` (their sum), ``elbo_nats`` (its
    negation), ``bits_per_dim`` (``neg_elbo_nats / (C*H*W * ln 2)``) and ``n``.
    """
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError("images must be a uint8 tensor [N, C, H, W], got "
                         f"{images.dtype} of shape {tuple(images.shape)}")
    if len(images) == 0:
        raise ValueError("images is empty: no ELBO to evaluate")
    (batch_size,) = positive_ints("batch_size", batch_size)
    if device is None:
        device = next(vae.parameters()).device
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    n, dims = len(images), images[0].numel()
    noise = torch.randn(n, vae.latent_dim, generator=generator, device=generator.device)
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    was_training = vae.training
    vae.eval()
    try:
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                x = images[start:start + batch_size].to(device).float().div_(255)
                eps = noise[start:start + batch_size].to(device)
                totals += vae.terms(x, eps).double().sum(0)
    finally:
        vae.train(was_training)
    recon, kl = (totals / n).tolist()
    neg_elbo = recon + kl
    return {"recon_nats": recon, "kl_nats": kl, "elbo_nats": -neg_elbo,
            "neg_elbo_nats": neg_elbo, "bits_per_dim": neg_elbo / (dims * math.log(2)), "n": n}


@register_model("conv_vae", "convolutional VAE (Bernoulli pixel logits) with a head on mu")
def conv_vae(num_classes: int, in_shape: tuple[int, int, int], *, latent_dim: int = 16,
             channels: Sequence[int] = (32, 64), hidden: int = 256) -> ConvVAE:
    return ConvVAE(num_classes, in_shape, latent_dim, channels, hidden)
