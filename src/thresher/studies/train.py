"""`thresher train`: plain supervised training, the baseline every study compares against.

Trains one model per seed on the full training split and reports test accuracy as mean ± 95%
CI over seeds, with one checkpoint per seed (what `thresher robustness --run` evaluates).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from thresher.data.pipeline import Normalize
from thresher.models import build
from thresher.runs.report import comparison_table
from thresher.runs.store import Run
from thresher.seeding import set_seed
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
    fit: FitConfig = field(default_factory=FitConfig)

    def validate(self) -> None:
        super().validate()
        check_dataset_and_model(self.dataset, self.model, self.model_options,
                                self.dataset_options)


def run(cfg: TrainConfig, run: Run) -> dict:
    device = choose_device(cfg.device)
    run.device = str(device)
    train, test = load_data(cfg.dataset, cfg.data_dir, device, cfg.dataset_options)
    normalize = Normalize.from_dataset(train)
    per_seed = []
    for seed in for_seeds(cfg):
        set_seed(seed)
        model = build(cfg.model, train.num_classes, train.in_shape, **cfg.model_options)
        started = time.perf_counter()
        result = fit(model, train, cfg.fit, val=test, normalize=normalize, device=device,
                     seed=seed, on_epoch=_log_epoch)
        seconds = time.perf_counter() - started
        scores = evaluate(model, test, normalize=normalize)
        per_seed.append({"seed": seed, "test_acc": scores["accuracy"],
                         "test_loss": scores["loss"], "train_seconds": seconds,
                         "images_per_s": len(train) * len(result.history) / result.seconds,
                         "history": result.history})
        run.save_torch(f"model-seed{seed}.pt",
                       checkpoint(model, cfg.model, cfg.model_options, train, normalize))
    run.save_json("per_seed.json", per_seed)
    table = comparison_table({f"{cfg.model} on {cfg.dataset}": [r["test_acc"] for r in per_seed]},
                             metric_name="test accuracy (%)", scale=100)
    run.save_results(table)
    accs = [r["test_acc"] for r in per_seed]
    return {
        "test_acc": sum(accs) / len(accs),
        "test_acc_per_seed": accs,
        "test_loss": sum(r["test_loss"] for r in per_seed) / len(per_seed),
        "train_seconds": sum(r["train_seconds"] for r in per_seed) / len(per_seed),
        "images_per_s": sum(r["images_per_s"] for r in per_seed) / len(per_seed),
        "train_size": len(train), "test_size": len(test),
    }


register_study(Study(
    name="train",
    help="plain supervised training: the baseline every study compares against",
    config=TrainConfig,
    run=run,
    flags=(
        Flag("--dataset", "dataset", "dataset name (see `thresher datasets`)"),
        Flag("--model", "model", "model name (see `thresher models`)"),
        Flag("--epochs", "fit.epochs", "training epochs"),
        Flag("--batch-size", "fit.batch_size", "batch size"),
        Flag("--lr", "fit.lr", "peak learning rate"),
        Flag("--optimizer", "fit.optimizer", "sgd, adam or adamw"),
        Flag("--augment", "fit.augment", "augmentation policy: none, standard, strong, cutout"),
        Flag("--runs", "runs", "number of seeds (mean ± 95%% CI over them)"),
    ),
))
