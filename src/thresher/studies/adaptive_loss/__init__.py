"""`thresher adaptive-loss`: loss weights adapted while training, against the controls that
usually erase such gains.

Per seed: a stratified training subset and a disjoint validation split are drawn from the
training set (the test set is only ever scored at the end). Every method trains the same
model for the same epochs through the one `fit` loop, its loss built by the executor
(`thresher.train.losses`): the base term plus auxiliary terms under weights a policy
(`policies`) sets as training goes.

Modes: ``baseline`` (the base loss alone; the VAE's plain ELBO, beta 1), ``monitor_only``
(a DQN moves the weights every few steps), ``controller_only`` (the meta-controller sets them
once an epoch), ``full`` (both). Controls: ``tuned_cosine`` (the baseline at the learning
rate chosen on validation from ``lr_grid``, fully decayed cosine), ``label_smoothing``,
``fixed_grid`` (fixed auxiliary weights, or a fixed beta, chosen on validation),
``random_schedule`` (the monitor's action set and step taken uniformly at random: the
learning-rate-jitter control and the DQN's random policy), ``uncertainty`` (Kendall et al.
2018) and, for the VAE, ``linear_anneal``, ``cyclical`` and ``pi_control`` (ControlVAE).
Tuning runs on the first seed's validation split. Each method x seed is a unit kept as it
finishes; the meta-controller's and the monitor's learning is saved to ``--meta-state`` at
the end, for the next run to start from.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from thresher.data.dataset import ArrayDataset
from thresher.data.pipeline import BatchLoader, Normalize
from thresher.models import build
from thresher.models.vae import vae_metrics
from thresher.rl.compare import RandomAgent
from thresher.rl.dqn import DQN, DQNConfig
from thresher.runs.config import ConfigError
from thresher.runs.files import atomic_path
from thresher.runs.store import Run, RunStore
from thresher.runs.track import Tracked, Tracker, run_tracker, track, track_summary
from thresher.seeding import derive_seed, make_generator, set_seed
from thresher.studies import Command, Flag, Study, register_study
from thresher.studies.adaptive_loss.config import AUX, BASE, AdaptiveLossConfig
from thresher.studies.adaptive_loss.figures import weight_figure
from thresher.studies.adaptive_loss.policies import (
    Controlled,
    MetaController,
    MetaState,
    Monitor,
    PIControl,
    Policy,
    Scheduled,
    cyclical,
    linear_anneal,
)
from thresher.studies.adaptive_loss.report import tables
from thresher.studies.common import check_holdout, for_seeds, holdout, load_data
from thresher.train import FitConfig, choose_device, evaluate, fit
from thresher.train.engine import steps_per_epoch, uses_channels_last
from thresher.train.losses import (
    ExecutorConfig,
    LossExecutor,
    UncertaintyWeights,
    WithLossParameters,
)

log = logging.getLogger("thresher.adaptive_loss")
VAE_BETA_MAX = 2.0  # the VAE's beta lies in [0, 2]; its base (reconstruction) keeps weight 1


def split(train: ArrayDataset, train_size: int, val_size: int, seed: int
          ) -> tuple[ArrayDataset, ArrayDataset]:
    """This seed's training subset and validation split (`thresher.studies.common.holdout`)."""
    return holdout(train, train_size, val_size, make_generator(seed, "adaptive", "split"))


def prepare(cfg: AdaptiveLossConfig, store: RunStore) -> dict[str, Any]:
    """Device, data, sizes and the meta-state file, all checked before the run is opened."""
    device = choose_device(cfg.device)
    train, test = load_data(cfg.dataset, cfg.data_dir, device, cfg.dataset_options)
    check_holdout(train, cfg.dataset, cfg.train_size, cfg.val_size, "adaptive-loss")
    try:
        build(cfg.model_name, train.num_classes, train.in_shape)
    except ValueError as e:
        raise ConfigError(f"model {cfg.model_name!r}: {e}") from None
    meta = load_meta_state(cfg) if cfg.meta_state and Path(cfg.meta_state).exists() else None
    return {"device": device, "train": train, "test": test, "meta": meta}


