from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from thresher.runs.report import comparison_table, format_table
from thresher.runs.stats import format_mean_ci, paired_test, summarize


def test_summarize_hand_computed():
    s = summarize([1, 2, 3, 4])
    assert s.n == 4
    assert s.mean == 2.5
    assert s.std == pytest.approx(math.sqrt(5 / 3)) and s.std == pytest.approx(1.2910, abs=1e-4)
    # t(0.975, 3) = 3.1824;  3.1824 * 1.2910 / 2 = 2.0543
    assert s.ci95 == pytest.approx(2.0543, abs=1e-4)
    assert (s.low, s.high) == pytest.approx((2.5 - 2.0543, 2.5 + 2.0543), abs=1e-4)


def test_summarize_single_value_has_no_spread():
    s = summarize([0.9])
    assert s.n == 1 and s.mean == 0.9
    assert math.isnan(s.std) and math.isnan(s.ci95)
    assert format_mean_ci(s) == "0.90 ± n/a"


def test_summarize_rejects_empty():
    with pytest.raises(ValueError, match="at least one"):
        summarize([])


def test_format_mean_ci():
    s = summarize([0.97, 0.975, 0.968, 0.972])
    assert format_mean_ci(s, digits=2, scale=100) == f"{s.mean * 100:.2f} ± {s.ci95 * 100:.2f}"
    assert format_mean_ci(summarize([1, 2, 3, 4]), digits=3) == "2.500 ± 2.054"


def test_paired_test_hand_computed():
    a = [1.0, 2.0, 3.0, 4.0, 5.0]
    b = [0.5, 2.5, 2.0, 3.0, 4.0]
    # d = [0.5, -0.5, 1, 1, 1]: mean 0.6, var = 1.70 / 4 = 0.425, t = 0.6 / sqrt(0.425 / 5)
    r = paired_test(a, b)
    t_hand = 0.6 / math.sqrt(0.425 / 5)
    assert r.n == 5
    assert r.mean_diff == pytest.approx(0.6)
    assert r.t == pytest.approx(t_hand) and r.t == pytest.approx(2.0580, abs=1e-4)
    assert r.p == pytest.approx(2 * stats.t.sf(t_hand, 4))
    assert r.ci95 == pytest.approx(stats.t.ppf(0.975, 4) * math.sqrt(0.425 / 5))
    scipy_result = stats.ttest_rel(a, b)
    assert (r.t, r.p) == pytest.approx((scipy_result.statistic, scipy_result.pvalue))


def test_paired_test_is_antisymmetric():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=6), rng.normal(size=6)
    ab, ba = paired_test(a, b), paired_test(b, a)
    assert ab.t == pytest.approx(-ba.t) and ab.p == pytest.approx(ba.p)


def test_paired_test_requires_equal_lengths():
    with pytest.raises(ValueError, match="equal lengths.*3 and 2"):
        paired_test([1, 2, 3], [1, 2])


def test_paired_test_all_equal_differences_do_not_give_nan():
    same = paired_test([0.9, 0.8, 0.7], [0.9, 0.8, 0.7])
    assert (same.mean_diff, same.t, same.p, same.ci95) == (0.0, 0.0, 1.0, 0.0)
    # 0.3-0.2 and 0.4-0.3 differ only by float rounding: still a constant shift
    shifted = paired_test([0.3, 0.4, 0.5], [0.2, 0.3, 0.4])
    assert shifted.t == math.inf and shifted.p == 0.0
    assert shifted.mean_diff == pytest.approx(0.1)
    assert paired_test([1, 2], [2, 3]).t == -math.inf


def test_paired_test_single_pair():
    r = paired_test([1.0], [0.5])
    assert r.mean_diff == 0.5 and math.isnan(r.p) and math.isnan(r.t)


def test_format_table_plain_and_markdown():
    rows = [{"method": "random", "acc": 0.5, "n": 3}, {"method": "margin", "acc": 0.75}]
    plain = format_table(rows).splitlines()
    assert plain == ["method   acc  n",
                     "------  ----  -",
                     "random   0.5  3",
                     "margin  0.75  -"]
    md = format_table(rows, markdown=True).splitlines()
    assert md[0] == "| method | acc | n |"
    assert md[1] == "| --- | ---: | ---: |"
    assert md[3] == "| margin | 0.75 | - |"


def test_format_table_sequence_rows_need_headers():
    assert format_table([[1, "x"]], headers=["a", "b"]).splitlines()[2] == "1  x"
    with pytest.raises(ValueError, match="headers"):
        format_table([[1, 2]])
    with pytest.raises(ValueError, match="expected 2"):
        format_table([[1]], headers=["a", "b"])


def test_comparison_table_with_baseline():
    results = {"random": [0.90, 0.91, 0.92], "margin": [0.93, 0.95, 0.94]}
    table = comparison_table(results, "acc", scale=100, baseline="random")
    lines = table.splitlines()
    assert lines[0].split("  ")[0] == "method"
    for column in ("acc (mean ± 95% CI)", "Δ vs random", "p (paired t)"):
        assert column in lines[0]
    expected = paired_test(results["margin"], results["random"])
    margin = lines[3]
    assert margin.startswith("margin")
    assert format_mean_ci(summarize(results["margin"]), 2, 100) in margin
    assert f"+{expected.mean_diff * 100:.2f} ± {expected.ci95 * 100:.2f}" in margin
    assert f"{expected.p:.3f}" in margin
    assert lines[2].split()[-2:] == ["-", "-"]  # the baseline against itself


def test_comparison_table_errors():
    with pytest.raises(ValueError, match="baseline 'nope'"):
        comparison_table({"a": [1, 2]}, baseline="nope")
    with pytest.raises(ValueError, match="cannot pair 'b' with baseline 'a'"):
        comparison_table({"a": [1, 2], "b": [1, 2, 3]}, baseline="a")
