"""`thresher active`: clustering-based sensitivity sampling vs uncertainty and random sampling.

The protocol of Section 5.2.2 of Axiotis et al. (ICML 2024), per dataset, method and seed:

1. total labelled budget k (default: the whole training split);
2. k' = round(initial_fraction * k) points drawn uniformly at random and labelled;
3. model M trained on them (10 epochs);
4. M chooses the remaining k - k' points from the unlabelled pool with the method under test;
5. the same architecture retrained from scratch on all k points (10 epochs), with importance
   weights where the method produces them;
6. accuracy on the test split, wall time and inference counts recorded.

Within a seed every method starts from the same k' points and the same model M, so methods are
compared pairwise (paired t-test over seeds). ``rounds > 1`` splits step 4-5 into R acquisition
rounds and records a learning curve (accuracy vs labelled budget).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch

from thresher.data.dataset import ArrayDataset
from thresher.data.pipeline import Normalize
from thresher.models import build
from thresher.runs.config import ConfigError, check_choice, check_positive
from thresher.runs.plots import figure, mean_ci_band, mean_ci_bars
from thresher.runs.report import comparison_table
from thresher.runs.stats import paired_test, summarize
from thresher.runs.store import Run, RunStore
from thresher.runs.track import Tracker, active_tracked, run_tracker, track, track_summary
from thresher.seeding import make_generator, set_seed
from thresher.select import STRATEGIES, Context, Oracle
from thresher.select.sensitivity import LAMBDA_MODES
from thresher.studies import Flag, Study, register_study
from thresher.studies.common import StudyConfig, check_dataset_and_model, for_seeds, load_data
from thresher.train import FitConfig, choose_device, evaluate, fit

log = logging.getLogger("thresher.active")


def _fit_defaults() -> FitConfig:
    return FitConfig(epochs=10, batch_size=64, optimizer="adam", lr=1e-3, weight_decay=0.0,
                     schedule="constant", nesterov=False)


@dataclass
class ActiveConfig(StudyConfig):
    runs: int = 3  # seeds seed, seed+1, ...
    datasets: list[str] = field(default_factory=lambda: ["digits"])
    methods: list[str] = field(default_factory=lambda: ["coreset", "margin", "entropy",
                                                        "random"])
    budget: int = 0  # total labelled points k; 0 = the whole training split
    initial_fraction: float = 0.2  # k' = round(initial_fraction * k) random points
    initial_size: int = 0  # k' directly (overrides initial_fraction when > 0)
    rounds: int = 1  # acquisition rounds; > 1 records a learning curve
    model: str = "auto"  # auto: 128-unit MLP for 1-channel images, simple_cnn for colour
    model_options: dict[str, Any] = field(default_factory=dict)
    clusters: int = 0  # coreset clusters per round; 0 = 10% of the acquisition, >= classes
    lam: str = "cluster"  # Hoelder constant: "cluster", "global" (estimated) or a number
    z: float = 2.0  # exponent of the distance term in the sensitivity
    weighted: bool = True  # retrain with the importance weights methods produce
    fit: FitConfig = field(default_factory=_fit_defaults)

    def validate(self) -> None:
        super().validate()
        if not self.datasets or not self.methods:
            raise ConfigError("datasets and methods must each name at least one entry")
        for method in self.methods:
            check_choice("methods", method, list(STRATEGIES))
        check_positive("budget", self.budget, allow_zero=True)
        check_positive("initial_size", self.initial_size, allow_zero=True)
        if not 0.0 < self.initial_fraction < 1.0:
            raise ConfigError(f"initial_fraction must be strictly between 0 and 1 (0 leaves no "
                              f"random start, 1 nothing to acquire), got {self.initial_fraction}")
        check_positive("rounds", self.rounds)
        check_positive("clusters", self.clusters, allow_zero=True)
        check_positive("z", self.z)
        if self.lam not in LAMBDA_MODES:
            try:
                check_positive("lam", float(self.lam), allow_zero=True)
            except ValueError:
                raise ConfigError(f"lam must be one of {', '.join(LAMBDA_MODES)} or a number "
                                  f">= 0, got {self.lam!r}") from None
        if self.budget and self.initial_size > self.budget:
            raise ConfigError(f"initial_size {self.initial_size} (k') is larger than the "
                              f"budget {self.budget} (k)")
        for dataset in self.datasets:
            if self.model != "auto":
                check_dataset_and_model(dataset, self.model, self.model_options,
                                        self.dataset_options)
            else:
                check_dataset_and_model(dataset, "mlp", {}, self.dataset_options)


def default_model(in_shape: tuple[int, int, int]) -> tuple[str, dict[str, Any]]:
    """The paper's architectures: a 128-unit MLP for grey images, a 3-conv CNN for colour."""
    return ("mlp", {"widths": (128,)}) if in_shape[0] == 1 else ("simple_cnn", {})


