"""``thresher runs export``: finished runs replayed into MLflow or TensorBoard.

A run made with ``track: none`` (or tracked somewhere else) can be browsed in a tracker
afterwards. Its config, the per-unit curves kept in its JSON artifacts (per_seed.json,
results.json, per_run.json, robustness.json), its final metrics and its artifacts are written
as the live tracker writes them — `thresher.runs.track` says what each study tracks, for both —
one tracked run per unit plus ``summary``. A study not known here is exported as its summary.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from thresher.runs.config import check_choice
from thresher.runs.store import RunRecord, RunStore
from thresher.runs.track import (
    SUMMARY,
    TRACKERS,
    Tracked,
    active_tracked,
    check_tracker,
    continual_final,
    continual_point,
    corruption_tracked,
    epoch_metrics,
    learner_run,
    make_tracker,
    seed_run,
    track,
    track_summary,
    train_final,
)


def runs_export(store: RunStore, refs: Sequence[str], to: str, uri: str | None = None) -> str:
    """Replay completed runs into tracker ``to`` (``mlflow`` or ``tensorboard``; ``uri`` as
    ``track_uri``). Every reference is resolved and checked first, so a run that is not
    completed, or is in the tracker already, exports nothing."""
    if not refs:
        raise ValueError("runs export needs at least one run reference")
    check_choice("--to", to, TRACKERS[1:])
    records = [store.get(ref) for ref in refs]
    for record in records:
        if record.status != "completed":
            raise ValueError(f"run {record.id} is {record.status}; only completed runs are "
                             "exported")
    check_tracker(to)
    units = [REPLAYS.get(record.study, _summary_only)(record) for record in records]
    trackers = [make_tracker(to, f"thresher-{r.study}", r.name, r.config, r.path, uri)
                for r in records]
    for record, tracker in zip(records, trackers):
        if tracker.has(SUMMARY):
            raise ValueError(f"run {record.id} is in {tracker.where} already")
    lines = []
    for record, tracker, tracked in zip(records, trackers, units):
        for unit in tracked:
            track(tracker, unit)
        track_summary(tracker, record.path, record.metrics)
        lines.append(f"exported {record.id} ({len(tracked) + 1} tracked runs) to "
                     f"{tracker.where}")
    return "\n".join(lines)


def _read(record: RunRecord, name: str) -> Any:
    path = record.path / name
    if not path.is_file():
        raise FileNotFoundError(f"run {record.id} has no {name} to export")
    return json.loads(path.read_text())


def _train(record: RunRecord) -> list[Tracked]:
    return [Tracked(*seed_run(r["seed"]),
                    [(row["epoch"], epoch_metrics(row)) for row in r["history"]], train_final(r))
            for r in _read(record, "per_seed.json")]


def _active(record: RunRecord) -> list[Tracked]:
    """results.json keeps each method's curves, times and accuracies in seed order (from the
    config's seed up); inferences and loss queries once per method, as they are per seed."""
    out = []
    for dataset, methods in _read(record, "results.json")["results"].items():
        runs = len(methods[record.config["methods"][0]]["curves"])
        for i in range(runs):
            for method in record.config["methods"]:
                m = methods[method]
                costs = {"inferences": m["inferences"], "loss_queries": m["loss_queries"],
                         "selection_seconds": m["selection_seconds"][i],
                         "seconds": m["seconds"][i]}
                out.append(active_tracked(dataset, method, record.config["seed"] + i,
                                          m["curves"][i], costs))
    return out


def _continual(record: RunRecord) -> list[Tracked]:
    return [Tracked(*learner_run(r["learner"], r["seed"]),
                    [(p["batch"], continual_point(p)) for p in r["curve"]], continual_final(r))
            for r in _read(record, "per_run.json")]


def _robustness(record: RunRecord) -> list[Tracked]:
    grid = _read(record, "robustness.json")["accuracy"]
    return [corruption_tracked(name, {int(s): a for s, a in row.items()})
            for name, row in grid.items()]


def _summary_only(record: RunRecord) -> list[Tracked]:
    return []


REPLAYS: dict[str, Callable[[RunRecord], list[Tracked]]] = {
    "train": _train, "active": _active, "continual": _continual, "robustness": _robustness}
