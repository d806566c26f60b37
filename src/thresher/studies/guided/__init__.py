"""`thresher guided`: RL-guided data selection against RS2 and InfoBatch at equal compute.

Per seed a stratified training subset and a disjoint validation split are drawn from the
training set (the test set is scored only at the end). Every method trains the same model
through the one `fit` loop on the rows an `EpochSelector` picks each epoch (a new pick every
``select_every`` epochs); the phase detector watches every run (``after_backward``).

Methods: ``full`` (every row, every epoch); the equal-compute controls ``full_equal`` (every
row for budget x epochs epochs, rounded: RS2's compute) and ``full_equal_select`` (every row
for as many epochs as a scoring strategy's training plus its selection passes cost, rounded),
each with the schedule fully decayed over its own epochs, and ``rs2_equal`` (RS2 given a
scoring strategy's compute as rows); ``rs2``, ``infobatch``, each fixed strategy alone,
``policy`` (an agent, see `agent`, choosing per interval among the fixed strategies and the
top evolved expressions), ``policy_random`` (uniform choices among the same actions: what
the agent must beat) and ``discovered`` (the best evolved expression alone). Every method's
epochs and budget follow from the config alone, so each unit depends only on its key.
Evolution (`EvolveConfig`) is a one-off unit per dataset, reproducible from the run's seed;
its compute is reported apart. Compute is counted in example passes (selection forward,
training forward/backward) and reported in full-epoch units (passes / N). ``--experiment
corruptions`` evaluates every trained CIFAR-10 model on the 15 CIFAR-10-C corruptions
(severities 1, 3, 5) through the robustness suite's loaders.
"""

from __future__ import annotations

import copy
import json
import logging
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import torch

from thresher.data import DataError, load_splits
from thresher.data.corrupt import BENCHMARK, check_resources
from thresher.data.corrupted import load_corrupted
from thresher.data.dataset import ArrayDataset
from thresher.data.pipeline import Normalize
from thresher.models import build
from thresher.runs.config import ConfigError
from thresher.runs.files import atomic_path, atomic_write, to_json
from thresher.runs.store import Run, RunStore
from thresher.runs.sweep import SUMMARY_FILE
from thresher.seeding import derive_seed, make_generator, set_seed
from thresher.select.epoch import EpochSelector, resolve_budget
from thresher.select.evolve import evolve, to_dict
from thresher.studies import Command, Flag, Study, register_study
from thresher.studies.common import check_holdout, for_seeds, holdout, load_data
from thresher.studies.guided.agent import Chooser, make_state
from thresher.studies.guided.config import (
    EXPERIMENTS,
    FIXED,
    FULL,
    PRIMITIVES,
    GuidedConfig,
)
from thresher.studies.guided.figures import figures
from thresher.studies.guided.report import corruption_table, tables
from thresher.studies.robustness import summarise
from thresher.train import choose_device, evaluate, fit
from thresher.train.phases import PhaseDetector, head_gradient, total_grad_norm

log = logging.getLogger("thresher.guided")


def split(train: ArrayDataset, train_size: int, val_size: int, seed: int
          ) -> tuple[ArrayDataset, ArrayDataset]:
    """This seed's training subset and validation split (`thresher.studies.common.holdout`)."""
    return holdout(train, train_size, val_size, make_generator(seed, "guided", "split"))


def prepare(cfg: GuidedConfig, store: RunStore) -> dict[str, Any]:
    """Device and every dataset, sizes and budget, checked before the run is opened."""
    device = choose_device(cfg.device)
    if cfg.corruptions:  # frost's photographs, checked before an hour of training
        try:
            check_resources(list(BENCHMARK))
        except DataError as e:
            raise ConfigError(f"the corruptions experiment: {e}") from None
    data = {}
    for dataset, model in cfg.targets():
        try:
            if dataset == "cifar100" and cfg.dataset is None:  # only where its files are
                train, test = load_splits(dataset, data_dir=cfg.data_dir, download=False,
                                          **cfg.dataset_options)
                train, test = train.to(device), test.to(device)
            else:
                train, test = load_data(dataset, cfg.data_dir, device, cfg.dataset_options)
        except DataError as e:
            hint = " (the cifar100 experiment runs only where its files are present)" \
                if dataset == "cifar100" else ""
            raise ConfigError(f"dataset {dataset!r} is not available{hint}: {e}") from None
        check_holdout(train, dataset, cfg.train_size, cfg.val_size, "guided")
        n = cfg.train_size or len(train) - cfg.val_size
        try:
            resolve_budget(cfg.budget_value, n)
        except ValueError as e:
            raise ConfigError(f"budget={cfg.budget}: {e} (the training subset has {n} rows)"
                              ) from None
        if cfg.evolves and cfg.evolve.proxy_train_size > n:
            raise ConfigError(f"evolve.proxy_train_size={cfg.evolve.proxy_train_size} exceeds "
                              f"the {n}-row training subset")
        try:
            build(model, train.num_classes, train.in_shape)
        except ValueError as e:
            raise ConfigError(f"model {model!r}: {e}") from None
        data[dataset] = {"train": train, "test": test, "model": model}
    return {"device": device, "data": data}