def load_meta_state(cfg: AdaptiveLossConfig) -> dict[str, Any]:
    """A saved meta-state, checked against this task's weights and monitor."""
    path = Path(cfg.meta_state)
    try:
        meta = torch.load(path, map_location="cpu", weights_only=False)
        saved_k = len(MetaState(**meta["controller"]).prior) if "controller" in meta else \
            (meta["dqn"]["q"][next(reversed(meta["dqn"]["q"]))].shape[0] - 1) // 2
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise ConfigError(f"meta_state {str(path)!r} is not a meta-state file: {e}") from None
    k = len(AUX[cfg.task])
    if meta.get("task") != cfg.task or saved_k != k:
        raise ConfigError(f"meta_state {str(path)!r} was saved by task={meta.get('task')!r} "
                          f"with {saved_k} weights; this run is task={cfg.task!r} with {k}")
    return meta


def save_meta_state(path: Path, task: str, units: list[dict[str, Any]], run: Run) -> dict:
    """Merge what the seeds learned and write it atomically: the controller's prior and log
    steps averaged over seeds (they all started from the same state), the monitor's
    Q-networks averaged likewise, the counters, signs and replay from the first seed."""
    controllers = [u["policy"]["controller"] for u in units if "controller" in u["policy"]]
    agents = [torch.load(run.path(u["agent_file"]), weights_only=False)
              for u in units if u.get("agent_file")]
    out: dict[str, Any] = {"task": task}
    if controllers:
        first = controllers[0]
        k = range(len(first["prior"]))
        out["controller"] = {
            "prior": [sum(c["prior"][i] for c in controllers) / len(controllers) for i in k],
            "step": [math.exp(sum(math.log(c["step"][i]) for c in controllers)
                              / len(controllers)) for i in k],
            "last_sign": first["last_sign"], "pairs": first["pairs"], "runs": first["runs"],
            "history": []}
    if agents:
        merged = agents[0]
        for net in ("q", "target"):
            merged[net] = {k: sum(a[net][k] for a in agents) / len(agents)
                           for k in merged[net]}
        out["dqn"] = merged
    with atomic_path(path) as tmp:
        torch.save(out, tmp)
    return out


class _Terms(nn.Module):
    """The VAE as `fit` trains it: the output is its per-example (reconstruction, KL)."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vae.terms(x)


def _unit_normalize(channels: int) -> Normalize:
    """Pixels in [0, 1] as they are: the VAE's input is its Bernoulli target."""
    return Normalize((0.0,) * channels, (1.0,) * channels)


def _dqn(cfg: AdaptiveLossConfig, k: int, decisions: int, seed: int, device: torch.device,
         meta: dict | None) -> DQN:
    m = cfg.monitor
    agent = DQN(Monitor.state_dim(k), 1 + 2 * k, DQNConfig(
        lr=m.lr, gamma=m.gamma, buffer_size=10_000, batch_size=m.batch_size,
        learning_starts=m.learning_starts, train_frequency=1, gradient_steps=m.gradient_steps,
        target_update_interval=m.target_update_interval,
        exploration_fraction=m.exploration_fraction, epsilon_end=m.epsilon_end,
        total_steps=max(decisions, 1), widths=(64, 64)),
        seed=derive_seed(seed, "adaptive", "dqn"), device=device)
    if meta is not None and "dqn" in meta:
        agent.load_state_dict(meta["dqn"])
    return agent


def _meta_state(cfg: AdaptiveLossConfig, meta: dict | None, prior: list[float]) -> MetaState:
    if meta is not None and "controller" in meta:
        return MetaState(**meta["controller"])
    return MetaState.fresh(prior, cfg.controller.step)


