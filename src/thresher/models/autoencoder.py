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


def conv_stages(in_shape: tuple[int, int, int], channels: Sequence[int]
                ) -> tuple[list[nn.Module], tuple[int, int, int], list[tuple[int, int]]]:
    """Stride-2 3x3 conv + ReLU per entry of ``channels``, each mapping a side n to ceil(n / 2):
    the layers, the output shape, and every stage's input size (which `deconv_stages` needs to
    come back to odd sizes exactly). Too-small images raise a ValueError naming the size."""
    c, h, w = in_shape
    k = len(channels)
    if min(h, w) < 2 ** k:
        raise ValueError(f"inputs of {h}x{w} are too small for {k} stride-2 stages: need at "
                         f"least {2 ** k}x{2 ** k}, or fewer entries in channels={channels}")
    layers: list[nn.Module] = []
    sizes = [(h, w)]
    for out in channels:
        layers += [nn.Conv2d(c, out, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
        c, h, w = out, (h + 1) // 2, (w + 1) // 2
        sizes.append((h, w))
    return layers, (c, h, w), sizes


def deconv_stages(shape: tuple[int, int, int], sizes: list[tuple[int, int]],
                  channels: Sequence[int], out_channels: int) -> list[nn.Module]:
    """The mirror of `conv_stages`: unflatten to ``shape``, then a stride-2 transposed conv per
    stage whose ``output_padding`` restores each recorded size (28 -> 14 -> 7 and back); ReLU
    between stages, none after the last (the caller chooses the output's range)."""
    c = shape[0]
    k = len(channels)
    layers: list[nn.Module] = [nn.Unflatten(1, shape)]
    for i, out in enumerate((*reversed(channels[:-1]), out_channels)):
        th, tw = sizes[k - 1 - i]
        layers.append(nn.ConvTranspose2d(c, out, 3, stride=2, padding=1,
                                         output_padding=(1 - th % 2, 1 - tw % 2)))
        if i < k - 1:
            layers.append(nn.ReLU(inplace=True))
        c = out
    return layers


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
        encoder, (c, h, w), sizes = conv_stages(in_shape, channels)
        self.encoder = nn.Sequential(*encoder, nn.Flatten(), nn.Linear(c * h * w, latent_dim))
        self.decoder = nn.Sequential(nn.Linear(latent_dim, c * h * w), nn.ReLU(inplace=True),
                                     *deconv_stages((c, h, w), sizes, channels, in_shape[0]))
        if sigmoid:
            self.decoder.append(nn.Sigmoid())
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
