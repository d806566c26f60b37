"""The study's figures: test accuracy bars with 95% CIs, test accuracy against counted compute
and against wall-clock seconds (the full-data runs joined as plain training's price curve),
validation curves, the phase detector's transitions on a timeline and the strategy usage per
method."""

from __future__ import annotations

from thresher.runs.plots import figure, mean_ci_band, mean_ci_bars
from thresher.runs.stats import summarize
from thresher.studies.guided.report import FULL_CURVE


def figures(units: list[dict]) -> dict:
    methods = list(dict.fromkeys(u["method"] for u in units))
    out = {}
    fig, axes = figure(1, 1, (max(5.0, 0.7 * len(methods)), 3.6))
    ax = axes[0, 0]
    mean_ci_bars(ax, methods, {"test": [[u["test_acc"] for u in units if u["method"] == m]
                                        for m in methods]}, scale=100.0)
    ax.set_ylabel("test accuracy (%)")
    ax.tick_params(axis="x", labelrotation=45)
    fig.tight_layout()
    out["accuracy"] = fig

    fig, axes = figure(1, 2, (11.0, 4.2))
    for ax, (x_key, x_label) in zip(axes[0], (
            ("compute", "compute (full-epoch forward-equivalents, selection included)"),
            ("seconds", "wall-clock seconds of training"))):
        points = {}
        for i, m in enumerate(methods):
            runs = [u for u in units if u["method"] == m]
            xs = [u["passes"]["compute"] if x_key == "compute" else u["seconds"] for u in runs]
            acc = summarize([100 * u["test_acc"] for u in runs])
            x = sum(xs) / len(xs)
            points[m] = (x, acc.mean)
            ax.errorbar([x], [acc.mean], yerr=[0.0 if acc.n < 2 else acc.ci95], fmt="o",
                        ms=4, capsize=2, color=f"C{i % 10}", label=m)
        line = sorted(points[m] for m in FULL_CURVE if m in points)
        if len(line) > 1:
            ax.plot(*zip(*line), color="0.5", lw=0.8, ls="--", zorder=0)
        ax.set_xlabel(x_label)
        ax.set_ylabel("test accuracy (%)")
    axes[0, 1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    out["compute"] = fig

    fig, axes = figure(1, 1, (6.0, 3.6))
    ax = axes[0, 0]
    for m in methods:
        curves = [u["val_curve"] for u in units if u["method"] == m]
        xs = list(range(1, len(curves[0]) + 1))
        mean_ci_band(ax, xs, curves, scale=100.0, label=m, lw=0.9)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    out["validation"] = fig

    fig, axes = figure(1, 1, (6.0, max(2.5, 0.3 * len(units))))
    ax = axes[0, 0]
    for i, u in enumerate(units):
        steps = u["phases"]["steps"]
        ax.scatter(steps, [i] * len(steps), marker="|", s=80)
    ax.set_yticks(range(len(units)), [f"{u['method']} s{u['seed']}" for u in units], fontsize=6)
    ax.set_xlabel("optimiser step of a detected phase transition")
    fig.tight_layout()
    out["phases"] = fig

    strategies = sorted({s for u in units for s in u["strategy_usage"]})
    fig, axes = figure(1, 1, (max(5.0, 0.7 * len(methods)), 3.6))
    ax = axes[0, 0]
    bottom = [0.0] * len(methods)
    for s in strategies:
        heights = []
        for m in methods:
            runs = [u for u in units if u["method"] == m]
            heights.append(sum(u["strategy_usage"].get(s, 0) for u in runs) / len(runs))
        ax.bar(range(len(methods)), heights, bottom=bottom, label=s)
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax.set_xticks(range(len(methods)), methods, rotation=45, fontsize=7)
    ax.set_ylabel("epochs per run")
    ax.legend(fontsize=6)
    fig.tight_layout()
    out["strategies"] = fig
    return out