def _passes(cost: dict[str, int], n: int) -> dict[str, float]:
    """Counted passes in full-epoch units (passes / N), and ``compute``: forward-equivalents
    (a backward costs about two forwards) per full training epoch, ``(train forward + 2 train
    backward + selection forward) / 3N``, so a full epoch costs 1 and a selection pass 1/3."""
    out = {k: v / n for k, v in cost.items()}
    out["compute"] = (cost["train_forward"] + 2 * cost["train_backward"]
                      + cost["select_forward"]) / (3 * n)
    return out


def train_method(cfg: GuidedConfig, method: str, dataset: str, data: dict[str, Any],
                 device: torch.device, seed: int, discovered: list[dict] | None,
                 epochs: int | None = None, run: Run | None = None) -> dict[str, Any]:
    """Train one method on one seed's split; returns its scores, curves, costs and logs."""
    train, val = split(data["train"], cfg.train_size, cfg.val_size, seed)
    test = data["test"]
    recipe = cfg.recipe if epochs is None else replace(cfg.recipe, epochs=epochs)
    n = len(train)
    set_seed(seed)
    model = build(data["model"], train.num_classes, train.in_shape).to(device)
    normalize = Normalize.from_dataset(train)
    detector = PhaseDetector(cfg.phase_config())
    discovered = discovered or []
    actions = list(FIXED) + [f"discovered:{i}" for i in range(len(discovered))]
    if cfg.policy.startswith("fixed:") and cfg.policy[6:] not in actions:
        actions.append(cfg.policy[6:])  # e.g. fixed:rs2, the policy's floor
    strategy = {"full": "full", "full_equal": "full", "full_equal_select": "full",
                "rs2_equal": "rs2", "discovered": "expression", "policy": "rs2",
                "policy_random": "rs2"}.get(method, method)
    options: dict[str, Any] = dict(cfg.selection)
    if method == "discovered":
        if not discovered:
            raise ValueError("discovered needs an evolved expression")
        options["expression"] = discovered[0]["expression"]
    budget = 1.0 if method in FULL else equal_compute(cfg, n)["rs2_budget"] \
        if method == "rs2_equal" else cfg.budget_value
    decisions = -(-recipe.epochs // cfg.select_every)
    chooser = None
    if method in ("policy", "policy_random"):
        chooser = Chooser(cfg.policy if method == "policy" else "random", cfg.bandit, actions,
                          seed, decisions)
    selector = EpochSelector(strategy, train, budget=budget, epochs=recipe.epochs, model=model,
                             normalize=normalize, device=device, seed=seed, options=options,
                             base_loss=None)
    latest: dict[str, Any] = {}
    epochs_log: list[dict[str, Any]] = []
    interval: dict[str, Any] = {"val": None, "compute": 0.0}
    held: dict[str, Any] = {}

    def after_backward(step) -> None:
        if step.step % cfg.phase_every == 0:
            latest["obs"] = detector.observe(step.step, step.loss.detach(),
                                             total_grad_norm(step.model),
                                             grad=head_gradient(step.model))

    def choose_action(epoch: int) -> None:
        progress = (epoch - 1) / recipe.epochs
        state = make_state(latest.get("obs"), chooser.last, len(actions), progress)
        if chooser.last is not None:  # the interval that just ended
            gain = latest["val_acc"] - interval["val"]
            spent = _passes(selector.cost, n)["compute"] - interval["compute"]
            reward = cfg.reward_scale * gain / max(spent, 1e-9)
            chooser.learn(reward, state, False)
            held["reward"] = reward
        a = chooser.act(state)
        name = actions[a]
        if name.startswith("discovered:"):
            selector.state["expression"] = discovered[int(name.split(":")[1])]["expression"]
            selector.strategy = "expression"
        else:
            selector.strategy = name
        held["action"] = name
        interval["val"] = latest.get("val_acc", interval["val"])
        interval["compute"] = _passes(selector.cost, n)["compute"]

    def before_epoch(epoch: int) -> torch.Tensor:
        if (epoch - 1) % cfg.select_every == 0 or "rows" not in held:
            held.pop("reward", None)
            if chooser is not None:
                choose_action(epoch)
            rows = selector.before_epoch(epoch)
            sel = selector.last_selection
            held["rows"], held["new"] = rows, True
            scores = selector.last_stats
            if scores is not None and scores.losses is not None:
                detector.note_utility(float(scores.losses[sel.indices].mean()))
        else:
            held["new"] = False
        return held["rows"]

    def on_epoch(row: dict) -> None:
        latest["val_acc"] = row["val_acc"]
        if interval["val"] is None:
            interval["val"] = 0.0
        epochs_log.append({
            "epoch": row["epoch"], "val_acc": row["val_acc"], "train_loss": row["train_loss"],
            "strategy": (held.get("action") or selector.strategy),
            "new_selection": held["new"], "selected": int(len(held["rows"])),
            "reward": held.get("reward") if held["new"] else None,
            "phase": detector.label, **{f"passes_{k}": v
                                         for k, v in _passes(selector.cost, n).items()}})

    # the interval before the first decision starts from the untrained model's accuracy
    interval["val"] = evaluate(model, val, normalize=normalize, device=device)["accuracy"]
    latest["val_acc"] = interval["val"]
    hooks = selector.hooks()
    started = time.perf_counter()
    result = fit(model, train, recipe, val=val, normalize=normalize, device=device, seed=seed,
                 loss_fn=hooks["loss_fn"], after_step=hooks["after_step"],
                 before_epoch=before_epoch, after_backward=after_backward, on_epoch=on_epoch)
    seconds = time.perf_counter() - started
    if chooser is not None and chooser.last is not None:  # the last interval's reward
        spent = _passes(selector.cost, n)["compute"] - interval["compute"]
        reward = cfg.reward_scale * (latest["val_acc"] - interval["val"]) / max(spent, 1e-9)
        chooser.learn(reward, make_state(latest.get("obs"), chooser.last, len(actions), 1.0),
                      True)
        epochs_log[-1]["final_reward"] = reward
    scores = evaluate(model, test, normalize=normalize, device=device)
    usage: dict[str, int] = {}
    for e in epochs_log:
        usage[e["strategy"]] = usage.get(e["strategy"], 0) + 1
    out = {"method": method, "seed": seed, "dataset": dataset, "epochs": recipe.epochs,
           "train_rows": n, "test_acc": scores["accuracy"], "test_loss": scores["loss"],
           "best_val_acc": max(e["val_acc"] for e in epochs_log),
           "final_val_acc": epochs_log[-1]["val_acc"],
           "val_curve": [e["val_acc"] for e in epochs_log], "seconds": seconds,
           "cost": dict(selector.cost), "passes": _passes(selector.cost, n),
           "epochs_log": epochs_log, "strategy_usage": usage,
           "phases": {**detector.summary(),
                      "events": [{"step": e["step"], "trigger": e["trigger"],
                                  "label_before": e["label_before"],
                                  "label_after": e["label_after"]} for e in detector.events]},
           "optimizer": {k: v for k, v in result.optimizer.items()
                         if isinstance(v, (int, float, str))},
           "actions": actions if chooser is not None else None,
           "agent_diagnostics": chooser.diagnostics if chooser is not None else None}
    if run is not None and cfg.corruptions and dataset == "cifar10":
        run.save_torch(_model_file(dataset, method, seed),
                       {"model": model.state_dict(), "mean": list(normalize.mean),
                        "std": list(normalize.std)})
    return out


def _model_file(dataset: str, method: str, seed: int) -> str:
    return f"model-{dataset}-{method}-seed{seed}.pt"


def discover(cfg: GuidedConfig, data: dict[str, Any], device: torch.device,
             seed: int) -> dict[str, Any]:
    """The evolutionary search (see `EvolveConfig`), with its compute."""
    e = cfg.evolve
    train, val = split(data["train"], cfg.train_size, cfg.val_size, seed)
    proxy = train if not e.proxy_train_size or e.proxy_train_size >= len(train) else \
        train.stratified(e.proxy_train_size, make_generator(seed, "guided", "proxy"))
    n_proxy = len(proxy)
    normalize = Normalize.from_dataset(proxy)
    recipe = replace(cfg.recipe, epochs=e.proxy_epochs, warmup_epochs=0.0)
    set_seed(derive_seed(seed, "guided", "proxy-model"))
    warm = build(data["model"], proxy.num_classes, proxy.in_shape).to(device)
    cost = {"select_forward": 0, "train_forward": 0, "train_backward": 0}
    started = time.perf_counter()
    if e.warm_epochs:  # mid-training: the study's rate, not yet decayed
        fit(warm, proxy, replace(cfg.recipe, epochs=e.warm_epochs, schedule="constant"),
            normalize=normalize, device=device, seed=seed)
        cost["train_forward"] += e.warm_epochs * n_proxy
        cost["train_backward"] += e.warm_epochs * n_proxy
    budget = cfg.budget_value
    if isinstance(budget, int):  # a count of the training subset, as a fraction of the proxy
        budget = min(1.0, budget / len(train))
    warm_acc = evaluate(warm, val, normalize=normalize, device=device)["accuracy"]

    def fitness(expr) -> float:
        model = copy.deepcopy(warm)
        selector = EpochSelector("expression", proxy, budget=budget, epochs=e.proxy_epochs,
                                 model=model, normalize=normalize, device=device, seed=seed,
                                 options={**cfg.selection, "expression": to_dict(expr)})
        fit(model, proxy, recipe, normalize=normalize, device=device, seed=seed,
            **selector.hooks())
        for k in cost:
            cost[k] += selector.cost[k]
        return evaluate(model, val, normalize=normalize, device=device)["accuracy"]

    result = evolve(list(PRIMITIVES), fitness, population=e.population,
                    generations=e.generations, max_depth=e.max_depth,
                    elite=min(2, e.population - 1), tournament=min(3, e.population),
                    seed=seed)
    top = [{"expression": to_dict(x), "text": str(x), "fitness": f}
           for x, f in result.top(e.top_k)]
    return {"top": top, "search": result.to_dict(), "seconds": time.perf_counter() - started,
            "cost": cost, "proxy_rows": n_proxy, "warm_val_acc": warm_acc,
            "passes_full_epochs": {k: v / len(train) for k, v in cost.items()}}


def corruption_unit(cfg: GuidedConfig, run: Run, method: str, seed: int,
                    data: dict[str, Any], device: torch.device,
                    cells: dict[tuple[str, int], ArrayDataset]) -> dict[str, Any]:
    """A trained CIFAR-10 model on the 15 CIFAR-10-C corruptions at cfg's severities.
    ``cells`` keeps the corrupted test sets the run has made, so every model of the run is
    scored on the same images and each cell is made once (it depends on the run's seed
    only)."""
    test = data["test"]
    rows = None
    if 0 < cfg.corruption_limit < len(test):
        rows = torch.arange(cfg.corruption_limit) * len(test) // cfg.corruption_limit
    saved = torch.load(run.path(_model_file("cifar10", method, seed)), map_location=device,
                       weights_only=False)
    model = build(data["model"], test.num_classes, test.in_shape).to(device)
    model.load_state_dict(saved["model"])
    normalize = Normalize(tuple(saved["mean"]), tuple(saved["std"]))
    clean_rows = test if rows is None else test.subset(rows)
    clean = evaluate(model, clean_rows, normalize=normalize, device=device)["accuracy"]
    grid: dict[str, dict[int, float]] = {}
    for name in BENCHMARK:
        grid[name] = {}
        for severity in cfg.corruption_severities:
            if (name, severity) not in cells:
                cells[name, severity] = load_corrupted("cifar10", name, severity, "test",
                                                       cfg.data_dir, seed=cfg.seed, clean=test,
                                                       rows=rows)
            cell = cells[name, severity]
            grid[name][severity] = evaluate(model, cell, normalize=normalize,
                                            device=device)["accuracy"]
    return {"method": method, "seed": seed, **summarise(clean, grid)}


def equal_compute(cfg: GuidedConfig, n: int) -> dict[str, Any]:
    """The equal-compute controls' settings, from the config alone (compute in full-epoch
    forward-equivalents, see `_passes`): RS2 trains ``budget x epochs`` epochs' worth of rows;
    a scoring strategy adds one selection pass (a third of an epoch) per interval.
    ``full_equal``/``full_equal_select`` get those computes as whole epochs (rounded half
    up); ``rs2_equal`` gets the scoring strategy's compute as its per-epoch budget."""
    epochs = cfg.recipe.epochs
    frac = resolve_budget(cfg.budget_value, n) / n
    rs2 = frac * epochs
    scored = rs2 + (-(-epochs // cfg.select_every)) / 3
    return {"full_equal": max(1, int(rs2 + 0.5)), "full_equal_select": max(1, int(scored + 0.5)),
            "rs2_budget": min(1.0, scored / epochs)}


def publish(folder: Path, name: str, result: dict[str, Any]) -> str:
    """``<name>_results.json`` and its figures in ``folder`` (each written atomically); returns
    the tables. ``result`` holds the dataset, model, class count, searches and units."""
    atomic_write(folder / f"{name}_results.json", to_json(result))
    for fname, fig in figures(result["units"]).items():
        with atomic_path(folder / f"{name}_{fname}.png") as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    return tables(result["units"], f"{name} ({result['dataset']}, {result['model']})",
                  result["evolution"], result["num_classes"])


def publish_corruptions(folder: Path, rows: list[dict]) -> str:
    atomic_write(folder / "corruption_results.json", to_json(rows))
    return corruption_table(rows)


def run(cfg: GuidedConfig, run: Run, prepared: dict[str, Any]) -> dict:
    device = prepared["device"]
    run.device = str(device)
    started = time.perf_counter()
    metrics: dict[str, Any] = {}
    texts = []
    names = cfg.experiment_names or [cfg.dataset]
    trained: dict[str, list[dict]] = {}
    for dataset, data in prepared["data"].items():
        searches = []
        if cfg.evolves:
            search = run.unit(f"{dataset}/evolve", partial(discover, cfg, data, device, cfg.seed))
            searches.append({**search, "seed": cfg.seed})
            log.info("%s: evolved %s", dataset, [t["text"] for t in search["top"]])
        top = searches[0]["top"] if searches else None
        units: list[dict] = []
        equal = equal_compute(cfg, cfg.train_size or len(data["train"]) - cfg.val_size)
        for seed in for_seeds(cfg):
            for method in cfg.methods:
                epochs = equal.get(method)
                key = f"{dataset}/seed{seed}/{method}" + (f"/e{epochs}" if epochs else "")
                unit = run.unit(key, partial(train_method, cfg, method, dataset, data, device,
                                             seed, top, epochs, run))
                units.append(unit)
                log.info("%s %s seed %d: test %.4f", dataset, method, seed, unit["test_acc"])
        trained[dataset] = units
        # results files: <experiment>_results.json (corruptions trains the cifar10 preset)
        files = [name for name in dict.fromkeys(
            "cifar10" if n == "corruptions" else n for n in names)
            if cfg.dataset is not None or EXPERIMENTS[name][0] == dataset]
        for name in files:
            result = {"dataset": dataset, "model": data["model"],
                      "num_classes": data["train"].num_classes, "methods": cfg.methods,
                      "budget": cfg.budget, "policy": cfg.policy, "optimizer": cfg.optimizer,
                      "evolution": searches, "units": units}
            texts.append(publish(run.dir, name, result))
            metrics[name] = {m: sum(u["test_acc"] for u in units if u["method"] == m)
                             / cfg.runs for m in cfg.methods}
    if cfg.corruptions:
        data = prepared["data"]["cifar10"]
        rows, cells = [], {}
        for u in trained["cifar10"]:
            rows.append(run.unit(f"corruptions/seed{u['seed']}/{u['method']}", partial(
                corruption_unit, cfg, run, u["method"], u["seed"], data, device, cells)))
        texts.append(publish_corruptions(run.dir, rows))
        metrics["corruptions"] = {m: sum(r["mean_accuracy"] for r in rows if r["method"] == m)
                                  / cfg.runs for m in cfg.methods}
    run.save_results("\n\n".join(texts))
    metrics["elapsed"] = time.perf_counter() - started
    return metrics


def _add_analyze_arguments(parser) -> None:
    parser.add_argument("dirs", nargs="+", metavar="DIR",
                        help="guided run folders (e.g. the seeds of one sweep) or a sweep "
                             "folder (runs/sweeps/NAME); their units are merged by seed")
    parser.add_argument("--out", default=None,
                        help="also write the merged <experiment>_results.json, "
                             "corruption_results.json, figures and results.txt here")


def _run_folders(paths: list[str]) -> list[Path]:
    """Run folders; a sweep folder stands for those of its runs that have written results (a
    sweep still under way contributes its finished seeds, and says how many it leaves out)."""
    folders = []
    for text in paths:
        folder = Path(text)
        summary = folder / SUMMARY_FILE
        if not summary.is_file():
            folders.append(folder)
            continue
        runs = [folder.parent.parent / r["id"] for r in json.loads(summary.read_text())["runs"]]
        done = [r for r in runs if any(r.glob("*_results.json"))]
        if len(done) < len(runs):
            print(f"note: {len(runs) - len(done)} of the sweep's {len(runs)} runs have no "
                  "results yet; left out", file=sys.stderr)
        folders += done
    return folders


def merge(folders: list[Path]) -> tuple[dict[str, dict], list[dict]]:
    """Each results file's units (and searches) merged over ``folders``, and the corruption
    rows. A (method, seed) met twice is refused: merging must not double-count a seed."""
    results: dict[str, dict] = {}
    rows: list[dict] = []
    for folder in folders:
        files = sorted(folder.glob("*_results.json")) if folder.is_dir() else []
        files = [f for f in files if f.name != "corruption_results.json"]
        if not files:
            raise SystemExit(f"error: {str(folder)!r} holds no <experiment>_results.json: give "
                             "finished guided run folders or a sweep folder (see `thresher "
                             "runs list`, `thresher sweep status`)")
        for f in files:
            data = json.loads(f.read_text())
            name = f.name[:-len("_results.json")]
            data["evolution"] = [data["evolution"]] if isinstance(data["evolution"], dict) \
                else data["evolution"] or []
            if name not in results:
                results[name] = {**data, "units": [], "evolution": []}
            merged = results[name]
            seen = {(u["method"], u["seed"]) for u in merged["units"]}
            for u in data["units"]:
                if (u["method"], u["seed"]) in seen:
                    raise SystemExit(f"error: {u['method']} seed {u['seed']} appears in more "
                                     f"than one of the folders ({folder}): merge each seed once")
            merged["units"] += data["units"]
            merged["evolution"] += data["evolution"]
        corrupted = folder / "corruption_results.json"
        if corrupted.is_file():
            rows += json.loads(corrupted.read_text())
    for merged in results.values():
        merged["units"].sort(key=lambda u: u["seed"])
    return results, sorted(rows, key=lambda r: r["seed"])


def _analyze(args) -> int:
    results, rows = merge(_run_folders(args.dirs))
    out = Path(args.out) if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    texts = []
    for name, result in results.items():
        if not result.get("num_classes"):
            raise SystemExit(f"error: {name}_results.json does not say its class count")
        texts.append(publish(out, name, result) if out is not None else tables(
            result["units"], f"{name} ({result['dataset']}, {result['model']})",
            result["evolution"], result["num_classes"]))
    if rows:
        texts.append(publish_corruptions(out, rows) if out is not None
                     else corruption_table(rows))
    text = "\n\n".join(texts)
    if out is not None:
        atomic_write(out / "results.txt", text + "\n")
    print(text)
    return 0


register_study(Study(
    name="guided",
    help="RL-guided per-epoch data selection (bandit / actor-critic over strategies, evolved "
         "strategies) against RS2 and InfoBatch at equal compute",
    config=GuidedConfig,
    run=run,
    prepare=prepare,
    commands=(
        Command("analyze", "tables of finished guided runs, the seeds of a sweep merged (CIs, "
                "paired tests, equal-compute verdicts), optionally written out with figures",
                _add_analyze_arguments, _analyze),
    ),
    flags=(
        Flag("--experiment", "experiment", "cifar10, cifar100, corruptions or all"),
        Flag("--dataset", "dataset", "train on this dataset instead (see `thresher datasets`)"),
        Flag("--model", "model", "model name (default: the experiment's, mlp for --dataset)"),
        Flag("--methods", "methods", "methods to compare (default: all)", nargs="+"),
        Flag("--policy", "policy", "bandit, actor_critic or fixed:<strategy>"),
        Flag("--optimizer", "optimizer", "sgd or galore (fit.optimizer=galore_sgd)"),
        Flag("--augment", "augment", "standard, strong, cutout or none"),
        Flag("--budget", "budget", "rows per epoch: a fraction in (0, 1] or a count"),
        Flag("--select-every", "select_every", "epochs between selections / decisions"),
        Flag("--epochs", "epochs", "training epochs (fit.epochs)"),
        Flag("--train-size", "train_size", "stratified training subset per seed (0: all)"),
        Flag("--runs", "runs", "number of seeds (mean ± 95%% CI over them)"),
    ),
))
