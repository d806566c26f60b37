"""Convolutional autoencoder with a classifier head on its latent code.

Reconstruction error is a label-free score (novelty, typicality) and the latent is a
representation learnt without labels; the head lets the same network be trained or probed as
a classifier, so it plugs into everything that expects the `Classifier` seam.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from thresher.models.base import Classifier, positive_ints
from thresher.models.registry import register_model


class ConvAutoencoder(Classifier):
    """Stride-2 convs -> linear latent ``z``; linear -> transposed convs back to the input shape.

    Each encoder stage maps a side n to ceil(n / 2); the matching decoder stage picks its
    ``output_padding`` so odd sizes (28 -> 14 -> 7 -> 4) come back exactly. The decoder output
    is unbounded, i.e. in the same normalised space as the input, unless ``sigmoid=True``
    (for inputs in [0, 1]).
    """

    def __init__(self, num_classes: int, in_shape: tuple[int, int, int], latent_dim: int = 128,
                 channels: Sequence[int] = (32, 64, 128), sigmoid: bool = False) -> None:
        super().__init__()
        (latent_dim,) = positive_ints("latent_dim", latent_dim)
        channels = positive_ints("channels", channels)
        c, h, w = in_shape
        k = len(channels)
        if min(h, w) < 2 ** k:
            raise ValueError(f"inputs of {h}x{w} are too small for {k} stride-2 stages: need at "
                             f"least {2 ** k}x{2 ** k}, or fewer entries in channels={channels}")
        sizes = [(h, w)]
        encoder: list[nn.Module] = []
        for out in channels:
            encoder += [nn.Conv2d(c, out, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
            c, h, w = out, (h + 1) // 2, (w + 1) // 2
            sizes.append((h, w))
        self.encoder = nn.Sequential(*encoder, nn.Flatten(), nn.Linear(c * h * w, latent_dim))

        decoder: list[nn.Module] = [nn.Linear(latent_dim, c * h * w), nn.ReLU(inplace=True),
                                    nn.Unflatten(1, (c, h, w))]
        outs = (*reversed(channels[:-1]), in_shape[0])
        for i, out in enumerate(outs):
            th, tw = sizes[k - 1 - i]
            decoder.append(nn.ConvTranspose2d(c, out, 3, stride=2, padding=1,
                                              output_padding=(1 - th % 2, 1 - tw % 2)))
            if i < k - 1:
                decoder.append(nn.ReLU(inplace=True))
            c = out
        if sigmoid:
            decoder.append(nn.Sigmoid())
        self.decoder = nn.Sequential(*decoder)
        self.head = nn.Linear(latent_dim, num_classes)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W] -> [B, latent_dim]``."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``[B, latent_dim] -> [B, C, H, W]``, the input's shape."""
        return self.decoder(z)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


@register_model("conv_autoencoder", "conv encoder/decoder with a classifier head on the latent")
def conv_autoencoder(num_classes: int, in_shape: tuple[int, int, int], *,
                     latent_dim: int = 128, channels: Sequence[int] = (32, 64, 128),
                     sigmoid: bool = False) -> ConvAutoencoder:
    return ConvAutoencoder(num_classes, in_shape, latent_dim, channels, sigmoid)
