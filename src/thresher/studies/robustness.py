"""`thresher robustness` and `thresher corrupt`: the common-corruption benchmark.

`robustness` evaluates the checkpoints of a `train` run (or one ``--checkpoint``) on every
corruption x severity of its test split, generated on the device from the clean split
(`thresher.data.corrupt`), and reports accuracy per cell, the mean, per-severity means and,
against a ``--reference`` run, the corruption error CE_c = sum_s E_s,c / sum_s E^ref_s,c, its
mean mCE and the relative mCE (errors minus clean error) of Hendrycks & Dietterich (2019).

`corrupt` writes a corrupted test set in the published CIFAR-10-C layout: one
``<corruption>.npy`` of shape (S*N, H, W, C) uint8, severities stacked in order, plus
``labels.npy``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from thresher.data import ArrayDataset, DataError, load
from thresher.data.corrupt import (
    BENCHMARK,
    CORRUPTIONS,
    PRESETS,
    SEVERITIES,
    check,
    check_resources,
    corrupt_dataset,
    get_preset,
    is_release,
)
from thresher.data.corrupted import (
    ORIGINS,
    check_release_folder,
    load_corrupted,
    release_folder,
)
from thresher.data.pipeline import Normalize
from thresher.runs.config import ConfigError, check_choice, check_positive
from thresher.runs.report import format_table
from thresher.runs.store import Run, RunStore, atomic_path
from thresher.runs.track import Tracker, corruption_tracked, run_tracker, track, track_summary
from thresher.studies import Command, Flag, Study, register_command, register_study
from thresher.studies.common import SEED_HELP, CommonConfig
from thresher.train import choose_device, evaluate
from thresher.train.checkpoint import load_checkpoint

log = logging.getLogger("thresher.robustness")


@dataclass
class RobustnessConfig(CommonConfig):
    """`CommonConfig` (its seed fixes the corruptions' random draws) plus what to evaluate."""

    run: str | None = None  # a train run (id, name or directory): evaluates its checkpoints
    checkpoint: str | None = None  # or one checkpoint file
    reference: str | None = None  # run (train or robustness) whose errors CE divides by
    dataset: str | None = None  # default: the dataset the checkpoint was trained on
    corruptions: list[str] = field(default_factory=lambda: list(BENCHMARK))
    severities: list[int] = field(default_factory=lambda: list(SEVERITIES))
    preset: str = "cifar"
    batch_size: int = 1000
    # evaluate on `limit` evenly spaced test images only (0: all), for quick looks; generated
    # cells are then drawn for the subset, so random corruptions differ from the full set's rows
    limit: int = 0
    # auto: the published files (e.g. <data>/CIFAR-10-C/) where present, for the cifar preset at
    # seed 0 (what they are), else generated; generated: always; official: the files or an error
    source: str = "auto"

    def validate(self) -> None:
        super().validate()
        check_positive("limit", self.limit, allow_zero=True)
        if (self.run is None) == (self.checkpoint is None):
            raise ConfigError("give exactly one of run (a train run) or checkpoint (a .pt file)")
        for name in self.corruptions:
            check_choice("corruptions", name, list(CORRUPTIONS))
        for severity in self.severities:
            check_choice("severities", severity, list(SEVERITIES))
        if not self.corruptions or not self.severities:
            raise ConfigError("corruptions and severities must not be empty")
        check_choice("preset", self.preset, list(PRESETS))
        check_choice("source", self.source, list(ORIGINS))
        if self.source == "official" and not is_release(self.preset, self.seed):
            raise ConfigError(f"source 'official' means the published files, made with preset "
                              f"'cifar' at seed 0; got preset {self.preset!r}, seed {self.seed}")
        if self.source != "official":  # not an hour in: frost's photos are checked up front
            try:
                check_resources(self.corruptions)
            except DataError as e:
                raise ConfigError(f"{e}; or leave frost out of --corruptions") from None


Model = tuple[torch.nn.Module, Normalize, dict]


@dataclass
class Prepared:
    """The checkpoints and data of one robustness run, found and checked before it opens."""

    device: torch.device
    groups: dict[str, list[Model]]  # "model", and "reference" for a train run as reference
    reference: dict | None  # a finished robustness run's saved grid
    dataset: str
    full: ArrayDataset  # the clean test split
    rows: torch.Tensor | None  # the evaluated rows with --limit


def prepare(cfg: RobustnessConfig, store: RunStore) -> Prepared:
    """Find the referenced runs, load their checkpoints and the test split, and check that
    they fit together — before any run record exists."""
    device = choose_device(cfg.device)
    reference_dir = store.get(cfg.reference).path if cfg.reference else None
    reference = _saved_reference(reference_dir, cfg) if reference_dir is not None else None
    folder = None
    if cfg.run:
        record = store.get(cfg.run)
        if record.status != "completed":
            log.warning("run %s is %s, not completed: evaluating the checkpoints it saved",
                        record.id, record.status)
        folder = record.path
    groups = {"model": _load_models(cfg.checkpoint, folder, device)}
    if reference_dir is not None and reference is None:  # a train run: evaluated alongside
        groups["reference"] = _load_models(None, reference_dir, device)
    trained_on = groups["model"][0][2]["dataset"]
    dataset = cfg.dataset or trained_on
    if dataset != trained_on:
        log.warning("the model was trained on %s and is evaluated on %s", trained_on, dataset)
    full = load(dataset, "test", data_dir=cfg.data_dir).to(device)
    for models in groups.values():
        for _, _, info in models:
            if tuple(info["in_shape"]) != tuple(full.in_shape) or \
                    info["num_classes"] != full.num_classes:
                raise DataError(
                    f"checkpoint {info['path']} takes {_shape(info['in_shape'])} images of "
                    f"{info['num_classes']} classes ({info['dataset']}); {dataset} has "
                    f"{_shape(full.in_shape)} images of {full.num_classes} classes")
    rows = None
    if 0 < cfg.limit < len(full):  # evenly spaced: class-sorted splits keep every class
        rows = torch.arange(cfg.limit) * len(full) // cfg.limit
    return Prepared(device, groups, reference, dataset, full, rows)


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def run(cfg: RobustnessConfig, run: Run, p: Prepared) -> dict:
    run.device = str(p.device)
    test = p.full if p.rows is None else p.full.subset(p.rows)

    def cell(name: str, severity: int) -> ArrayDataset:
        """One corrupted test split (of the evaluated rows), published or generated."""
        return load_corrupted(p.dataset, name, severity, "test", cfg.data_dir,
                              preset=cfg.preset, seed=cfg.seed, source=cfg.source, clean=p.full,
                              rows=p.rows)

    tracker = run_tracker(cfg, run)
    results, sources = _evaluate_all(p.groups, test, cell, cfg, run, tracker)
    result = results["model"]
    models = p.groups["model"]
    result.update(dataset=p.dataset, preset=cfg.preset, seed=cfg.seed, test_images=len(test),
                  source="+".join(sorted(sources)),
                  checkpoints=[m[2]["path"] for m in models])
    reference = p.reference
    if "reference" in p.groups:
        reference = {**results["reference"],
                     "checkpoints": [m[2]["path"] for m in p.groups["reference"]]}
    if reference is not None:
        result.update(corruption_errors(result, reference))
        result["reference"] = {k: reference[k] for k in ("clean_accuracy", "accuracy",
                                                          "checkpoints") if k in reference}
    run.save_json("robustness.json", result)
    run.save_figure("robustness.png", heatmap(result))
    table = robustness_table(result)
    run.save_results(table)
    metrics = {k: result[k] for k in ("clean_accuracy", "mean_accuracy", "severity_means",
                                      "corruption_means", "mce", "relative_mce") if k in result}
    track_summary(tracker, run.dir, metrics)
    return metrics


def _load_models(checkpoint: str | None, folder: Path | None,
                 device: torch.device) -> list[Model]:
    """The one checkpoint file, or every ``model-seed<N>.pt`` of a train run's folder."""
    if checkpoint is not None:
        paths = [Path(checkpoint)]
        if not paths[0].is_file():
            raise FileNotFoundError(f"checkpoint {checkpoint} not found")
    else:
        paths = sorted(folder.glob("model-seed*.pt"))
        if not paths:
            raise FileNotFoundError(f"{folder} has no model-seed<N>.pt checkpoints (nor "
                                    "robustness.json); robustness needs a train run")
    models = []
    for path in paths:
        try:
            model, norm, ckpt = load_checkpoint(path, device)
        except Exception as e:  # torch raises many types for a file that is not a checkpoint
            raise DataError(f"{path} is not a thresher checkpoint (a model-seed<N>.pt written "
                            f"by `thresher train`): {type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}") from None
        models.append((model, norm, {"dataset": ckpt["dataset"], "path": str(path),
                                     "in_shape": ckpt["in_shape"],
                                     "num_classes": ckpt["num_classes"]}))
    return models


def _evaluate_all(groups: dict[str, list[Model]], test: ArrayDataset,
                  cell: Callable[[str, int], ArrayDataset], cfg: RobustnessConfig,
                  run: Run, tracker: Tracker) -> tuple[dict[str, dict], set[str]]:
    """Per group of checkpoints (the model, maybe a reference), the accuracy (mean over the
    group) on the clean split and on every cell, each cell built once for all groups; and where
    the cells came from (published or generated). The clean split and each corruption's row are
    units: a resumed run reads them back."""
    def accuracy(models: list[Model], data: ArrayDataset) -> float:
        return float(np.mean([evaluate(m, data, normalize=n, batch_size=cfg.batch_size)
                              ["accuracy"] for m, n, _ in models]))

    def row(name: str) -> dict:
        started = time.perf_counter()
        out: dict[str, list[float]] = {g: [] for g in groups}
        sources = set()
        for severity in cfg.severities:
            data = cell(name, severity)
            sources.add(data.meta["source"])
            for g, models in groups.items():
                out[g].append(accuracy(models, data))
        log.info("%-18s %s  (%.0f s)", name, " ".join(f"{100 * a:5.1f}" for a in out["model"]),
                 time.perf_counter() - started)
        track(tracker, corruption_tracked(name, dict(zip(cfg.severities, out["model"]))))
        return {"accuracy": out, "sources": sorted(sources)}

    clean = run.unit("clean", lambda: {g: accuracy(models, test) for g, models in groups.items()})
    grids: dict[str, dict[str, dict[int, float]]] = {g: {} for g in groups}
    sources: set[str] = set()
    for name in cfg.corruptions:
        done = run.unit(f"corruption/{name}", partial(row, name))
        sources.update(done["sources"])
        for g in groups:
            grids[g][name] = dict(zip(cfg.severities, done["accuracy"][g]))
    return {g: summarise(clean[g], grids[g]) for g in groups}, sources


def summarise(clean: float, grid: dict[str, dict[int, float]]) -> dict:
    """Mean accuracy overall, per severity and per corruption of a corruption x severity grid."""
    severities = list(next(iter(grid.values())))
    return {
        "clean_accuracy": clean,
        "accuracy": grid,
        "mean_accuracy": float(np.mean([a for row in grid.values() for a in row.values()])),
        "severity_means": {s: float(np.mean([row[s] for row in grid.values()]))
                           for s in severities},
        "corruption_means": {c: float(np.mean(list(row.values()))) for c, row in grid.items()},
    }


def corruption_errors(result: dict, reference: dict) -> dict:
    """CE and relative CE per corruption against ``reference``, and their means (mCE)."""
    ce, rel = {}, {}
    for name, row in result["accuracy"].items():
        ref_row = reference["accuracy"].get(name)
        if ref_row is None or any(s not in ref_row for s in row):
            raise DataError(f"the reference has no accuracy for {name} at every severity "
                            f"{', '.join(map(str, row))}")
        err = sum(1 - row[s] for s in row)
        ref_err = sum(1 - ref_row[s] for s in row)
        ce[name] = err / ref_err if ref_err > 0 else float("nan")
        gap = err - len(row) * (1 - result["clean_accuracy"])
        ref_gap = ref_err - len(row) * (1 - reference["clean_accuracy"])
        rel[name] = gap / ref_gap if ref_gap > 0 else float("nan")
    return {"ce": ce, "mce": float(np.mean(list(ce.values()))),
            "relative_ce": rel, "relative_mce": float(np.mean(list(rel.values())))}


def _saved_reference(folder: Path, cfg: RobustnessConfig) -> dict | None:
    """A finished robustness run's grid (None for a train run), checked to cover every cell."""
    saved = folder / "robustness.json"
    if not saved.is_file():
        return None
    data = json.loads(saved.read_text())
    data["accuracy"] = {c: {int(s): a for s, a in row.items()}
                        for c, row in data["accuracy"].items()}
    missing = [f"{c} {s}" for c in cfg.corruptions for s in cfg.severities
               if s not in data["accuracy"].get(c, {})]
    if missing:
        raise DataError(f"reference {folder} has no accuracy for {', '.join(missing[:5])}"
                        f"{' ...' if len(missing) > 5 else ''}")
    return data


def robustness_table(result: dict) -> str:
    """Accuracy (%) per corruption and severity, plus CE columns when there is a reference."""
    severities = list(result["severity_means"])
    rows = []
    for name, row in result["accuracy"].items():
        cells = {"corruption": name, **{f"s{s}": 100 * row[s] for s in severities},
                 "mean": 100 * result["corruption_means"][name]}
        if "ce" in result:
            cells.update(CE=100 * result["ce"][name], relCE=100 * result["relative_ce"][name])
        rows.append(cells)
    mean = {"corruption": "mean", **{f"s{s}": 100 * result["severity_means"][s]
                                      for s in severities}, "mean": 100 * result["mean_accuracy"]}
    if "ce" in result:
        mean.update(CE=100 * result["mce"], relCE=100 * result["relative_mce"])
    rows.append(mean)
    head = f"accuracy (%) under corruption; clean accuracy {100 * result['clean_accuracy']:.1f}%"
    if "ce" in result:
        head += "; CE and relative CE in % of the reference's errors (mCE on the mean row)"
    return head + "\n" + format_table(rows, float_format=".1f")


def heatmap(result: dict):
    """A corruption x severity heat map of accuracy (%), each cell labelled."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    names = list(result["accuracy"])
    severities = list(result["severity_means"])
    grid = np.array([[100 * result["accuracy"][n][s] for s in severities] for n in names])
    fig, ax = plt.subplots(figsize=(1.2 * len(severities) + 3, 0.4 * len(names) + 1.5))
    image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(severities)), [str(s) for s in severities])
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("severity")
    for i, j in np.ndindex(grid.shape):
        ax.text(j, i, f"{grid[i, j]:.0f}", ha="center", va="center",
                color="white" if grid[i, j] < 60 else "black", fontsize=8)
    ax.set_title(f"{result['dataset']} accuracy (%) under corruption; clean "
                 f"{100 * result['clean_accuracy']:.1f}%")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return fig


register_study(Study(
    name="robustness",
    help="accuracy of a trained model under the 15 common corruptions x 5 severities",
    config=RobustnessConfig,
    run=run,
    prepare=prepare,
    flags=(
        Flag("--run", "run", "train run to evaluate (id, name or directory)"),
        Flag("--checkpoint", "checkpoint", "or one checkpoint file (model-seed<N>.pt)"),
        Flag("--reference", "reference", "run whose errors CE and mCE are relative to"),
        Flag("--dataset", "dataset", "test split to corrupt (default: the training dataset)"),
        Flag("--corruptions", "corruptions", "corruption names", nargs="+"),
        Flag("--severities", "severities", "severities 1-5", nargs="+"),
        Flag("--preset", "preset", "corruption constants: cifar or imagenet"),
        Flag("--source", "source", "auto, generated or official (the published .npy files)"),
    ),
))


# --- thresher corrupt --------------------------------------------------------------------------

def _corrupt_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="cifar10", help="dataset to corrupt (default cifar10)")
    p.add_argument("--out", required=True, help="output folder (written whole at the end)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --out (its files go once the new set is complete)")
    p.add_argument("--split", default="test", help="split to corrupt (default test)")
    p.add_argument("--corruptions", nargs="+", default=list(BENCHMARK), metavar="NAME",
                   help=f"default: the 15 benchmark corruptions; choices: {', '.join(CORRUPTIONS)}")
    p.add_argument("--severities", nargs="+", type=int, default=list(SEVERITIES),
                   metavar="S", help="severities, stacked in this order (default 1 2 3 4 5)")
    p.add_argument("--preset", default="cifar", help=f"one of {', '.join(PRESETS)}")
    p.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    p.add_argument("--data-dir", help="data folder (default: $THRESHER_DATA, else ./data)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")


def _corrupt(args: argparse.Namespace) -> int:
    for name in args.corruptions:  # every name checked before any work
        for severity in args.severities:
            check(name, severity)
    get_preset(args.preset)
    check_resources(args.corruptions)

    out = check_release_folder(args.out, args.overwrite)  # a bad --out fails before the work
    data = load(args.dataset, args.split, data_dir=args.data_dir).to(choose_device(args.device))
    started = time.perf_counter()
    with release_folder(out, args.overwrite) as stage:  # a whole new set, or the old one
        bar = tqdm(total=len(args.corruptions) * len(args.severities), unit="set",
                   desc=f"corrupting {data.name}/{args.split}")
        for name in args.corruptions:
            parts = []
            for severity in args.severities:
                bar.set_postfix_str(f"{name} {severity}")
                images = corrupt_dataset(data, name, severity, args.preset, args.seed).images
                parts.append(images.permute(0, 2, 3, 1).cpu().numpy())
                bar.update()
            _save_npy(stage / f"{name}.npy", np.concatenate(parts))
        bar.close()
        labels = data.labels.cpu().numpy()
        dtype = np.uint8 if data.num_classes <= 256 else np.int64
        _save_npy(stage / "labels.npy", np.tile(labels, len(args.severities)).astype(dtype))
    print(f"wrote {len(args.corruptions)} corruptions x {len(args.severities)} severities of "
          f"{len(data)} {data.name} {args.split} images to {out} in "
          f"{time.perf_counter() - started:.0f} s")
    return 0


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


register_command(Command("corrupt", "write a corrupted test set in the CIFAR-10-C layout "
                         "(<corruption>.npy, labels.npy)", _corrupt_arguments, _corrupt))