def train_method(cfg: AdaptiveLossConfig, method: str, choice: dict[str, float],
                 data: dict[str, Any], train: ArrayDataset, val: ArrayDataset, seed: int,
                 run: Run | None = None, tracker: Tracker | None = None) -> dict[str, Any]:
    """Train one method on one seed's split; returns its scores, history and policy log."""
    device, test, meta = data["device"], data["test"], data["meta"]
    vae = cfg.task == "vae"
    k = len(AUX[cfg.task])
    recipe: FitConfig = replace(cfg.recipe, progress=False)
    if method == "tuned_cosine":
        recipe = replace(recipe, lr=recipe.lr * choice.get("lr_factor", 1.0), schedule="cosine")
    set_seed(seed)
    model = build(cfg.model_name, train.num_classes, train.in_shape).to(device)
    normalize = _unit_normalize(train.in_shape[0]) if vae else Normalize.from_dataset(train)
    ex_cfg = ExecutorConfig(0.0, VAE_BETA_MAX, False, cfg.executor.max_grad_norm) if vae \
        else cfg.executor
    prior = [1.0] if vae else [cfg.prior_weight] * k
    aux: tuple[str, ...] = AUX[cfg.task]
    learned = None
    if method in ("baseline", "tuned_cosine"):
        aux, weights = (("kl",), [1.0]) if vae else ((), [])
    elif method == "label_smoothing":
        aux, weights = ("uniform",), [cfg.smoothing / (1.0 - cfg.smoothing)]
    elif method == "fixed_grid":
        weights = [choice["beta"]] if vae else [choice["weight"]] * k
    elif method == "uncertainty":
        weights, learned = prior, UncertaintyWeights(1 + k, ex_cfg.w_min, ex_cfg.w_max).to(device)
    else:
        weights = prior
    trained: nn.Module = _Terms(model) if vae else model
    if learned is not None:
        trained = WithLossParameters(trained, learned)
    view = None
    if "consistency" in aux:
        loader = BatchLoader(train.to(device), recipe.batch_size, augment=recipe.augment,
                             normalize=normalize, seed=derive_seed(seed, "adaptive", "view"),
                             channels_last=uses_channels_last(model, device,
                                                              recipe.channels_last))
        view = lambda batch: loader.batch(batch.index).x  # noqa: E731
    ex = LossExecutor(BASE[cfg.task], aux, ex_cfg, weights, view=view, model=model,
                      learned=learned, device=device)

    probe_rows = val.subset(torch.arange(cfg.monitor.val_examples, device=val.device))

    def val_loss(data_: ArrayDataset) -> float:
        """The unweighted validation loss (the same noise draws every call for the VAE)."""
        if vae:
            return vae_metrics(model, data_.images, device=device, generator=make_generator(
                seed, "adaptive", "probe"))["neg_elbo_nats"]
        return evaluate(model, data_, normalize=normalize, device=device)["loss"]

    per_epoch = steps_per_epoch(len(train), recipe.batch_size)
    total = per_epoch * recipe.epochs
    decisions = (total - 1) // cfg.monitor.interval  # at steps interval, 2 interval, ... < total
    policy = _policy(cfg, method, weights, prior, k, decisions, seed, device, meta,
                     lambda: val_loss(probe_rows))
    policy.begin(ex, total, per_epoch)
    controller = getattr(policy, "controller", None)
    if controller is not None:
        controller.prev_val = val_loss(val)
    points: list[tuple[int, dict]] = []

    def on_epoch(row: dict) -> None:
        if vae:
            scores = vae_metrics(model, val.images, device=device,
                                 generator=make_generator(seed, "adaptive", "val"))
            row.update(val_loss=scores["neg_elbo_nats"], val_recon=scores["recon_nats"],
                       val_kl=scores["kl_nats"])
        eff = ex.effective()
        row.update({f"w_{name}": w for name, w in zip(ex.names, eff)})
        policy.epoch_end(row)
        points.append((row["epoch"] * per_epoch, {k_: v for k_, v in row.items()
                                                  if k_ != "epoch"}))

    def before_epoch(epoch: int) -> None:
        policy.epoch_start(epoch)

    started = time.perf_counter()
    result = fit(trained, train, recipe, val=None if vae else val, normalize=normalize,
                 device=device, seed=seed, loss_fn=ex.loss_fn, after_backward=ex.guard,
                 after_step=policy.step, before_epoch=before_epoch, on_epoch=on_epoch,
                 accuracy=not vae)
    seconds = time.perf_counter() - started
    summary = policy.finish()
    if vae:
        scores = vae_metrics(model, test.images, device=device,
                             generator=make_generator(seed, "adaptive", "test"))
        final = {"test_neg_elbo": scores["neg_elbo_nats"], "test_recon": scores["recon_nats"],
                 "test_kl": scores["kl_nats"], "test_bits_per_dim": scores["bits_per_dim"],
                 "val_metric": result.history[-1]["val_loss"]}
    else:
        scores = evaluate(model, test, normalize=normalize, device=device)
        final = {"test_acc": scores["accuracy"], "test_loss": scores["loss"],
                 "val_metric": result.history[-1]["val_acc"]}
    out = {"method": method, "seed": seed, **final, "seconds": seconds,
           "skipped_steps": ex.skipped, "steps": ex.steps, "decisions": decisions,
           "terms": list(ex.names), "choice": choice, "history": result.history,
           "weights_log": policy.log, "policy": summary}
    if run is not None and isinstance(policy, Monitor) and isinstance(policy.agent, DQN):
        out["agent_file"] = f"agent-{method}-seed{seed}.pt"
        run.save_torch(out["agent_file"], policy.agent.state_dict())
    if run is not None:
        run.save_text(f"epochs-{method}-seed{seed}.csv", epochs_csv(result.history))
    if tracker is not None:
        for d in summary.get("diagnostics", []):
            points.append((d["step"], {f"agent_{k_}": v for k_, v in d.items() if k_ != "step"}))
        for entry in policy.log:
            points.append((entry["step"], {f"weight_{ex.names[1 + i]}": w
                                           for i, w in enumerate(entry["weights"])}
                           | ({"reward": entry["reward"]} if "reward" in entry else {})))
        track(tracker, Tracked(f"{method}-seed{seed}", {"method": method, "run_seed": seed},
                               sorted(points, key=lambda p: p[0]),
                               {k_: v for k_, v in final.items()}))
    return out


