"""Settings of `thresher distill`: the one place its defaults live.

The defaults are the study's CIFAR-10 protocol at CPU scale: the conv autoencoder trained for
a few epochs on reconstruction plus classification, 128-d latents centred and L2-normalised,
10 points per class, a 10% validation split carved from train for everything the RL parts
learn from, and one probe recipe (`thresher.train.probe.ProbeConfig`) for every method.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from thresher.models import build
from thresher.runs.config import ConfigError, check_choice, check_positive, check_range
from thresher.studies.common import StudyConfig, check_dataset_and_model
from thresher.train import FitConfig
from thresher.train.probe import ProbeConfig

METHODS = ("full", "random", "kmeans", "medoids", "herding", "dm", "protos", "rl_select",
           "rl_shape")
SHAPE_REWARDS = ("val", "image")


def _encoder_fit() -> FitConfig:
    return FitConfig(epochs=10, batch_size=128, optimizer="adam", lr=2e-3, momentum=0.9,
                     weight_decay=0.0, schedule="cosine", augment="none", eval_every=0)


@dataclass
class EncoderConfig:
    """The autoencoder: ``backbone`` encodes (``conv_autoencoder``: its own conv encoder; any
    registered image model, e.g. ``resnet18`` or ``vit_tiny``, or ``torchvision:<name>``: its
    embedding, then a linear map to the latent), the conv decoder decodes; trained on
    ``recon_weight`` x pixel MSE + ``cls_weight`` x cross-entropy of a linear head."""

    backbone: str = "conv_autoencoder"
    backbone_options: dict[str, Any] = field(default_factory=dict)
    latent_dim: int = 128
    recon_weight: float = 1.0
    cls_weight: float = 1.0
    weights_file: str | None = None  # pretrained encoder weights: a local file only
    fit: FitConfig = field(default_factory=_encoder_fit)

    def validate(self) -> None:
        check_positive("encoder.latent_dim", self.latent_dim)
        for name in ("recon_weight", "cls_weight"):
            check_range(f"encoder.{name}", getattr(self, name), 0.0, None)
        if self.recon_weight == 0:
            raise ConfigError("encoder.recon_weight must be > 0: the prototypes are decoded to "
                              "images, so the decoder has to learn")
        self.fit.validate()


@dataclass
class SelectConfig:
    """RL selection: per class, a Thompson-sampling semi-bandit over ``candidates_per_class``
    k-means medoids picks the ``budget_per_class`` kept ones; ``episodes`` selections per
    round are scored at once by batched probes (validation accuracy), ``rounds`` rounds."""

    budget_per_class: int | None = None  # None: the study's m_per_class
    candidates_per_class: int = 40
    episodes: int = 32
    rounds: int = 25

    def validate(self) -> None:
        if self.budget_per_class is not None:
            check_positive("select.budget_per_class", self.budget_per_class)
        for name in ("candidates_per_class", "episodes", "rounds"):
            check_positive(f"select.{name}", getattr(self, name))


@dataclass
class ShapeConfig:
    """RL shaping: an actor-critic agent sets the prototype loss weights (class matching,
    real alignment, diversity) every ``steps_per_decision`` optimisation steps, starting each
    of ``episodes`` episodes from the non-RL prototypes; reward = the validation-accuracy
    gain of a fresh probe (``val``) or of one trained on the decoded-and-re-encoded prototypes
    (``image``)."""

    episodes: int = 12
    decisions: int = 8
    steps_per_decision: int = 25
    lr: float = 3e-3  # the agent's learning rate
    reward: str = "val"

    def validate(self) -> None:
        for name in ("episodes", "decisions", "steps_per_decision"):
            check_positive(f"shape.{name}", getattr(self, name))
        check_positive("shape.lr", self.lr)
        check_choice("shape.reward", self.reward, SHAPE_REWARDS)


@dataclass
class DistillConfig(StudyConfig):
    dataset: str = "cifar10"
    m_per_class: int = 10
    val_fraction: float = 0.1
    raw_latents: bool = False  # skip centring and L2 normalisation
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    proto_steps: int = 200  # prototype optimisation steps without RL
    proto_lr: float = 0.01
    proto_weights: dict[str, float] = field(default_factory=lambda: {
        "class_match": 1.0, "real_align": 1.0, "diversity": 0.1})
    select: SelectConfig = field(default_factory=SelectConfig)
    shape: ShapeConfig = field(default_factory=ShapeConfig)
    pixel_check: bool = True  # train the small CNN on decoded prototypes vs real images
    pixel_steps: int = 500  # its optimiser steps (batches of 32), whatever M is

    def validate(self) -> None:
        super().validate()
        check_dataset_and_model(self.dataset, "simple_cnn", {}, self.dataset_options)
        check_positive("m_per_class", self.m_per_class)
        check_positive("val_fraction", self.val_fraction)
        check_range("val_fraction", self.val_fraction, 0.0, 0.5)
        for method in self.methods:
            check_choice("methods", method, METHODS)
        if not self.methods:
            raise ConfigError(f"methods must name at least one of {', '.join(METHODS)}")
        self.encoder.validate()
        self.probe.validate()
        check_positive("proto_steps", self.proto_steps)
        check_positive("proto_lr", self.proto_lr)
        for key, value in self.proto_weights.items():
            check_choice("proto_weights", key, ("class_match", "real_align", "diversity"))
            check_range(f"proto_weights.{key}", value, 0.0, None)
        self.select.validate()
        self.shape.validate()
        check_positive("pixel_steps", self.pixel_steps)
        if self.encoder.backbone != "conv_autoencoder":
            try:  # a backbone that cannot take the images fails here, before any work
                from thresher.data.sources import get_source
                shape = get_source(self.dataset).shape or (3, 32, 32)
                build(self.encoder.backbone, 10, shape, **self.encoder.backbone_options)
            except ValueError as e:
                raise ConfigError(f"encoder.backbone {self.encoder.backbone!r}: {e}") from None

    @property
    def budget(self) -> int:
        return self.select.budget_per_class or self.m_per_class
