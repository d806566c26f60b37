"""Settings of `thresher continual`: the one place its defaults live.

Defaults follow the TA-A-GEM reference setup (Lamers et al. 2023): an MLP with one hidden
layer of 200 units, plain SGD with learning rate 1e-3 on batches of 10, and a clustering memory
of Q = 10 clusters of P = 3 samples per label pool.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from thresher.data.sources import get_source
from thresher.data.streams import KINDS
from thresher.runs.config import ConfigError, check_choice, check_positive, check_range
from thresher.studies.common import StudyConfig, check_dataset_and_model
from thresher.studies.continual.learners import LEARNERS
from thresher.train.optimizers import OPTIMIZERS

REMOVALS = ("oldest", "mean", "random")
# `lite`: a quick check (seconds) in which the learners still learn and differ. It fills in only
# what is left unset: stream.tasks and the per-task caps (None), and fit.epochs / fit.lr while
# they hold the paper's values (1 and 1e-3: a few hundred steps at lr 1e-3 leave every learner
# near chance, so naive and A-GEM tie). To run capped streams at the paper's values, set the
# caps without --lite.
LITE_TASKS = 2
LITE_TRAIN_PER_TASK = 1000
LITE_TEST_PER_TASK = 500
LITE_EPOCHS = 5
LITE_LR = 0.1


@dataclass
class StreamConfig:
    """How the dataset is cut into tasks (see `thresher.data.streams`)."""

    kind: str = "permutation"  # permutation, rotation or class_split
    tasks: int | None = None  # None: 10 for permutation/rotation, 5 for class_split
    max_angle: float = 180.0  # rotation: angles spread evenly over [0, max_angle)
    scenario: Literal["domain", "class"] = "domain"  # class_split: within-task or global labels
    train_per_task: int | None = None  # cap on training images per task (None: its full share)
    test_per_task: int | None = None  # cap on test images per task
    share_test: bool = True  # each task tested on its own share (False: the whole test set)

    def validate(self) -> None:
        check_choice("stream.kind", self.kind, KINDS)
        if self.tasks is not None:
            check_positive("stream.tasks", self.tasks)
        check_range("stream.max_angle", self.max_angle, 0.0, 360.0)
        for name in ("train_per_task", "test_per_task"):
            if getattr(self, name) is not None:
                check_positive(f"stream.{name}", getattr(self, name))

    @property
    def num_tasks(self) -> int:
        return KINDS[self.kind].default_tasks if self.tasks is None else self.tasks


@dataclass
class MemoryConfig:
    """Episodic memories of the replay learners."""

    clusters: int = 10  # ta-agem: Q, clusters per pool
    cluster_size: int = 3  # ta-agem: P, samples per cluster
    pools: int | None = None  # ta-agem: at most this many label pools (None: one per label)
    removal: str = "oldest"  # ta-agem: which sample a full cluster drops: oldest, mean, random
    per_task: int = 250  # agem: samples kept per finished task (ring buffer)
    size: int = 300  # er: reservoir size
    reference_batch: int = 256  # agem/ta-agem: memory samples behind each reference gradient
    replay_batch: int = 10  # er: memory samples appended to each batch

    def validate(self) -> None:
        for name in ("clusters", "cluster_size", "per_task", "size", "reference_batch",
                     "replay_batch"):
            check_positive(f"memory.{name}", getattr(self, name))
        if self.pools is not None:
            check_positive("memory.pools", self.pools)
        check_choice("memory.removal", self.removal, REMOVALS)


@dataclass
class SchedulerConfig:
    """The TA-A-GEM learning-rate scheduler: decay on a loss plateau, reset on a loss spike
    (a task change the learner is not told about). Reads the loss every batch when on."""

    enabled: bool = False
    factor: float = 0.9999  # multiplier applied after a plateau
    min_lr: float = 1e-5
    patience: int = 5  # batches of plateau (or of spike) before acting
    threshold: float = 1e-4  # relative improvement that ends a plateau
    spike: float = 1.0  # loss above the best by this much counts as a spike

    def validate(self) -> None:
        check_range("scheduler.factor", self.factor, 0.0, 1.0)
        check_positive("scheduler.min_lr", self.min_lr)
        check_positive("scheduler.patience", self.patience)
        check_positive("scheduler.threshold", self.threshold, allow_zero=True)
        check_positive("scheduler.spike", self.spike)


@dataclass
class OnlineFitConfig:
    """How each learner trains: small batches, one optimiser step per batch.

    Not `FitConfig`: there is no epoch-level schedule, augmentation or early stopping here.
    """

    epochs: int = 1  # passes over each task before the next one starts
    batch_size: int = 10
    optimizer: str = "sgd"  # sgd, adam or adamw (see thresher.train.optimizers)
    lr: float = 1e-3
    momentum: float = 0.0
    weight_decay: float = 0.0
    testing_interval: int = 100  # batches between evaluations on every task (the curves)

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "lr", "testing_interval"):
            check_positive(f"fit.{name}", getattr(self, name))
        check_positive("fit.momentum", self.momentum, allow_zero=True)
        check_positive("fit.weight_decay", self.weight_decay, allow_zero=True)
        check_choice("fit.optimizer", self.optimizer, OPTIMIZERS.names())


@dataclass
class ContinualConfig(StudyConfig):
    dataset: str = "digits"
    model: str = "mlp"
    model_options: dict[str, Any] = field(default_factory=lambda: {"widths": [200]})
    threads: int = 1  # torch CPU threads: batches of 10 run fastest on one
    learners: list[str] = field(default_factory=lambda: ["naive", "er", "agem", "ta-agem"])
    lite: bool = False  # quick check: defaults of 2 tasks, 1000/500 images each, 5 epochs, lr 0.1
    stream: StreamConfig = field(default_factory=StreamConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    fit: OnlineFitConfig = field(default_factory=OnlineFitConfig)

    def validate(self) -> None:
        super().validate()
        if not self.learners:
            raise ConfigError(f"learners must name at least one of {', '.join(LEARNERS)}")
        for name in self.learners:
            check_choice("learners", name, LEARNERS.names())
        if len(set(self.learners)) != len(self.learners):
            raise ConfigError(f"learners lists a learner twice: {self.learners}")
        check_dataset_and_model(self.dataset, self.model, self.model_options,
                                self.dataset_options)
        classes = get_source(self.dataset).num_classes
        if self.stream.kind == "class_split" and classes and classes % self.num_tasks:
            raise ConfigError(f"class_split divides the {classes} classes of {self.dataset!r} "
                              f"evenly across tasks; {self.num_tasks} tasks do not divide them")

    @property
    def num_tasks(self) -> int:
        if self.lite and self.stream.tasks is None:
            return LITE_TASKS
        return self.stream.num_tasks

    @property
    def train_per_task(self) -> int | None:
        if self.lite and self.stream.train_per_task is None:
            return LITE_TRAIN_PER_TASK
        return self.stream.train_per_task

    @property
    def test_per_task(self) -> int | None:
        if self.lite and self.stream.test_per_task is None:
            return LITE_TEST_PER_TASK
        return self.stream.test_per_task

    @property
    def effective_fit(self) -> OnlineFitConfig:
        """The training settings a run uses: ``fit``, with lite's epochs and lr where those
        are still the paper's defaults."""
        if not self.lite:
            return self.fit
        fit, paper = self.fit, OnlineFitConfig()
        return replace(fit, epochs=LITE_EPOCHS if fit.epochs == paper.epochs else fit.epochs,
                       lr=LITE_LR if fit.lr == paper.lr else fit.lr)