def _policy(cfg: AdaptiveLossConfig, method: str, weights: list[float], prior: list[float],
            k: int, decisions: int, seed: int, device: torch.device, meta: dict | None,
            probe: Callable[[], float]) -> Policy:
    m = cfg.monitor
    if method in ("monitor_only", "full", "random_schedule"):
        agent = RandomAgent(1 + 2 * k, seed=derive_seed(seed, "adaptive", "random")) \
            if method == "random_schedule" else _dqn(cfg, k, decisions, seed, device, meta)
        controller = None
        if method == "full":  # the run starts from the controller's prior
            controller = MetaController(cfg.controller, _meta_state(cfg, meta, prior),
                                        make_generator(seed, "adaptive", "controller"))
            weights = [math.exp(v) for v in controller.state.prior]
        return Monitor(weights, agent, probe, m.interval, m.action_scale, controller)
    if method == "controller_only":
        return Controlled(MetaController(cfg.controller, _meta_state(cfg, meta, prior),
                                         make_generator(seed, "adaptive", "controller")))
    if method == "linear_anneal":
        return Scheduled(linear_anneal(cfg.kl_control))
    if method == "cyclical":
        return Scheduled(cyclical(cfg.kl_control))
    if method == "pi_control":
        return PIControl(cfg.kl_control)
    return Policy(weights)


