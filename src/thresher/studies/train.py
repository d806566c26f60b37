"""`thresher train`: plain supervised training, the baseline every study compares against.

Trains one model per seed on the full training split and reports test accuracy as mean ± 95%
CI over seeds, with one checkpoint per seed (what `thresher robustness --run` evaluates).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from thresher.data.dataset import ArrayDataset
from thresher.data.pipeline import Normalize
from thresher.models import build
from thresher.runs.config import ConfigError, check_positive
from thresher.runs.report import comparison_table
from thresher.runs.store import Run, RunStore
from thresher.runs.track import (
    Tracker,
    epoch_metrics,
    run_tracker,
    seed_run,
    track_summary,
    train_final,
)
from thresher.seeding import make_generator, set_seed
from thresher.studies import Flag, Study, register_study
from thresher.studies.common import StudyConfig, check_dataset_and_model, for_seeds, load_data
from thresher.train import FitConfig, choose_device, evaluate, fit
from thresher.train.checkpoint import checkpoint

log = logging.getLogger("thresher.train")


def _log_epoch(row: dict) -> None:
    log.info("epoch %d %s", row["epoch"],
             " ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"))


@dataclass
class TrainConfig(StudyConfig):
    dataset: str = "digits"
    model: str = "mlp"
    model_options: dict[str, Any] = field(default_factory=dict)
    train_size: int = 0  # > 0: a stratified subset of the training split, drawn from ``seed``
    # (one subset for all of a run's seeds, so optimisers or models compare on the same data)
    fit: FitConfig = field(default_factory=FitConfig)

    def validate(self) -> None:
        super().validate()
        check_positive("train_size", self.train_size, allow_zero=True)
        check_dataset_and_model(self.dataset, self.model, self.model_options,
                                self.dataset_options)


def prepare(cfg: TrainConfig, store: RunStore) -> tuple[torch.device, ArrayDataset,
                                                        ArrayDataset]:
    """The device and the data, found and read before the run is opened."""
    device = choose_device(cfg.device)
    train, test = load_data(cfg.dataset, cfg.data_dir, device, cfg.dataset_options)
    if cfg.train_size:
        if cfg.train_size > len(train):
            raise ConfigError(f"train_size {cfg.train_size} exceeds the {len(train)} training "
                              f"examples of {cfg.dataset!r}")
        train = train.stratified(cfg.train_size, make_generator(cfg.seed, "train_size"))
    return device, train, test


def train_seed(cfg: TrainConfig, run: Run, train: ArrayDataset, test: ArrayDataset,
               normalize: Normalize, device: torch.device, tracker: Tracker, seed: int) -> dict:
    """One seed: train, evaluate, save the checkpoint; the unit a resumed run skips."""
    set_seed(seed)
    model = build(cfg.model, train.num_classes, train.in_shape, **cfg.model_options)
    tracker.start(*seed_run(seed))

    def on_epoch(row: dict) -> None:
        _log_epoch(row)
        tracker.log(epoch_metrics(row), row["epoch"])

    started = time.perf_counter()
    result = fit(model, train, cfg.fit, val=test, normalize=normalize, device=device,
                 seed=seed, on_epoch=on_epoch)
    seconds = time.perf_counter() - started
    scores = evaluate(model, test, normalize=normalize)
    run.save_torch(f"model-seed{seed}.pt",
                   checkpoint(model, cfg.model, cfg.model_options, train, normalize))
    out = {"seed": seed, "test_acc": scores["accuracy"], "test_loss": scores["loss"],
           "train_seconds": seconds,
           "images_per_s": len(train) * len(result.history) / result.seconds,
           "optimizer": result.optimizer, "history": result.history}
    tracker.finish(train_final(out))
    return out


def run(cfg: TrainConfig, run: Run, data: tuple[torch.device, ArrayDataset,
                                                ArrayDataset]) -> dict:
    device, train, test = data
    run.device = str(device)
    normalize = Normalize.from_dataset(train)
    tracker = run_tracker(cfg, run)
    per_seed = [run.unit(f"seed{seed}", lambda seed=seed: train_seed(
                    cfg, run, train, test, normalize, device, tracker, seed))
                for seed in for_seeds(cfg)]
    run.save_json("per_seed.json", per_seed)
    table = comparison_table({f"{cfg.model} on {cfg.dataset}": [r["test_acc"] for r in per_seed]},
                             metric_name="test accuracy (%)", scale=100)
    run.save_results(table)
    accs = [r["test_acc"] for r in per_seed]
    metrics = {
        "test_acc_per_seed": accs,
        **{key: _mean([r[key] for r in per_seed])
           for key in ("test_acc", "test_loss", "train_seconds", "images_per_s")},
        "train_size": len(train), "test_size": len(test),
    }
    optimizer = per_seed[0].get("optimizer")  # one model and optimiser for every seed; a seed
    if optimizer:  # finished before optimiser states were recorded has none
        metrics.update(optimizer_state_bytes=optimizer["state_bytes"],
                       optimizer_state_vs_adamw=optimizer["vs_adamw"])
    track_summary(tracker, run.dir, metrics)
    return metrics


def _mean(values: list[float | None]) -> float:
    """The mean; NaN when a value is (a diverged seed under ``fit.nonfinite=warn`` reads back
    its NaN loss as None)."""
    return math.nan if None in values else sum(values) / len(values)


register_study(Study(
    name="train",
    help="plain supervised training: the baseline every study compares against",
    config=TrainConfig,
    run=run,
    prepare=prepare,
    flags=(
        Flag("--dataset", "dataset", "dataset name (see `thresher datasets`)"),
        Flag("--model", "model", "model name (see `thresher models`)"),
        Flag("--epochs", "fit.epochs", "training epochs"),
        Flag("--batch-size", "fit.batch_size", "batch size"),
        Flag("--lr", "fit.lr", "peak learning rate"),
        Flag("--optimizer", "fit.optimizer", "sgd, adam, adamw, galore_adamw or galore_sgd "
             "(options via --set fit.optimizer_options=...)"),
        Flag("--train-size", "train_size", "train on a stratified subset of this many "
             "examples (0: all)"),
        Flag("--augment", "fit.augment", "augmentation policy: none, standard, strong, cutout"),
        Flag("--runs", "runs", "number of seeds (mean ± 95%% CI over them)"),
    ),
))
