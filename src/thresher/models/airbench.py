"""airbench94: the network of Keller Jordan's "94% on CIFAR-10 in 3.29 seconds on a single GPU"
(arXiv 2404.00498; reference script ``legacy/airbench94.py`` of KellerJordan/cifar10-airbench).

A fast baseline for the many retrainings data selection studies need: with its recipe it reaches
94% CIFAR-10 test accuracy in under 10 epochs. The network, on 32x32 inputs:

* a 2x2 convolution (no padding, 32 -> 31) to ``2 * C * 2 * 2`` = 24 channels whose weights
  whiten 2x2 patches of the training images (`init_whitening`) and are never trained; its bias
  is trained; then GELU;
* three conv groups of widths 64, 256, 256, each
  ``conv3x3 -> maxpool2 -> BN -> GELU -> conv3x3 -> BN -> GELU`` (31 -> 15 -> 7 -> 3), convs
  without bias and initialised as partial identities, BatchNorm with a fixed scale of 1 and a
  learned shift;
* a global max pool (the reference's ``MaxPool2d(3)`` on the final 3x3 map), a bias-free linear
  head, and logits scaled by 1/9.

Frozen tensors (the whitening filters, and the BatchNorm scales the reference pins at 1) are
buffers or absent rather than parameters with ``requires_grad=False``: every parameter then
trains, an optimiser given ``model.parameters()`` cannot decay them, and the data-derived
whitening filters still travel in ``state_dict``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from thresher.models.base import Classifier, positive_ints
from thresher.models.registry import register_model

OUTPUT_SCALE = 1 / 9        # the reference divides logits by 9: softer outputs early in training
BN_MOMENTUM = 0.4           # PyTorch convention; the reference's "0.6" is the running stats' weight
BN_EPS = 1e-12
WHITEN_KERNEL = 2


@dataclass(frozen=True)
class Airbench94Recipe:
    """The reference training hyperparameters (``hyp`` and ``main`` of ``legacy/airbench94.py``).

    Data only: the training loop lives elsewhere. Learning rate and weight decay are given in the
    reference's decoupled form, for a loss *summed* over the batch. PyTorch's Nesterov SGD takes
    ``lr_sgd = lr / (1024 * (1 + 1 / (1 - momentum)))`` (0.00146), the per-step decay
    ``wd_sgd = weight_decay * batch_size / (1024 * (1 + 1 / (1 - momentum)))`` is applied as
    ``weight_decay = wd_sgd / lr_group`` in each parameter group (so the decay does not grow with
    the bias learning-rate multiplier), and both follow the schedule below.
    """

    batch_size: int = 1024             # training batches drop the last partial batch
    epochs: float = 9.9                # fractional: training stops after ceil(9.9 * steps/epoch)
    lr: float = 11.5                   # per 1024 examples, decoupled from momentum (see above)
    lr_warmup_fraction: float = 0.23   # schedule: linear 0.2x -> 1x over the first 23% of steps,
    lr_start_factor: float = 0.2       # ... starting from 0.2x,
    lr_end_factor: float = 0.07        # ... then linear 1x -> 0.07x to the last step
    momentum: float = 0.85             # Nesterov momentum
    nesterov: bool = True
    weight_decay: float = 0.0153       # per 1024 examples, decoupled from the learning rate
    bias_lr_scale: float = 64.0        # BatchNorm shifts get 64x the learning rate, not the decay
    label_smoothing: float = 0.2
    loss_reduction: str = "sum"        # cross-entropy summed over the batch, not averaged
    whiten_images: int = 5000          # init_whitening on the first 5000 normalised train images
    whiten_eps: float = 5e-4           # added to the patch-covariance eigenvalues
    whiten_bias_epochs: int = 3        # the whitening bias trains for 3 epochs, then is frozen
    lookahead_every: int = 5           # every 5 steps: ema <- lerp(ema, state, 1 - decay), then
    lookahead_decay: float = 0.95 ** 5  # state <- ema, decay 0.95**5 * (step / total) ** 3; all
    #                                    float state (BN statistics too); at the end state = ema
    flip: str = "alternating"          # a random half of the images flipped once, then every
    #                                    image mirrored on odd epochs (the paper's new method)
    translate: int = 2                 # random shifts of up to 2 px, reflect-padded
    tta: str = "mirror+translate"      # test time: mean of image and mirror (weight 1/2), and of
    #                                    both at 1 px up-left and down-right shifts (1/4 each)
    mean: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)  # CIFAR-10 normalisation
    std: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)
    # Reported: 94.01% mean test accuracy over 1000 runs, 3.83 s on an A100 (fp16 activations,
    # BatchNorm in fp32; 3.29 s with torch.compile).


AIRBENCH94_RECIPE = Airbench94Recipe()


class PatchWhitening(nn.Module):
    """2x2 conv (no padding) whose filters are a buffer set by `init_whitening`, plus a trained
    bias. Until then the filters are PyTorch's default conv init with the first C filters copying
    the input, so an uninitialised network still runs and trains."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        k = WHITEN_KERNEL
        conv = nn.Conv2d(in_channels, 2 * in_channels * k * k, k)
        with torch.no_grad():
            nn.init.dirac_(conv.weight[:in_channels])
        self.register_buffer("weight", conv.weight.detach().clone())
        self.bias = nn.Parameter(torch.zeros(conv.out_channels))

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias)


