"""Plain text (or markdown) tables: every study's final comparison is printed through here."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from thresher.runs.stats import format_mean_ci, paired_test, summarize

_BLANKS = frozenset({"", "-", "n/a"})


def format_table(rows: Sequence[Mapping[str, Any]] | Sequence[Sequence[Any]],
                 headers: Sequence[str] | None = None, markdown: bool = False,
                 float_format: str = ".4g") -> str:
    """Align ``rows`` into a table; number columns are right-aligned.

    Rows are dicts (columns: ``headers`` if given, else every key in first-seen order) or
    sequences (``headers`` required). Missing values and None print as "-".
    """
    if rows and isinstance(rows[0], Mapping):
        if headers is None:
            headers = list(dict.fromkeys(key for row in rows for key in row))
        table = [[_cell(row.get(h), float_format) for h in headers] for row in rows]
    else:
        if headers is None:
            raise ValueError("format_table needs headers when rows are sequences")
        for row in rows:
            if len(row) != len(headers):
                raise ValueError(f"row {list(row)!r} has {len(row)} cells, "
                                 f"expected {len(headers)} ({', '.join(headers)})")
        table = [[_cell(value, float_format) for value in row] for row in rows]
    head = [str(h) for h in headers]
    if not head:
        return ""
    columns = list(zip(head, *table))
    right = [is_number_column(col[1:]) for col in columns]
    if markdown:
        return _markdown(head, table, right)
    widths = [max(len(c) for c in col) for col in columns]
    rule = ["-" * w for w in widths]
    lines = [_join(cells, widths, right) for cells in (head, rule, *table)]
    return "\n".join(lines)


def _cell(value: Any, float_format: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else format(value, float_format)
    return str(value)


def is_number_column(cells: Sequence[str], blanks: frozenset[str] = _BLANKS) -> bool:
    """Whether a column of cells (``blanks`` aside) should be right-aligned as numbers."""
    filled = [c for c in cells if c not in blanks]
    return bool(filled) and all(_looks_numeric(c) for c in filled)


def _looks_numeric(text: str) -> bool:
    """"0.97", "-3", "97.12 ± 0.31", "<0.001" all align as numbers."""
    try:
        float(text.split()[0].lstrip("<>").rstrip("%"))
        return True
    except ValueError:
        return False


def _join(cells: Sequence[str], widths: Sequence[int], right: Sequence[bool]) -> str:
    padded = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)]
    return "  ".join(padded).rstrip()


def _markdown(head: list[str], table: list[list[str]], right: list[bool]) -> str:
    def row(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    rule = "| " + " | ".join("---:" if r else "---" for r in right) + " |"
    return "\n".join([row(head), rule, *(row(cells) for cells in table)])


def mean_ci_cell(values: Sequence[float | None], digits: int = 2, scale: float = 1.0,
                 missing: str = "-") -> str:
    """``"81.20 ± 0.95"`` over the finite values (None, NaN and inf, e.g. read back from JSON,
    are left out); ``missing`` when none is finite."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return format_mean_ci(summarize(finite), digits, scale) if finite else missing


def format_p(p: float) -> str:
    """p-values as people read them: 3 decimals, "<0.001" below that, "n/a" if untestable."""
    if math.isnan(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def comparison_table(results: Mapping[str, Sequence[float]], metric_name: str = "metric",
                     scale: float = 1.0, digits: int = 2, baseline: str | None = None,
                     markdown: bool = False) -> str:
    """One row per method: mean ± 95% CI over seeds and n.

    With ``baseline`` (a method name) each other method also gets its paired difference
    (mean ± CI of method - baseline) and the paired t-test p-value; every method's values must
    then list the same seeds in the same order as the baseline's.
    """
    if baseline is not None and baseline not in results:
        raise ValueError(f"baseline {baseline!r} is not among the methods: {', '.join(results)}")
    value_column = f"{metric_name} (mean ± 95% CI)"
    rows = []
    for method, values in results.items():
        summary = summarize(values)
        row: dict[str, Any] = {"method": method,
                               value_column: format_mean_ci(summary, digits, scale),
                               "n": summary.n}
        if baseline is not None:
            row.update(_versus(method, values, baseline, results[baseline], digits, scale))
        rows.append(row)
    return format_table(rows, markdown=markdown)


def _versus(method: str, values: Sequence[float], baseline: str, base: Sequence[float],
            digits: int, scale: float) -> dict[str, str]:
    delta, p = f"Δ vs {baseline}", "p (paired t)"
    if method == baseline:
        return {delta: "-", p: "-"}
    try:
        test = paired_test(values, base)
    except ValueError as e:
        raise ValueError(f"cannot pair {method!r} with baseline {baseline!r}: {e}") from None
    ci = "n/a" if math.isnan(test.ci95) else f"{test.ci95 * scale:.{digits}f}"
    return {delta: f"{test.mean_diff * scale:+.{digits}f} ± {ci}", p: format_p(test.p)}
