"""Plots the studies share: bars of mean ± 95% CI and curves with 95% CI bands over seeds.

The intervals are the t-based ones of `thresher.runs.stats`, the same as in the tables, so a
plot never claims more certainty than its table. Figures are built without pyplot (no global
figure registry, no backend to choose, nothing to close); save them with `Run.save_figure`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from thresher.runs.stats import summarize

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def figure(rows: int = 1, cols: int = 1, size: tuple[float, float] = (5.0, 4.0),
           sharey: bool = False) -> tuple[Figure, np.ndarray]:
    """A figure and its ``rows x cols`` array of axes (always 2-D)."""
    from matplotlib.figure import Figure  # ~0.3 s to import: only runs that plot pay for it

    fig = Figure(figsize=size)
    return fig, fig.subplots(rows, cols, squeeze=False, sharey=sharey)


def mean_ci_bars(ax: Axes, groups: Sequence[str], series: Mapping[str, Sequence[Sequence[float]]],
                 scale: float = 1.0) -> None:
    """Grouped bars: ``series[name][i]`` holds the per-seed values of ``groups[i]``; each bar is
    their mean and its error bar the 95% CI (none with a single seed)."""
    width = 0.8 / len(series)
    for i, (name, per_group) in enumerate(series.items()):
        stats = [summarize(values) for values in per_group]
        offset = (i - (len(series) - 1) / 2) * width
        ax.bar(np.arange(len(groups)) + offset, [scale * s.mean for s in stats], width,
               yerr=[scale * np.nan_to_num(s.ci95) for s in stats], capsize=3, label=name)
    ax.set_xticks(range(len(groups)), groups)


def mean_ci_band(ax: Axes, xs: Sequence[float], runs: Sequence[Sequence[float]],
                 scale: float = 1.0, **line: object) -> None:
    """The mean over ``runs`` (one sequence per seed, aligned with ``xs``) as a line and its 95%
    CI as a shaded band of the same colour (none with a single run)."""
    if any(len(run) != len(xs) for run in runs):
        raise ValueError(f"every run needs one value per x ({len(xs)}), got lengths "
                         f"{[len(run) for run in runs]}")
    columns = [summarize(values) for values in zip(*runs)]
    mean = scale * np.array([s.mean for s in columns])
    (drawn,) = ax.plot(xs, mean, **line)
    if len(runs) > 1:
        half = scale * np.array([s.ci95 for s in columns])
        ax.fill_between(xs, mean - half, mean + half, color=drawn.get_color(), alpha=0.2)