class ShiftOnlyBatchNorm(nn.BatchNorm2d):
    """BatchNorm with its scale pinned at 1 (the reference never trains it) and a learned shift."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, eps=BN_EPS, momentum=BN_MOMENTUM, affine=False)
        self.bias = nn.Parameter(torch.zeros(channels))  # F.batch_norm takes a bias alone


def identity_conv(c_in: int, c_out: int) -> nn.Conv2d:
    """3x3 'same' conv, no bias, default init with the first min(c_in, c_out) filters passing
    their input channel through (the paper's partial identity initialisation)."""
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:c_in])
    return conv


class ConvGroup(nn.Sequential):
    """conv3x3 -> maxpool2 -> BN -> GELU -> conv3x3 -> BN -> GELU: halves the map."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(identity_conv(c_in, c_out), nn.MaxPool2d(2), ShiftOnlyBatchNorm(c_out),
                         nn.GELU(), identity_conv(c_out, c_out), ShiftOnlyBatchNorm(c_out),
                         nn.GELU())


class Airbench94(Classifier):
    """Whitening 2x2 conv -> GELU -> one `ConvGroup` per width -> global max pool -> head.

    ``embed`` is the pooled features already scaled by 1/9, so ``head(embed(x))`` is exactly the
    reference's scaled logits. Call `init_whitening` with training images before training.
    """

    def __init__(self, num_classes: int, in_shape: tuple[int, int, int],
                 widths: Sequence[int] = (64, 256, 256)) -> None:
        super().__init__()
        widths = positive_ints("widths", widths)
        c, h, w = in_shape
        k = len(widths)
        if (min(h, w) - WHITEN_KERNEL + 1) >> k == 0:
            need = 2 ** k + WHITEN_KERNEL - 1
            raise ValueError(f"inputs of {h}x{w} are too small for the 2x2 whitening conv and "
                             f"{k} conv groups (each halves the size): need at least "
                             f"{need}x{need}, or fewer entries in widths={widths}")
        self.whiten = PatchWhitening(c)
        groups, c = [], self.whiten.out_channels
        for width in widths:
            groups.append(ConvGroup(c, width))
            c = width
        self.body = nn.Sequential(nn.GELU(), *groups)
        self.head = nn.Linear(c, num_classes, bias=False)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.whiten(x)).amax(dim=(2, 3)) * OUTPUT_SCALE


@torch.no_grad()
def init_whitening(model: Airbench94, images: torch.Tensor,
                   eps: float = AIRBENCH94_RECIPE.whiten_eps) -> None:
    """Set ``model.whiten``'s filters so its 2x2 patches come out decorrelated with unit scale.

    ``images``: ``[N, C, H, W]`` training images, normalised as the network will see them (the
    reference uses the first 5000 CIFAR-10 images). Every 2x2 patch (stride 1) is flattened to a
    ``d = 4C`` vector ``p`` and ``S = mean(p p^T)`` (uncentred, as in the reference: normalised
    images are near zero-mean) is eigendecomposed, ``S = sum_i l_i v_i v_i^T``. Filter ``i`` is
    ``v_i / sqrt(l_i + eps)``, largest eigenvalue first, and filters ``d..2d-1`` are their
    negatives, so the GELU that follows keeps both signs of every direction. The outputs
    ``v_i . p / sqrt(l_i + eps)`` then have second moment ``l_i / (l_i + eps)`` and are
    uncorrelated: identity, up to ``eps``, which damps the noisiest low-variance directions.

    The statistics are accumulated in chunks on ``images``' device and decomposed on the CPU in
    float64, so the result is deterministic and works wherever the images live.
    """
    if not isinstance(model, Airbench94):
        raise ValueError(f"init_whitening needs an Airbench94, got {type(model).__name__}")
    layer = model.whiten
    c, k = layer.weight.shape[1], layer.weight.shape[-1]
    if images.dim() != 4 or images.shape[1] != c or min(images.shape[2:]) < k:
        raise ValueError(f"images must be [N, {c}, H, W] with H, W >= {k}, "
                         f"got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be normalised floats, got dtype {images.dtype}")
    if len(images) == 0:
        raise ValueError("init_whitening needs at least one image")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps!r}")
    d = c * k * k
    second_moment = torch.zeros(d, d, dtype=torch.float64)
    count = 0
    for chunk in images.split(512):
        patches = F.unfold(chunk.float(), k).transpose(1, 2).reshape(-1, d)  # (c, kh, kw) order
        second_moment += (patches.T @ patches).cpu().double()
        count += len(patches)
    eigenvalues, eigenvectors = torch.linalg.eigh(second_moment / count)  # ascending
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)
    filters = eigenvectors.T / (eigenvalues.clamp_min(0) + eps).sqrt()[:, None]
    filters = torch.cat([filters, -filters]).reshape(layer.weight.shape)
    layer.weight.copy_(filters.to(layer.weight.dtype))


@register_model("airbench94", "airbench94 (Jordan 2024): 94% CIFAR-10 in <10 epochs, 1.97M params; "
                "call init_whitening before training")
def airbench94(num_classes: int, in_shape: tuple[int, int, int], *,
               widths: Sequence[int] = (64, 256, 256)) -> Airbench94:
    return Airbench94(num_classes, in_shape, widths)
