"""``thresher runs list|show|compare|delete|gc|reindex``: each returns the text the CLI prints."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from thresher.runs.config import flatten
from thresher.runs.report import format_table
from thresher.runs.store import RunStore, read_results
from thresher.runs.units import Units


def runs_list(store: RunStore, study: str | None = None, status: str | None = None,
              limit: int | None = 20, max_metrics: int = 4) -> str:
    """Newest runs first, with the first few scalar metrics they report."""
    records = store.list(study=study, status=status, limit=limit)
    if not records:
        filters = "".join(f" {k}={v}" for k, v in (("study", study), ("status", status)) if v)
        return f"no runs{filters} in {store.root}"
    metric_keys: list[str] = []
    for record in records:
        for key, value in flatten(record.metrics).items():
            if _is_number(value) and key not in metric_keys and len(metric_keys) < max_metrics:
                metric_keys.append(key)
    rows = []
    for record in records:
        metrics = flatten(record.metrics)
        rows.append({"id": record.id, "status": record.status, "started": _when(record.started),
                     "duration": _duration(record.duration_s),
                     **{key: metrics.get(key) for key in metric_keys}})
    return format_table(rows)


def runs_show(store: RunStore, ref: str) -> str:
    """Everything about one run: where, outcome, provenance, config, metrics, versions and
    its result table."""
    record = store.get(ref)
    summary = record.summary()
    header = {
        "run": record.id,
        "path": str(record.path),
        "status": record.status,
        "seed": record.seed,
        "started": _when(record.started),
        "finished": _when(record.finished),
        "duration": _duration(record.duration_s),
        "git commit": record.git_commit,
    }
    if record.error:
        header["error"] = record.error
    if record.status == "running" and record.owner:
        header["process"] = f"pid {record.owner['pid']} on {record.owner['host']}"
    if record.status != "completed":
        header["units done"] = len(Units(record.path).keys())
    if record.status in ("died", "interrupted"):
        header["resume"] = f"thresher {record.study} --resume {record.id}"
    sections = [_block(None, header),
                _block("config", flatten(record.config)),
                _block("metrics", flatten(record.metrics))]
    if summary is not None and summary.get("versions"):
        sections.append(_block("versions", summary["versions"]))
    results = read_results(record.path)
    if results is not None:
        sections.append("results\n" + results.rstrip("\n"))
    return "\n\n".join(sections)


def runs_compare(store: RunStore, refs: Sequence[str]) -> str:
    """Runs side by side: the config keys that differ between them, then every metric."""
    if not refs:
        raise ValueError("runs compare needs at least one run reference")
    records = [store.get(ref) for ref in refs]
    configs = [flatten(r.config) for r in records]
    metrics = [flatten(r.metrics) for r in records]
    rows: list[list[Any]] = [["status", *(r.status for r in records)],
                             ["seed", *(r.seed for r in records)]]
    config_keys = list(dict.fromkeys(k for c in configs for k in c))
    differing = [k for k in config_keys
                 if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1]
    rows += [[f"config.{k}", *(_short(c.get(k)) for c in configs)] for k in differing]
    metric_keys = list(dict.fromkeys(k for m in metrics for k in m))
    rows += [[k, *(_short(m.get(k)) for m in metrics)] for k in metric_keys]
    table = format_table(rows, headers=["", *(r.id for r in records)], float_format=".6g")
    if not differing and len(records) > 1:
        table += "\n\n(configs are identical)"
    return table


def runs_delete(store: RunStore, refs: Sequence[str], force: bool = False) -> str:
    """Remove runs: folder and index row together. All references are resolved first, so a
    typo deletes nothing."""
    records = [store.get(ref) for ref in refs]
    for record in records:
        store.delete(record, force=force)
    return "\n".join(f"deleted {r.id}" for r in records)


def runs_gc(store: RunStore, statuses: tuple[str, ...] = (), dry_run: bool = False) -> str:
    removed = store.gc(statuses, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    lines = [f"{verb} {len(items)} {what}" + (f": {', '.join(items)}" if items else "")
             for what, items in removed.items()]
    return "\n".join(lines)


def runs_reindex(store: RunStore) -> str:
    return f"indexed {store.reindex()} runs in {store.db_path}"


def sweep_table(summary: dict[str, Any], max_metrics: int = 3) -> str:
    """A sweep's cells by grid point: status counts, then mean ± 95% CI over seeds of the first
    few metrics."""
    counts = ", ".join(f"{n} {status}" for status, n in sorted(summary["counts"].items()))
    rows = []
    for point in summary["points"]:
        statuses = [r["status"] for r in summary["runs"] if r["id"] in point["runs"]]
        row: dict[str, Any] = {**point["params"],
                               "done": f"{statuses.count('completed')}/{len(statuses)}"}
        for key, stats in list(point["metrics"].items())[:max_metrics]:
            ci = "n/a" if stats["n"] < 2 else f"{stats['ci95']:.4g}"
            row[key] = f"{stats['mean']:.4g} ± {ci}"
        rows.append(row)
    return f"sweep {summary['name']} ({summary['study']}): {counts}\n" + format_table(rows)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _short(value: Any, width: int = 60) -> Any:
    """Numbers and short strings as they are; long lists (e.g. curves) cut to ``width``."""
    if value is None or _is_number(value) or isinstance(value, bool):
        return value
    text = value if isinstance(value, str) else json.dumps(value)
    if "\n" in text:  # a multi-line value shows its first line
        text = f"{text.splitlines()[0]} ... ({len(text.splitlines())} lines)"
    return text if len(text) <= width else text[: width - 3] + "..."


def _block(title: str | None, items: Mapping[str, Any]) -> str:
    indent = "" if title is None else "  "
    width = max((len(k) for k in items), default=0)
    lines = [] if title is None else [title]
    for key, value in items.items():
        shown = f"{value:.6g}" if isinstance(value, float) else _short(value, width=100)
        lines.append(f"{indent}{key.ljust(width)}  {'-' if shown is None else shown}")
    if not items:
        lines.append(f"{indent}(none)")
    return "\n".join(lines)


def _when(iso: str | None) -> str:
    """ISO timestamp -> "2024-05-01 12:30:05" (UTC), short enough for a table."""
    if not iso:
        return "-"
    return iso.replace("T", " ").removesuffix("+00:00")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
