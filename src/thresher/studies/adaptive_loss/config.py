"""Settings of `thresher adaptive-loss`: the one place its defaults live.

Two settings share one config: ``task=classify`` (the small CNN on a stratified training
subset, cross-entropy plus label-smoothing, confidence-penalty and consistency terms) and
``task=vae`` (the conv VAE, reconstruction plus a KL term whose weight beta is adapted). The
defaults are the CIFAR-10 5,000-image protocol at CPU scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from thresher.runs.config import ConfigError, check_choice, check_positive, check_range
from thresher.studies.common import StudyConfig, check_dataset_and_model
from thresher.train import FitConfig
from thresher.train.losses import ExecutorConfig

TASKS = ("classify", "vae")
MODES = ("baseline", "monitor_only", "controller_only", "full")
CONTROLS = {  # the controls a reviewer asks for, per task, each at equal epochs
    "classify": ("tuned_cosine", "label_smoothing", "fixed_grid", "random_schedule",
                 "uncertainty"),
    "vae": ("tuned_cosine", "fixed_grid", "linear_anneal", "cyclical", "pi_control",
            "random_schedule", "uncertainty"),
}
AUX = {"classify": ("uniform", "confidence", "consistency"), "vae": ("kl",)}
BASE = {"classify": "ce", "vae": "recon"}


def _classify_fit() -> FitConfig:
    return FitConfig(epochs=30, batch_size=128, optimizer="sgd", lr=0.05, momentum=0.9,
                     weight_decay=5e-4, schedule="cosine", augment="standard")


def _vae_fit() -> FitConfig:
    return FitConfig(epochs=20, batch_size=128, optimizer="adam", lr=1e-3, weight_decay=0.0,
                     schedule="cosine", augment="none")


@dataclass
class MonitorConfig:
    """The RL monitor: every ``interval`` optimiser steps a DQN sees the training dynamics and
    moves one auxiliary weight up or down by ``action_scale`` (or keeps them); its reward is
    the relative drop of the loss on ``val_examples`` validation rows over the interval."""

    interval: int = 10
    action_scale: float = 1.5
    val_examples: int = 256
    lr: float = 1e-3
    gamma: float = 0.9
    batch_size: int = 32
    learning_starts: int = 16
    gradient_steps: int = 2
    target_update_interval: int = 20
    exploration_fraction: float = 0.5  # of a run's decisions, over which epsilon falls
    epsilon_end: float = 0.05

    def validate(self) -> None:
        for name in ("interval", "val_examples", "lr", "batch_size", "gradient_steps",
                     "target_update_interval"):
            check_positive(f"monitor.{name}", getattr(self, name))
        check_positive("monitor.learning_starts", self.learning_starts, allow_zero=True)
        if self.action_scale <= 1:
            raise ConfigError(f"monitor.action_scale must be > 1 (a weight is multiplied or "
                              f"divided by it), got {self.action_scale!r}")
        for name in ("gamma", "exploration_fraction", "epsilon_end"):
            check_range(f"monitor.{name}", getattr(self, name), 0.0, 1.0)


@dataclass
class ControllerConfig:
    """The meta-controller (see `policies.MetaController`): consecutive epochs form mirrored
    pairs around its prior log-weights (+step and -step on each weight); after each pair
    every weight's prior moves ``step`` towards the side whose epoch improved validation
    more, and its step grows by ``grow`` while that direction repeats and shrinks by
    ``shrink`` when it reverses (Rprop's rule), within ``[step_min, step_max]``."""

    step: float = 0.3
    grow: float = 1.2
    shrink: float = 0.5
    step_min: float = 0.02
    step_max: float = 1.5

    def validate(self) -> None:
        for name in ("step", "step_min", "step_max"):
            check_positive(f"controller.{name}", getattr(self, name))
        if self.grow < 1 or not 0 < self.shrink < 1:
            raise ConfigError(f"controller.grow must be >= 1 and controller.shrink in (0, 1), "
                              f"got {self.grow} and {self.shrink}")
        if not self.step_min <= self.step <= self.step_max:
            raise ConfigError(f"controller.step={self.step} must lie in [step_min, step_max] = "
                              f"[{self.step_min}, {self.step_max}]")


@dataclass
class KLControlConfig:
    """The VAE's KL controls: linear annealing from 0 to 1 over ``warmup_fraction`` of
    training; cyclical annealing (Fu et al. 2019), ``cycles`` cycles each rising over
    ``ratio`` of the cycle then held at 1; a PI controller on the KL (ControlVAE, Shao et al.
    2020) steering the batch KL to ``kl_target`` nats with gains ``kp``, ``ki`` within
    ``[beta_min, beta_max]``."""

    warmup_fraction: float = 0.5
    cycles: int = 4
    ratio: float = 0.5
    kl_target: float = 20.0
    kp: float = 1.0
    ki: float = 1e-4
    beta_min: float = 0.0
    beta_max: float = 1.0

    def validate(self) -> None:
        check_range("kl_control.warmup_fraction", self.warmup_fraction, 0.0, 1.0)
        check_positive("kl_control.cycles", self.cycles)
        check_range("kl_control.ratio", self.ratio, 0.0, 1.0)
        for name in ("kl_target", "kp", "ki"):
            check_positive(f"kl_control.{name}", getattr(self, name))
        if not 0 <= self.beta_min < self.beta_max:
            raise ConfigError(f"kl_control needs 0 <= beta_min < beta_max, got "
                              f"[{self.beta_min}, {self.beta_max}]")


@dataclass
class AdaptiveLossConfig(StudyConfig):
    task: str = "classify"
    dataset: str = "cifar10"
    model: str | None = None  # None: simple_cnn (classify) or conv_vae (vae)
    train_size: int = 5000  # stratified training subset per seed (0: all but validation)
    val_size: int = 1000  # stratified validation rows, disjoint from training
    modes: list[str] = field(default_factory=lambda: list(MODES))
    controls: list[str] | None = None  # None: every control of the task
    prior_weight: float = 0.1  # every auxiliary weight's starting value (beta starts at 1)
    lr_grid: list[float] = field(default_factory=lambda: [0.5, 2.0])  # x fit.lr, tuned_cosine
    weight_grid: list[float] = field(default_factory=lambda: [0.03, 0.1, 0.3])  # fixed_grid
    beta_grid: list[float] = field(default_factory=lambda: [0.5, 0.8, 1.0])  # vae fixed_grid
    smoothing: float = 0.1  # the label_smoothing control's epsilon
    meta_state: str | None = None  # file the meta-controller and monitor resume from/save to
    fit: FitConfig = field(default_factory=_classify_fit)  # task=classify trains with this
    vae_fit: FitConfig = field(default_factory=_vae_fit)  # task=vae trains with this
    # set, these override the task's recipe (fit or vae_fit), whichever task runs
    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    kl_control: KLControlConfig = field(default_factory=KLControlConfig)

    def validate(self) -> None:
        super().validate()
        check_choice("task", self.task, TASKS)
        check_dataset_and_model(self.dataset, self.model_name, {}, self.dataset_options)
        check_positive("train_size", self.train_size, allow_zero=True)
        check_positive("val_size", self.val_size)
        for mode in self.modes:
            check_choice("modes", mode, MODES)
        for control in self.control_names:
            check_choice("controls", control, CONTROLS[self.task])
        if not self.methods:
            raise ConfigError("nothing to run: modes and controls are both empty")
        check_range("prior_weight", self.prior_weight, self.executor.w_min, self.executor.w_max)
        for name in ("lr_grid", "weight_grid", "beta_grid"):
            for value in getattr(self, name):
                check_positive(name, value)
        check_range("smoothing", self.smoothing, 0.0, 0.99)
        if self.monitor.val_examples > self.val_size:
            raise ConfigError(f"monitor.val_examples={self.monitor.val_examples} exceeds "
                              f"val_size={self.val_size}")
        try:
            self.recipe.validate()
            self.executor.validate()
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self.monitor.validate()
        self.controller.validate()
        self.kl_control.validate()

    @property
    def model_name(self) -> str:
        return self.model or ("conv_vae" if self.task == "vae" else "simple_cnn")

    @property
    def recipe(self) -> FitConfig:
        """The task's training recipe: ``fit`` or ``vae_fit``, with ``epochs``, ``lr`` and
        ``batch_size`` applied where set."""
        recipe = self.vae_fit if self.task == "vae" else self.fit
        changes = {k: getattr(self, k) for k in ("epochs", "lr", "batch_size")
                   if getattr(self, k) is not None}
        return replace(recipe, **changes) if changes else recipe

    @property
    def control_names(self) -> list[str]:
        return list(CONTROLS.get(self.task, ())) if self.controls is None else self.controls

    @property
    def methods(self) -> list[str]:
        return [*self.modes, *self.control_names]
