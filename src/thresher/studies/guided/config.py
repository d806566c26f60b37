"""Settings of `thresher guided`: the one place its defaults live.

The default is the CIFAR-10 / ResNet-20 experiment at a CPU-feasible scale: a stratified
5,000-image training subset and a disjoint 1,000-image validation split per seed, 15 epochs of
SGD (lr 0.1, momentum 0.9, cosine decayed to zero over the 15 epochs, standard
augmentation), a budget of 30% of the subset each epoch, a new selection every epoch, 3 seeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from thresher.runs.config import ConfigError, check_choice, check_positive
from thresher.select.epoch import EPOCH_STRATEGIES, SAMPLINGS
from thresher.studies.common import StudyConfig, check_dataset_and_model
from thresher.train import FitConfig
from thresher.train.phases import PhaseConfig

# experiment -> (dataset, model); "corruptions" trains on CIFAR-10 then evaluates CIFAR-10-C
EXPERIMENTS = {"cifar10": ("cifar10", "resnet20"), "cifar100": ("cifar100", "resnet32"),
               "corruptions": ("cifar10", "resnet20")}
EXPERIMENT_CHOICES = (*EXPERIMENTS, "all")
FIXED = ("el2n", "grad_norm", "entropy", "margin", "forgetting", "loss", "kcenter")
BASELINES = ("full", "full_equal", "full_equal_select", "rs2", "rs2_equal", "infobatch")
METHODS = (*BASELINES, *FIXED, "policy", "policy_random", "discovered")
FULL = ("full", "full_equal", "full_equal_select")  # every row, every epoch they train
PRIMITIVES = ("el2n", "grad_norm", "entropy", "margin", "forgetting", "loss")
POLICIES = ("bandit", "actor_critic", "random")
BANDITS = ("linucb", "ucb")
OPTIMIZERS = ("sgd", "galore")
AUGMENTS = ("standard", "strong", "cutout", "none")
CORRUPTION_SEVERITIES = (1, 3, 5)
SELECTION_OPTIONS = ("balance", "sampling", "power", "clusters", "prune_ratio", "delta",
                     "beta", "loss_source")


def _fit() -> FitConfig:
    return FitConfig(epochs=15, batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9,
                     weight_decay=5e-4, schedule="cosine", augment="standard")


@dataclass
class EvolveConfig:
    """The one-off search for new selection strategies (a unit of its own, seeded by the run's
    seed). Fitness of an expression: a model is first trained ``warm_epochs`` on the proxy set
    (the seed's training split, or a stratified ``proxy_train_size`` subset of it) at the
    study's constant learning rate, once, shared by every candidate: a model in mid-training,
    where selection matters. Each candidate then continues from it for ``proxy_epochs``
    epochs, the rate decayed to zero as the study's schedule does, selecting the study's
    budget by the expression every epoch, and scores the validation accuracy. Every candidate
    sees the same seed (common random numbers), so the comparison is paired. The ``top_k``
    best join the policy's actions."""

    population: int = 8
    generations: int = 3
    proxy_epochs: int = 3
    proxy_train_size: int = 0  # 0: the whole training split
    warm_epochs: int = 5
    max_depth: int = 2
    top_k: int = 2

    def validate(self) -> None:
        for name in ("population", "proxy_epochs", "top_k"):
            check_positive(f"evolve.{name}", getattr(self, name))
        for name in ("generations", "warm_epochs", "max_depth", "proxy_train_size"):
            check_positive(f"evolve.{name}", getattr(self, name), allow_zero=True)


@dataclass
class GuidedConfig(StudyConfig):
    runs: int = 3
    experiment: str = "cifar10"  # cifar10, cifar100, corruptions or all (dataset overrides)
    dataset: str | None = None  # set: train on this registered dataset instead of a preset
    model: str | None = None  # set: this registered model (default: the preset's, or mlp)
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    policy: str = "bandit"  # bandit, actor_critic, random or fixed:<strategy>
    bandit: str = "linucb"  # linucb (contextual) or ucb
    budget: float = 0.3  # a fraction in (0, 1], or above 1 a row count
    select_every: int = 1  # epochs between selections (and the agent's decisions)
    selection: dict[str, Any] = field(default_factory=dict)  # EpochSelector options, e.g.
    #   {balance: true} (class-balanced picks) or {sampling: proportional, power: 2}
    train_size: int = 5000  # stratified training subset per seed (0: all but validation)
    val_size: int = 1000  # stratified validation rows carved from train, disjoint
    augment: str | None = None  # standard, strong, cutout, none (None: fit.augment)
    optimizer: str = "sgd"  # sgd (fit.optimizer as given) or galore (fit.optimizer=galore_sgd)
    epochs: int | None = None  # set: overrides fit.epochs
    fit: FitConfig = field(default_factory=_fit)
    phases: dict[str, Any] = field(default_factory=lambda: {
        "lag": 10, "calibration": 50, "refractory": 20})  # PhaseConfig overrides
    phase_every: int = 1  # optimiser steps between phase-detector observations
    reward_scale: float = 100.0  # reward = scale x val-accuracy gain / compute (epoch units)
    evolve: EvolveConfig = field(default_factory=EvolveConfig)
    corruption_severities: list[int] = field(default_factory=lambda: list(
        CORRUPTION_SEVERITIES))
    corruption_limit: int = 1000  # test images per corruption cell (0: all)

    def validate(self) -> None:
        super().validate()
        check_choice("experiment", self.experiment, EXPERIMENT_CHOICES)
        for dataset, model in self.targets():
            check_dataset_and_model(dataset, model, {}, self.dataset_options)
        if not self.methods:
            raise ConfigError("methods is empty: nothing to run")
        for method in self.methods:
            check_choice("methods", method, METHODS)
        if self.policy.startswith("fixed:"):
            check_choice("policy fixed strategy", self.policy[6:], list(EPOCH_STRATEGIES))
        else:
            check_choice("policy", self.policy, [*POLICIES, "fixed:<strategy>"])
        check_choice("bandit", self.bandit, BANDITS)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        if self.augment is not None:
            check_choice("augment", self.augment, AUGMENTS)
        if not isinstance(self.budget, (int, float)) or self.budget <= 0 or (
                self.budget > 1 and self.budget != int(self.budget)):
            raise ConfigError(f"budget must be a fraction in (0, 1] or a whole row count > 1, "
                              f"got {self.budget!r}")
        for name in ("select_every", "val_size", "phase_every", "reward_scale"):
            check_positive(name, getattr(self, name))
        check_positive("train_size", self.train_size, allow_zero=True)
        unknown = set(self.selection) - set(SELECTION_OPTIONS)
        if unknown:
            raise ConfigError(f"selection has unknown option(s) {sorted(unknown)}: choose from "
                              f"{', '.join(SELECTION_OPTIONS)}")
        if "sampling" in self.selection:
            check_choice("selection.sampling", self.selection["sampling"], SAMPLINGS)
        check_positive("corruption_limit", self.corruption_limit, allow_zero=True)
        for severity in self.corruption_severities:
            check_choice("corruption_severities", severity, [1, 2, 3, 4, 5])
        if self.epochs is not None:
            check_positive("epochs", self.epochs)
        try:
            PhaseConfig(**self.phases).validate()
            self.recipe.validate()
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{e}") from None
        self.evolve.validate()

    def targets(self) -> list[tuple[str, str]]:
        """(dataset, model) of every training this config asks for, without repeats."""
        if self.dataset is not None:
            return [(self.dataset, self.model or "mlp")]
        out = []
        for name in self.experiment_names:
            pair = (EXPERIMENTS[name][0], self.model or EXPERIMENTS[name][1])
            if pair not in out:
                out.append(pair)
        return out

    @property
    def experiment_names(self) -> list[str]:
        if self.dataset is not None:
            return []
        return list(EXPERIMENTS) if self.experiment == "all" else [self.experiment]

    @property
    def evolves(self) -> bool:
        """Whether a method needs the evolved expressions (the policies' actions include
        them)."""
        return any(m in self.methods for m in ("policy", "policy_random", "discovered"))

    @property
    def corruptions(self) -> bool:
        return "corruptions" in self.experiment_names

    @property
    def recipe(self) -> FitConfig:
        changes: dict[str, Any] = {"progress": False}
        if self.epochs is not None:
            changes["epochs"] = self.epochs
        if self.augment is not None:
            changes["augment"] = self.augment
        if self.optimizer == "galore":
            changes["optimizer"] = "galore_sgd"
        return replace(self.fit, **changes)

    @property
    def budget_value(self) -> int | float:
        return float(self.budget) if self.budget <= 1 else int(self.budget)

    def phase_config(self) -> PhaseConfig:
        return PhaseConfig(**self.phases)