def plan(n_train: int, cfg: ActiveConfig) -> tuple[int, int, list[int]]:
    """(k, k', acquisition size per round) for a training split of ``n_train``."""
    k = cfg.budget or n_train
    if k > n_train:
        raise ConfigError(f"budget {k} is larger than the training split ({n_train} examples)")
    k0 = cfg.initial_size or round(cfg.initial_fraction * k)
    if k0 > k:
        raise ConfigError(f"initial_size {k0} (k') is larger than the budget {k} (k)")
    if k0 < 1:
        raise ConfigError(f"the initial random set is empty (k' = {k0}); raise budget or "
                          f"initial_fraction")
    rest = k - k0
    if rest < cfg.rounds:
        raise ConfigError(f"{rest} points to acquire cannot be split into {cfg.rounds} rounds")
    sizes = [rest // cfg.rounds + (r < rest % cfg.rounds) for r in range(cfg.rounds)]
    return k, k0, sizes


def _hidden(data: ArrayDataset, indices: torch.Tensor) -> ArrayDataset:
    """The pool as a strategy sees it: images only, every label replaced by -1."""
    images = data.images[indices]
    return ArrayDataset(images, torch.full((len(indices),), -1, device=images.device),
                        data.classes, data.name)


def _train(cfg: ActiveConfig, arch: tuple[str, dict], data: ArrayDataset,
           weights: torch.Tensor | None, normalize: Normalize, device: torch.device,
           seed: int) -> torch.nn.Module:
    set_seed(seed)
    model = build(arch[0], data.num_classes, data.in_shape, **arch[1])
    fit(model, data, cfg.fit, weights=weights, normalize=normalize, device=device, seed=seed)
    return model


def run_method(cfg: ActiveConfig, method: str, arch: tuple[str, dict], train: ArrayDataset,
               test: ArrayDataset, normalize: Normalize, initial: torch.Tensor,
               model0: torch.nn.Module, sizes: list[int], device: torch.device,
               seed: int) -> dict:
    """Steps 4-6 for one method (R rounds); returns accuracy, curve and costs."""
    started = time.perf_counter()
    labelled = initial.clone()
    weights = torch.ones(len(initial), device=device)
    model, curve = model0, []
    inferences = loss_queries = 0
    selection_seconds = 0.0
    generator = make_generator(seed, "acquisition")  # the same for every method
    in_pool = torch.ones(len(train), dtype=torch.bool, device=device)
    in_pool[initial] = False
    for size in sizes:
        pool_idx = in_pool.nonzero().flatten()
        oracle = Oracle(train.labels[pool_idx])
        clusters = cfg.clusters or max(train.num_classes, round(0.1 * size))
        lam: float | str = cfg.lam if cfg.lam in LAMBDA_MODES else float(cfg.lam)
        ctx = Context(model, _hidden(train, pool_idx), train.subset(labelled), normalize,
                      oracle, generator, clusters, lam, cfg.z)
        t0 = time.perf_counter()
        acq = STRATEGIES[method](ctx, size)
        selection_seconds += time.perf_counter() - t0
        chosen = pool_idx[acq.indices.to(device)]
        if len(chosen.unique()) != len(chosen) or not in_pool[chosen].all():
            raise RuntimeError(f"{method} returned repeated or already-labelled indices")
        in_pool[chosen] = False
        labelled = torch.cat([labelled, chosen])
        new_w = torch.ones(len(chosen))
        if acq.weights is not None and cfg.weighted:
            # 1/(m p) sums to about the pool size; scale to mean 1 so each acquired point
            # counts like a labelled one on average and only the relative weights differ
            new_w = acq.weights / acq.weights.mean()
        weights = torch.cat([weights, new_w.to(device, torch.float32)])
        inferences += acq.inferences
        loss_queries += acq.loss_queries
        model = _train(cfg, arch, train.subset(labelled), weights, normalize, device, seed)
        acc = evaluate(model, test, normalize=normalize)["accuracy"]
        curve.append({"labelled": len(labelled), "accuracy": acc})
    return {"accuracy": curve[-1]["accuracy"], "curve": curve, "inferences": inferences,
            "loss_queries": loss_queries, "selection_seconds": selection_seconds,
            "seconds": time.perf_counter() - started,
            "max_weight": float(weights.max()) if len(weights) else 1.0}


@dataclass
class Prepared:
    """One dataset of the study, read and planned before the run is opened."""

    train: ArrayDataset
    test: ArrayDataset
    k: int
    k0: int
    sizes: list[int]
    arch: tuple[str, dict]


def prepare(cfg: ActiveConfig, store: RunStore) -> tuple[torch.device, dict[str, Prepared]]:
    """The device, and per dataset its splits and plan: a budget larger than the pool, an
    empty initial set or too many rounds is refused here, before any run exists."""
    device = choose_device(cfg.device)
    datasets = {}
    for dataset in cfg.datasets:
        train, test = load_data(dataset, cfg.data_dir, device, cfg.dataset_options)
        k, k0, sizes = plan(len(train), cfg)
        arch = default_model(train.in_shape) if cfg.model == "auto" else \
            (cfg.model, cfg.model_options)
        datasets[dataset] = Prepared(train, test, k, k0, sizes, arch)
    return device, datasets


def run_seed(cfg: ActiveConfig, run: Run, dataset: str, p: Prepared, normalize: Normalize,
             device: torch.device, tracker: Tracker, seed: int) -> dict[str, dict]:
    """Every method on one dataset and seed, each method a unit a resumed run reads back; the
    shared model M is trained only when some method still needs it."""
    initial = torch.randperm(len(p.train), generator=make_generator(seed, "initial"))[:p.k0]
    initial = initial.to(device)
    model0: list[torch.nn.Module] = []

    def method_seed(method: str) -> dict:
        if not model0:
            model0.append(_train(cfg, p.arch, p.train.subset(initial), None, normalize,
                                 device, seed))
        out = run_method(cfg, method, p.arch, p.train, p.test, normalize, initial, model0[0],
                         p.sizes, device, seed)
        log.info("%s seed %d %-16s acc %.4f  (%d inferences, %d loss queries, selection "
                 "%.1fs, total %.1fs)", dataset, seed, method, out["accuracy"],
                 out["inferences"], out["loss_queries"], out["selection_seconds"],
                 out["seconds"])
        track(tracker, active_tracked(dataset, method, seed, out["curve"], out))
        return {**out, "seed": seed}

    return {method: run.unit(f"{dataset}/seed{seed}/{method}", partial(method_seed, method))
            for method in cfg.methods}


def run(cfg: ActiveConfig, run: Run, prepared: tuple[torch.device, dict[str, Prepared]]
        ) -> dict:
    device, datasets = prepared
    run.device = str(device)
    tracker = run_tracker(cfg, run)
    results: dict[str, dict[str, list[dict]]] = {}
    for dataset, p in datasets.items():
        normalize = Normalize.from_dataset(p.train)  # pixel statistics need no labels
        log.info("%s: k=%d, k'=%d, rounds %s, model %s", dataset, p.k, p.k0, p.sizes,
                 p.arch[0])
        results[dataset] = {m: [] for m in cfg.methods}
        for seed in for_seeds(cfg):
            for method, out in run_seed(cfg, run, dataset, p, normalize, device, tracker,
                                        seed).items():
                results[dataset][method].append(out)
    metrics = report(cfg, run, results)
    track_summary(tracker, run.dir, metrics)
    return metrics


def report(cfg: ActiveConfig, run: Run, results: dict[str, dict[str, list[dict]]]) -> dict:
    """results.json, results.txt, the bar plot (and learning curves): one honest table."""
    baseline = "random" if "random" in cfg.methods and len(cfg.methods) > 1 else None
    tables, summary = [], {}
    for dataset, per_method in results.items():
        accs = {m: [r["accuracy"] for r in rs] for m, rs in per_method.items()}
        table = comparison_table(accs, metric_name="test accuracy (%)", scale=100,
                                 baseline=baseline if cfg.runs > 1 else None)
        costs = "\n".join(
            f"  {m:16s} inferences/run {rs[0]['inferences']:>7d}   loss queries/run "
            f"{rs[0]['loss_queries']:>5d}   selection "
            f"{sum(r['selection_seconds'] for r in rs) / len(rs):6.2f}s"
            f"   wall {sum(r['seconds'] for r in rs) / len(rs):6.1f}s"
            for m, rs in per_method.items())
        labelled = per_method[cfg.methods[0]][0]["curve"][-1]["labelled"]
        tables.append(f"{dataset} (budget {labelled}, {cfg.runs} runs)\n{table}\n{costs}")
        summary[dataset] = {
            m: {"accuracy": vars(summarize(a)), "per_seed": a,
                "inferences": per_method[m][0]["inferences"],
                "loss_queries": per_method[m][0]["loss_queries"],
                "selection_seconds": [r["selection_seconds"] for r in per_method[m]],
                "seconds": [r["seconds"] for r in per_method[m]],
                "curves": [r["curve"] for r in per_method[m]]}
            for m, a in accs.items()}
        if cfg.runs > 1 and "coreset" in accs:
            summary[dataset]["coreset_vs"] = {
                m: vars(paired_test(accs["coreset"], a)) for m, a in accs.items()
                if m != "coreset"}
    text = "\n\n".join(tables)
    run.save_json("results.json", {"config": {"budget": cfg.budget, "runs": cfg.runs,
                                              "rounds": cfg.rounds}, "results": summary})
    run.save_results(text)
    _plot(cfg, run, summary)
    return {"accuracy": {d: {m: s["accuracy"]["mean"] for m, s in per.items()
                             if m != "coreset_vs"} for d, per in summary.items()}}


def _plot(cfg: ActiveConfig, run: Run, summary: dict) -> None:
    """Accuracy per dataset and method as bars (and, with rounds, against the labelled budget),
    with the same t-based 95% CIs as the table."""
    datasets, methods = list(summary), cfg.methods
    fig, axes = figure(size=(1.8 + 1.6 * len(datasets) * len(methods) / 3, 4))
    ax = axes[0][0]
    mean_ci_bars(ax, datasets, {m: [summary[d][m]["per_seed"] for d in datasets]
                                for m in methods}, scale=100)
    ax.set_ylabel("test accuracy (%) — mean ± 95% CI")
    low = min(100 * summary[d][m]["accuracy"]["mean"] for d in datasets for m in methods)
    ax.set_ylim(max(0, low - 10), 100)
    ax.legend(fontsize=8)
    ax.set_title(f"active learning, {cfg.runs} runs")
    fig.tight_layout()
    run.save_figure("active_learning_results.png", fig, dpi=120)
    if cfg.rounds > 1:
        fig, axes = figure(1, len(datasets), size=(5 * len(datasets), 4))
        for ax, d in zip(axes[0], datasets):
            for m in methods:
                curves = summary[d][m]["curves"]
                mean_ci_band(ax, [p["labelled"] for p in curves[0]],
                             [[p["accuracy"] for p in c] for c in curves], scale=100,
                             marker="o", label=m)
            ax.set_xlabel("labelled examples")
            ax.set_ylabel("test accuracy (%) — mean ± 95% CI")
            ax.set_title(d)
            ax.legend(fontsize=8)
        fig.tight_layout()
        run.save_figure("learning_curve.png", fig, dpi=120)


register_study(Study(
    name="active",
    help="active learning: clustering-based sensitivity sampling vs margin, entropy, random",
    config=ActiveConfig,
    run=run,
    prepare=prepare,
    flags=(
        Flag("--datasets", "datasets", "datasets to run", nargs="+"),
        Flag("--methods", "methods", "acquisition methods to compare", nargs="+"),
        Flag("--budget", "budget", "total labelled budget k (0: whole training split)"),
        Flag("--initial-fraction", "initial_fraction",
             "fraction of k drawn at random first, in (0, 1)"),
        Flag("--rounds", "rounds", "acquisition rounds (> 1: learning curve)"),
        Flag("--runs", "runs", "number of seeds"),
        Flag("--clusters", "clusters", "coreset clusters (0: 10%% of the acquisition)"),
        Flag("--lambda", "lam", "Hoelder constant: cluster, global or a number"),
        Flag("--model", "model", "model (auto: the paper's MLP / CNN)"),
        Flag("--epochs", "fit.epochs", "epochs for each training"),
    ),
))