def epochs_csv(history: list[dict]) -> str:
    """fit's epoch rows (metrics and the effective weights) as CSV."""
    columns = list(dict.fromkeys(key for row in history for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return buffer.getvalue()


def tune(cfg: AdaptiveLossConfig, run: Run, data: dict[str, Any]) -> dict[str, float]:
    """The tuned controls' settings, chosen on the first seed's validation split."""
    seed = cfg.seed
    train, val = split(data["train"], cfg.train_size, cfg.val_size, seed)
    higher = cfg.task == "classify"  # accuracy up, negative ELBO down
    choice: dict[str, float] = {}

    def pick(key: str, values: list[float], method: str, base: dict | None) -> None:
        scores = {}
        for value in values:
            r = run.unit(f"tune/{key}={value:g}", lambda value=value: _score(train_method(
                cfg, method, {key: value}, data, train, val, seed)))
            scores[value] = r
        if base is not None:
            scores.update(base)
        best = (max if higher else min)(scores, key=lambda v: scores[v]["val_metric"])
        choice[key] = best
        choice[f"{key}_scores"] = {f"{v:g}": s["val_metric"] for v, s in scores.items()}

    controls = cfg.control_names
    if "tuned_cosine" in controls:
        base = run.unit(f"seed{seed}/baseline", lambda: train_method(
            cfg, "baseline", {}, data, train, val, seed, run))
        pick("lr_factor", [f for f in cfg.lr_grid if f != 1.0], "tuned_cosine",
             {1.0: _score(base)})
    if "fixed_grid" in controls:
        if cfg.task == "vae":
            pick("beta", cfg.beta_grid, "fixed_grid", None)
        else:
            pick("weight", cfg.weight_grid, "fixed_grid", None)
    return choice


def _score(result: dict) -> dict:
    return {"val_metric": result["val_metric"], "seconds": result["seconds"]}


def run(cfg: AdaptiveLossConfig, run: Run, data: dict[str, Any]) -> dict:
    run.device = str(data["device"])
    tracker = run_tracker(cfg, run)
    started = time.perf_counter()
    choice = tune(cfg, run, data)
    units: list[dict] = []
    for seed in for_seeds(cfg):
        train, val = split(data["train"], cfg.train_size, cfg.val_size, seed)
        for method in cfg.methods:
            units.append(run.unit(f"seed{seed}/{method}", partial(
                train_method, cfg, method, choice, data, train, val, seed, run, tracker)))
            log.info("%s seed %d: %s", method, seed, {k: v for k, v in units[-1].items()
                                                      if k.startswith("test_")})
    run.save_json("per_seed.json", units)
    run.save_json("tuning.json", choice)
    for method in cfg.methods:
        first = next(u for u in units if u["method"] == method)
        if len(first["weights_log"]) > 1:
            run.save_figure(f"weights-{method}.png", weight_figure(
                [u for u in units if u["method"] == method], cfg.task), dpi=110)
    text = tables(units, cfg.task, cfg.dataset, choice)
    run.save_results(text)
    if cfg.meta_state:
        learners = [u for u in units if u["method"] == "full"] or \
            [u for u in units if u["method"] in ("monitor_only", "controller_only")]
        if learners:
            save_meta_state(Path(cfg.meta_state), cfg.task, learners, run)
    key = "test_neg_elbo" if cfg.task == "vae" else "test_acc"
    metrics = {"task": cfg.task, "dataset": cfg.dataset,
               key: {m: [u[key] for u in units if u["method"] == m] for m in cfg.methods},
               "seconds": {m: sum(u["seconds"] for u in units if u["method"] == m) / cfg.runs
                           for m in cfg.methods},
               "tuning": choice, "elapsed": time.perf_counter() - started,
               "executor": asdict(cfg.executor)}
    track_summary(tracker, run.dir, metrics)
    return metrics


def _add_analyze_arguments(parser) -> None:
    parser.add_argument("dir", help="an adaptive-loss run folder (holding per_seed.json)")


def _analyze(args) -> int:
    import json

    folder = Path(args.dir)
    path = folder / "per_seed.json"
    if not path.is_file():
        raise SystemExit(f"error: {str(folder)!r} holds no per_seed.json: give the folder of a "
                         f"finished adaptive-loss run (see `thresher runs list`)")
    units = json.loads(path.read_text())
    summary = json.loads((folder / "summary.json").read_text())
    config = summary.get("config", {})
    choice = json.loads((folder / "tuning.json").read_text()) \
        if (folder / "tuning.json").is_file() else {}
    print(tables(units, config.get("task", "classify"), config.get("dataset", "?"), choice))
    return 0


register_study(Study(
    name="adaptive-loss",
    help="adaptive loss weights (DQN monitor, meta-controller) against strong controls",
    config=AdaptiveLossConfig,
    run=run,
    prepare=prepare,
    flags=(
        Flag("--task", "task", "classify or vae"),
        Flag("--dataset", "dataset", "dataset name (see `thresher datasets`)"),
        Flag("--modes", "modes", "baseline monitor_only controller_only full", nargs="+"),
        Flag("--controls", "controls", "controls to run (default: every control of the task)",
             nargs="+"),
        Flag("--train-size", "train_size", "stratified training subset per seed (0: all)"),
        Flag("--epochs", "epochs", "training epochs of every method (either task)"),
        Flag("--lr", "lr", "learning rate (either task; tuned_cosine scales it by lr_grid)"),
        Flag("--batch-size", "batch_size", "batch size (either task)"),
        Flag("--meta-state", "meta_state", "file the meta-controller and monitor resume from "
             "and save to"),
        Flag("--runs", "runs", "number of seeds (mean ± 95%% CI over them)"),
    ),
    commands=(
        Command("analyze", "tables of a finished adaptive-loss run (per mode, CIs, p-values, "
                "the DQN's learning evidence)", _add_analyze_arguments, _analyze),
    ),
))
