"""`thresher continual`: learning a stream of tasks without forgetting the earlier ones.

Compares plain fine-tuning (``naive``), training on everything at once (``joint``, the upper
bound), experience replay (``er``), A-GEM told where tasks end (``agem``) and task-agnostic
A-GEM with a clustering memory (``ta-agem``, Lamers et al. 2023) on permuted, rotated or
class-split image streams. Every learner sees the same stream for a given seed, so the table's
paired tests compare like with like.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from functools import partial

import torch

from thresher.data.dataset import ArrayDataset
from thresher.data.pipeline import Normalize
from thresher.data.streams import make_stream, num_outputs
from thresher.models import build
from thresher.runs.store import Run, RunStore
from thresher.runs.track import (
    Tracker,
    continual_final,
    continual_point,
    learner_run,
    run_tracker,
    track_summary,
)
from thresher.seeding import set_seed
from thresher.studies import Command, Flag, Study, register_study
from thresher.studies.common import for_seeds, load_data
from thresher.studies.continual.config import ContinualConfig
from thresher.studies.continual.learners import build_learner
from thresher.studies.continual.loop import train_stream
from thresher.studies.continual.report import (
    SCORES,
    add_compare_arguments,
    add_stats_arguments,
    compare_command,
    plot_curves,
    results_table,
    stats_command,
)
from thresher.train import choose_device

log = logging.getLogger("thresher.continual")


def _joined(tasks: list[ArrayDataset]) -> ArrayDataset:
    first = tasks[0]
    return ArrayDataset(torch.cat([t.images for t in tasks]), torch.cat([t.labels for t in tasks]),
                        list(first.classes), first.name)


def prepare(cfg: ContinualConfig, store: RunStore) -> tuple[torch.device, ArrayDataset,
                                                           ArrayDataset]:
    """The device and the data, found and read before the run is opened."""
    device = choose_device(cfg.device)
    return (device, *load_data(cfg.dataset, cfg.data_dir, device, cfg.dataset_options))


def run_seed(cfg: ContinualConfig, run: Run, train: ArrayDataset, test: ArrayDataset,
             normalize: Normalize, device: torch.device, tracker: Tracker,
             seed: int) -> list[dict]:
    """Every learner on one seed's stream, each learner a unit a resumed run reads back; the
    stream is cut only when some learner still needs it."""
    stream, num_tasks = cfg.stream, cfg.num_tasks
    outputs = num_outputs(stream.kind, train.num_classes, num_tasks, stream.scenario)
    tasks: list = []

    def learner_seed(name: str) -> dict:
        if not tasks:
            tasks.extend(make_stream(stream.kind, train, test, num_tasks, seed=seed,
                                     max_angle=stream.max_angle, scenario=stream.scenario,
                                     train_per_task=cfg.train_per_task,
                                     test_per_task=cfg.test_per_task,
                                     share_test=stream.share_test))
        set_seed(seed)
        model = build(cfg.model, outputs, train.in_shape, **cfg.model_options).to(device)
        learner = build_learner(name, model, cfg, outputs, train.in_shape, device, seed)
        phases = [_joined([t.train for t in tasks])] if name == "joint" else \
            [t.train for t in tasks]
        tracker.start(*learner_run(name, seed))
        result = train_stream(learner, phases, [t.test for t in tasks], cfg.fit, normalize,
                              seed, on_point=lambda p: tracker.log(continual_point(p), p["batch"]),
                              name=f"{name} seed {seed}")
        tracker.finish(continual_final(result))
        log.info("%s seed %d: average accuracy %.4f, forgetting %.4f", name, seed,
                 result["avg_acc"], result["forgetting"])
        return {"learner": name, "seed": seed, **result}

    return [run.unit(f"{name}/seed{seed}", partial(learner_seed, name)) for name in cfg.learners]


def run(cfg: ContinualConfig, run: Run,
        data: tuple[torch.device, ArrayDataset, ArrayDataset]) -> dict:
    device, train, test = data
    run.device = str(device)
    cfg = replace(cfg, fit=cfg.effective_fit)  # --lite's training settings, where it sets them
    normalize = Normalize.from_dataset(train)
    stream, num_tasks = cfg.stream, cfg.num_tasks
    outputs = num_outputs(stream.kind, train.num_classes, num_tasks, stream.scenario)
    tracker = run_tracker(cfg, run)
    per_run = [r for seed in for_seeds(cfg)
               for r in run_seed(cfg, run, train, test, normalize, device, tracker, seed)]
    run.save_json("per_run.json", per_run)
    learners = {name: {key: [r[key] for r in per_run if r["learner"] == name]
                       for key, _, _ in SCORES}
                for name in cfg.learners}
    run.save_results(results_table(learners))
    title = f"{cfg.dataset} {stream.kind}, {num_tasks} tasks, {cfg.runs} seeds"
    figure = plot_curves({name: [r["curve"] for r in per_run if r["learner"] == name]
                          for name in cfg.learners}, num_tasks, title)
    run.save_figure("curves.png", figure, dpi=120)
    metrics = {"dataset": cfg.dataset, "stream": stream.kind, "tasks": num_tasks,
               "outputs": outputs, "learners": learners, "runs": per_run}
    track_summary(tracker, run.dir, metrics)
    return metrics


register_study(Study(
    name="continual",
    help="continual learning on task streams: naive, joint, ER, A-GEM and task-agnostic A-GEM",
    config=ContinualConfig,
    run=run,
    prepare=prepare,
    flags=(
        Flag("--dataset", "dataset", "dataset name (see `thresher datasets`)"),
        Flag("--stream", "stream.kind", "permutation, rotation or class_split"),
        Flag("--tasks", "stream.tasks", "number of tasks (default 10, class_split 5)"),
        Flag("--learners", "learners", "learners to compare: naive joint er agem ta-agem",
             nargs="+"),
        Flag("--epochs", "fit.epochs", "passes over each task"),
        Flag("--batch-size", "fit.batch_size", "batch size"),
        Flag("--lr", "fit.lr", "learning rate"),
        Flag("--removal", "memory.removal", "ta-agem cluster removal: oldest, mean, random"),
        Flag("--runs", "runs", "number of seeds (mean ± 95%% CI over them)"),
        Flag("--lite", "lite", "quick check: 2 tasks on reduced data", switch=True),
    ),
    commands=(
        Command("compare", "continual runs side by side (mean and 95 percent CI over seeds)",
                add_compare_arguments, compare_command),
        Command("stats", "pool the last N continual runs in a folder (mean and 95 percent CI)",
                add_stats_arguments, stats_command),
    ),
))
