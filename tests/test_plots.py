"""Shared plots: their intervals are the t-based ones of the tables."""

import numpy as np
import pytest
from matplotlib.container import BarContainer

from thresher.runs.plots import figure, mean_ci_band, mean_ci_bars

T_975_DF1 = 12.706204736174707  # t quantile for 2 seeds; the normal one would be 1.96


def test_band_is_the_t_interval_over_runs():
    fig, axes = figure()
    ax = axes[0][0]
    mean_ci_band(ax, [1, 2], [[0.0, 1.0], [2.0, 1.0]], scale=100)
    line = ax.lines[0]
    assert list(line.get_ydata()) == [100.0, 100.0]
    top = ax.collections[0].get_paths()[0].vertices[:, 1].max()
    half = T_975_DF1 * np.std([0.0, 2.0], ddof=1) / np.sqrt(2)
    assert top == pytest.approx(100 * (1 + half))


def test_one_run_has_no_band_and_ragged_runs_are_refused():
    fig, axes = figure()
    mean_ci_band(axes[0][0], [1, 2, 3], [[0.1, 0.2, 0.3]])
    assert not axes[0][0].collections
    with pytest.raises(ValueError, match=r"one value per x \(3\), got lengths \[3, 2\]"):
        mean_ci_band(axes[0][0], [1, 2, 3], [[0.1, 0.2, 0.3], [0.1, 0.2]])


def test_bars_show_means_with_t_error_bars():
    fig, axes = figure()
    ax = axes[0][0]
    mean_ci_bars(ax, ["digits", "mnist"], {"random": [[0.5, 0.7], [0.9]],
                                          "coreset": [[0.6, 0.6], [0.8]]})
    random, coreset = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert [b.get_height() for b in random] == pytest.approx([0.6, 0.9])
    segments = random.errorbar.lines[2][0].get_segments()
    low, high = segments[0][:, 1]
    assert high - low == pytest.approx(2 * T_975_DF1 * np.std([0.5, 0.7], ddof=1) / np.sqrt(2))
    assert segments[1][0, 1] == segments[1][1, 1]  # one seed: no interval
    assert [t.get_text() for t in ax.get_xticklabels()] == ["digits", "mnist"]
