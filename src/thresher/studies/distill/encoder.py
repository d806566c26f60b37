"""The distillation's latent space: an autoencoder trained through `thresher.train.fit`,
latents encoded once in one batched pass, centred and L2-normalised, and the map back from a
normalised latent to one the decoder takes.

The autoencoder is `ConvAutoencoder` (decoder and classifier head on a latent code); with
another ``backbone`` its encoder is replaced by that model's embedding followed by a linear
map to the latent, so every backbone decodes through the same decoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from thresher.data.dataset import ArrayDataset
from thresher.data.pipeline import Batch, Normalize, to_float
from thresher.models import build
from thresher.models.autoencoder import ConvAutoencoder
from thresher.studies.distill.config import EncoderConfig
from thresher.train import fit
from thresher.train.engine import forward_batches


class _Embedding(nn.Module):
    """A classifier's ``embed`` as a module (the backbone's own head is left unused)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.embed(x)


class _Training(nn.Module):
    """The autoencoder as `fit` trains it: ``forward`` returns the head's logits and keeps the
    reconstruction for the loss, so reconstruction and classification share one pass."""

    def __init__(self, autoencoder: ConvAutoencoder) -> None:
        super().__init__()
        self.autoencoder = autoencoder
        self.reconstruction: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.autoencoder.encode(x)
        self.reconstruction = self.autoencoder.decode(z)
        return self.autoencoder.head(z)


def build_autoencoder(cfg: EncoderConfig, num_classes: int,
                      in_shape: tuple[int, int, int]) -> ConvAutoencoder:
    """The autoencoder for ``cfg.backbone`` (see the module docstring)."""
    ae = ConvAutoencoder(num_classes, in_shape, latent_dim=cfg.latent_dim)
    if cfg.backbone != "conv_autoencoder":
        backbone = build(cfg.backbone, num_classes, in_shape, **cfg.backbone_options)
        ae.encoder = nn.Sequential(_Embedding(backbone),
                                   nn.Linear(backbone.embed_dim, cfg.latent_dim))
    if cfg.weights_file:
        path = Path(cfg.weights_file)
        if not path.is_file():
            raise FileNotFoundError(f"encoder.weights_file {str(path)!r} does not exist "
                                    f"(pretrained weights are read from a local file only)")
        state = torch.load(path, map_location="cpu", weights_only=True)
        try:
            ae.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"encoder.weights_file {str(path)!r} does not fit "
                             f"encoder.backbone={cfg.backbone!r} with "
                             f"latent_dim={cfg.latent_dim}: {str(e).splitlines()[0]}") from None
    return ae


def train_autoencoder(ae: ConvAutoencoder, train: ArrayDataset, cfg: EncoderConfig,
                      normalize: Normalize, device: torch.device, seed: int) -> list[dict]:
    """``recon_weight`` x per-example pixel MSE (in the normalised input space) +
    ``cls_weight`` x cross-entropy, through the one training loop; returns its history."""
    wrapper = _Training(ae)

    def loss_fn(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        recon = F.mse_loss(wrapper.reconstruction.float(), batch.x.float(),
                           reduction="none").flatten(1).mean(1)
        ce = F.cross_entropy(logits.float(), batch.y, reduction="none")
        return cfg.recon_weight * recon + cfg.cls_weight * ce

    result = fit(wrapper, train, cfg.fit, normalize=normalize, device=device, seed=seed,
                 loss_fn=loss_fn)
    return result.history


@torch.inference_mode()
def encode(ae: ConvAutoencoder, data: ArrayDataset, normalize: Normalize,
           device: torch.device) -> torch.Tensor:
    """Latents of every image, ``[N, latent_dim]``, in batched passes."""
    return torch.cat([emb.float() for _, _, emb in forward_batches(
        ae, data, normalize, device=device, embed=True)])


@torch.inference_mode()
def reconstruction_error(ae: ConvAutoencoder, data: ArrayDataset, normalize: Normalize,
                         device: torch.device, limit: int = 2000) -> float:
    """Mean pixel MSE (normalised space) of the first ``limit`` images: how well the decoder
    the prototypes are drawn with works."""
    ae.eval()
    x = to_float(data.images[:limit].to(device), normalize, False)
    return float(F.mse_loss(ae.reconstruct(x), x))


@dataclass
class LatentSpace:
    """Centring and L2 normalisation of latents (SimpleShot), and the way back: a normalised
    point p decodes as ``mean + radius[c] * p``, with ``radius[c]`` the mean norm of class c's
    centred training latents (the direction is what normalisation keeps)."""

    mean: torch.Tensor  # [D]
    radius: torch.Tensor  # [C]
    raw: bool = False

    @classmethod
    def fit(cls, z: torch.Tensor, y: torch.Tensor, num_classes: int,
            raw: bool = False) -> LatentSpace:
        mean = torch.zeros_like(z[0]) if raw else z.mean(0)
        norms = (z - mean).norm(dim=1)
        radius = torch.zeros(num_classes, device=z.device).index_add_(0, y, norms)
        radius /= torch.bincount(y, minlength=num_classes).clamp(min=1)
        return cls(mean, radius, raw)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z if self.raw else F.normalize(z - self.mean, dim=1)

    def inverse(self, p: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.raw:
            return p
        return self.mean + self.radius[labels, None] * F.normalize(p, dim=1)


@torch.inference_mode()
def decode_images(ae: ConvAutoencoder, space: LatentSpace, points: torch.Tensor,
                  labels: torch.Tensor, normalize: Normalize) -> torch.Tensor:
    """Prototypes (normalised latents) as uint8 images ``[N, C, H, W]``."""
    ae.eval()
    x = ae.decode(space.inverse(points, labels))
    mean = torch.as_tensor(normalize.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.as_tensor(normalize.std, device=x.device).view(1, -1, 1, 1)
    return (x * std + mean).mul(255).round().clamp(0, 255).to(torch.uint8)
