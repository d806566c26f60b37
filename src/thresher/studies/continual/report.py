"""Tables, plots and tracked metrics of continual runs, and the ``compare`` / ``stats`` actions.

Every number is shown as mean ± 95% CI over seeds (`thresher.runs.stats`); scores are in
percent. ``compare`` puts given runs side by side; ``stats`` pools the last N runs found in a
folder (e.g. ``runs/continual``), grouped by dataset, stream and learner.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from thresher.runs.plots import figure, mean_ci_band
from thresher.runs.report import comparison_table, format_table, mean_ci_cell
from thresher.runs.store import SUMMARY_FILE, RunLookupError, RunStore

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SCORES = (("avg_acc", "avg accuracy (%)", 100.0), ("inc_acc", "incremental acc (%)", 100.0),
          ("forgetting", "forgetting (%)", 100.0),
          ("bwt", "BWT (%)", 100.0), ("seconds_per_task", "s / task", 1.0))


def mean_ci(values: Sequence[float | None], scale: float = 1.0) -> str:
    """``"81.20 ± 0.95"``; "n/a" when no value is a number (forgetting of ``joint``: NaN, or
    null once read back from JSON)."""
    return mean_ci_cell(values, 2, scale, missing="n/a")


def results_table(learners: Mapping[str, Mapping[str, Sequence[float]]]) -> str:
    """Average accuracy with paired tests against ``naive`` (same seeds), then average
    incremental accuracy, forgetting, backward transfer and training time per task."""
    baseline = "naive" if "naive" in learners and len(learners) > 1 else None
    accuracy = comparison_table({name: v["avg_acc"] for name, v in learners.items()},
                                metric_name="average accuracy (%)", scale=100,
                                baseline=baseline)
    rows = [{"method": name, **{title: mean_ci(v[key], scale) for key, title, scale in SCORES[1:]}}
            for name, v in learners.items()]
    return accuracy + "\n\n" + format_table(rows)


def plot_curves(curves: Mapping[str, Sequence[Sequence[dict]]], num_tasks: int,
                title: str) -> Figure:
    """One panel per learner: accuracy on each task against batches seen, mean and 95% CI over
    its seeds' curves, with the ends of training phases dashed. Seeds that were evaluated at
    different batches (class splits of unequal sizes) cannot be averaged point by point: the
    panel then shows the first seed alone."""
    import matplotlib

    names = list(curves)
    fig, axes = figure(1, len(names), size=(4.2 * len(names), 3.4), sharey=True)
    colours = matplotlib.colormaps["viridis"].resampled(max(num_tasks, 2))
    for ax, name in zip(axes[0], names):
        runs = curves[name]
        batches = [p["batch"] for p in runs[0]]
        if any([p["batch"] for p in points] != batches for points in runs):
            runs = runs[:1]
        for task in range(num_tasks):
            mean_ci_band(ax, batches, [[p["accuracy"][task] for p in points] for points in runs],
                         color=colours(task), lw=1, label=f"task {task}")
        points = runs[0]
        ends = [p["batch"] for p, q in zip(points, points[1:]) if q["phase"] != p["phase"]]
        for end in ends:
            ax.axvline(end, color="grey", ls="--", lw=0.6)
        ax.set_title(name)
        ax.set_xlabel("batches")
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel("test accuracy")
    axes[0][-1].legend(fontsize=6, loc="lower right", ncol=2)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# actions


class Finished(NamedTuple):
    """What the actions need of one run."""

    name: str
    started: str
    metrics: dict


def _finished(name: str, study: str, status: str, started: str | None,
              metrics: Mapping) -> Finished:
    if study != "continual" or status != "completed" or "learners" not in metrics:
        raise ValueError(f"run {name!r} is not a completed continual run "
                         f"(study {study!r}, status {status!r})")
    return Finished(name, started or "", dict(metrics))


def _describe(metrics: Mapping) -> str:
    return f"{metrics.get('dataset')} {metrics.get('stream')} x{metrics.get('tasks')}"


def compare(records: Sequence[Finished]) -> str:
    """Runs side by side: one row per run and learner."""
    rows = []
    for record in records:
        for name, values in record.metrics["learners"].items():
            rows.append({"run": record.name, "stream": _describe(record.metrics),
                         "learner": name,
                         **{title: mean_ci(values.get(key, []), scale)
                            for key, title, scale in SCORES},
                         "n": len(values["avg_acc"])})
    return format_table(rows)


def last_runs(folder: Path, n: int) -> list[Finished]:
    """The ``n`` most recently started completed continual runs directly under ``folder``."""
    if not folder.is_dir():
        raise FileNotFoundError(f"no folder {folder}")
    if (folder / SUMMARY_FILE).is_file():
        raise ValueError(f"{folder} is one run; give the folder holding runs "
                         f"(e.g. {folder.parent})")
    records = []
    for path in sorted(folder.glob(f"*/{SUMMARY_FILE}")):
        s = json.loads(path.read_text())
        if s.get("study") == "continual" and s.get("status") == "completed":
            records.append(_finished(s["name"], s["study"], s["status"], s.get("started"),
                                     s.get("metrics") or {}))
    if not records:
        raise RunLookupError(f"no completed continual runs in {folder}")
    records.sort(key=lambda r: (r.started, r.name))
    return records[-n:]


def stats(records: Sequence[Finished]) -> str:
    """Every seed of ``records`` pooled per dataset, stream and learner."""
    pooled: dict[tuple[str, str], dict[str, list[float]]] = {}
    for record in records:
        for name, values in record.metrics["learners"].items():
            group = pooled.setdefault((_describe(record.metrics), name),
                                      {key: [] for key, _, _ in SCORES})
            for key, _, _ in SCORES:
                group[key] += values.get(key, [])
    rows = [{"stream": stream, "learner": name,
             **{title: mean_ci(values.get(key, []), scale) for key, title, scale in SCORES},
             "n": len(values["avg_acc"])}
            for (stream, name), values in pooled.items()]
    return f"{len(records)} runs: {', '.join(r.name for r in records)}\n\n" + format_table(rows)


def add_compare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("refs", nargs="+", metavar="RUN_DIR",
                   help="run directories (or run ids / names in the store)")
    p.add_argument("--runs-dir", help="results root (default: $THRESHER_RUNS, else ./runs)")


def compare_command(args: argparse.Namespace) -> int:
    store = RunStore(args.runs_dir)
    records = [store.get(ref) for ref in args.refs]
    print(compare([_finished(r.id, r.study, r.status, r.started, r.metrics) for r in records]))
    return 0


def add_stats_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", metavar="RUN_DIR", help="folder holding continual runs, "
                   "e.g. runs/continual")
    p.add_argument("--last", type=int, default=5, metavar="N",
                   help="summarise the N most recent completed runs (default 5)")


def stats_command(args: argparse.Namespace) -> int:
    if args.last < 1:
        raise ValueError(f"--last must be >= 1, got {args.last}")
    print(stats(last_runs(Path(args.folder), args.last)))
    return 0
