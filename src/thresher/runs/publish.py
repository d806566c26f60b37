"""``thresher report``: every study's results and every sweep on one self-contained page.

The page is assembled once as a list of blocks (headings, text, tables, figures) and rendered
as HTML (one file: inline CSS, plots as data URIs, no script, nothing fetched) or as Markdown
for pasting into a paper (plots copied into a folder beside the ``.md`` file and linked).
Result tables are the studies' own ``results.txt``, parsed back into columns so that they
render as real tables; text that is not a table is kept verbatim.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import thresher
from thresher.registry import did_you_mean
from thresher.runs.config import flatten
from thresher.runs.files import atomic_write
from thresher.runs.report import format_p, format_table, is_number_column
from thresher.runs.stats import paired_test, summarize
from thresher.runs.store import RunRecord, RunStore, read_results

__all__ = ["FORMATS", "Report", "add_report_arguments", "build_report", "read_sweeps",
           "render_html", "render_markdown", "report_command", "text_tables"]

log = logging.getLogger("thresher.runs")

FORMATS = ("html", "md")
# the baseline first, then the studies in the order the README presents them; others follow
# alphabetically
STUDY_ORDER = ("train", "active", "continual", "robustness")
SWEEPS_DIR = "sweeps"
SWEEP_SUMMARY = "sweep_summary.json"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_RULE = re.compile(r"^-+(  +-+)*$")  # the dashes under a `format_table` header


# ---------------------------------------------------------------------------------------------
# the page as blocks, whatever the format


@dataclass
class Heading:
    level: int
    text: str
    anchor: str | None = None


@dataclass
class Text:
    text: str


@dataclass
class Pre:
    text: str


@dataclass
class Table:
    """``groups`` (label, columns spanned) puts a second header row above ``headers``."""

    headers: list[str]
    rows: list[list[str]]
    groups: list[tuple[str, int]] | None = None


@dataclass
class Figure:
    path: Path
    caption: str
    name: str  # the file name the Markdown copy gets: unique within the page


@dataclass
class Contents:
    entries: list[tuple[str, str]]  # (label, anchor)


Block = Heading | Text | Pre | Table | Figure | Contents


@dataclass
class Report:
    """The page's blocks and what it holds, for the message the CLI prints."""

    blocks: list[Block]
    studies: int
    runs: int
    sweeps: int
    figures: int = field(init=False)

    def __post_init__(self) -> None:
        self.figures = sum(isinstance(b, Figure) for b in self.blocks)


# ---------------------------------------------------------------------------------------------
# results.txt back into columns


def text_tables(text: str) -> list[Pre | Table]:
    """``results.txt`` as tables and verbatim text, in order.

    A table is a header line over a rule of dashes (what `format_table` writes); the rule's
    runs of dashes are the columns, and the table ends at a blank line or at a line whose text
    crosses a column gap. Everything else (titles, notes) stays as written.
    """
    lines = text.rstrip("\n").splitlines()
    blocks: list[Pre | Table] = []
    loose: list[str] = []
    i = 0
    while i < len(lines):
        spans = _rule_spans(lines[i + 1]) if i + 1 < len(lines) else None
        header = _cells(lines[i], spans) if spans and lines[i].strip() else None
        if header is None:
            loose.append(lines[i])
            i += 1
            continue
        rows, i = [], i + 2
        while i < len(lines) and lines[i].strip() and (row := _cells(lines[i], spans)):
            rows.append(row)
            i += 1
        if "\n".join(loose).strip():
            blocks.append(Pre("\n".join(loose).strip("\n")))
        loose = []
        blocks.append(Table(header, rows))
    if "\n".join(loose).strip():
        blocks.append(Pre("\n".join(loose).strip("\n")))
    return blocks


def _rule_spans(line: str) -> list[tuple[int, int]] | None:
    line = line.rstrip()
    if not _RULE.match(line):
        return None
    return [m.span() for m in re.finditer(r"-+", line)]


def _cells(line: str, spans: list[tuple[int, int]]) -> list[str] | None:
    """The line cut at the columns, None when text runs over a gap or past the last column."""
    line = line.rstrip()
    if len(line) > spans[-1][1]:
        return None
    gaps = [(end, start) for (_, end), (start, _) in zip(spans, spans[1:])]
    if any(line[a:b].strip() for a, b in gaps):
        return None
    return [line[a:b].strip() for a, b in spans]


# ---------------------------------------------------------------------------------------------
# sweeps


def read_sweeps(root: Path) -> dict[str, dict[str, Any]]:
    """Every ``<root>/sweeps/<name>/sweep_summary.json`` by name; an unreadable one is left
    out with a warning, so one damaged file does not hide the rest of the results."""
    sweeps: dict[str, dict[str, Any]] = {}
    folder = Path(root) / SWEEPS_DIR
    if not folder.is_dir():
        return sweeps
    for path in sorted(folder.glob(f"*/{SWEEP_SUMMARY}")):
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            log.warning("leaving sweep %s out of the report: cannot read %s (%s)",
                        path.parent.name, path, e)
            continue
        if isinstance(summary, dict):
            sweeps[str(summary.get("name") or path.parent.name)] = summary
    return sweeps


def _sweep_blocks(name: str, sweep: Mapping[str, Any]) -> list[Block]:
    blocks: list[Block] = [Heading(3, f"sweep {name}", _anchor("sweep", name))]
    grid = sweep.get("grid") or {}
    facts = [f"study {sweep.get('study', '?')}"]
    if grid:
        facts.append("grid " + "; ".join(
            f"{k} = {', '.join(map(_value, v if isinstance(v, list) else [v]))}"
            for k, v in grid.items()))
    if sweep.get("seeds"):
        facts.append("seeds " + _seed_text(list(sweep["seeds"])))
    if sweep.get("base"):
        facts.append("base " + ", ".join(f"{k}={_value(v)}"
                                         for k, v in flatten(sweep["base"]).items()))
    blocks.append(Text(" · ".join(facts)))
    counts = sweep.get("counts") or {}
    if counts:
        blocks.append(Text("runs: " + ", ".join(f"{k} {v}" for k, v in counts.items())))
    points = sweep.get("points") or []
    if not points:
        blocks.append(Text("no grid points recorded yet"))
        return blocks
    blocks.append(_sweep_table(sweep, list(grid)))
    blocks.append(Text("n: seeds with a completed run. p: paired t-test by seed against the "
                       "first grid point with that metric (marked ref), over the seeds both "
                       "have."))
    return blocks


def _sweep_table(sweep: Mapping[str, Any], grid_keys: list[str]) -> Table:
    """One row per grid point: its params, n, and per metric mean, std, 95% CI and p."""
    runs = {r.get("id"): r for r in sweep.get("runs") or []}
    points = sweep["points"]
    keys = list(dict.fromkeys([*grid_keys, *(k for p in points for k in p.get("params", {}))]))
    by_seed: list[dict[str, dict[Any, float]]] = []  # per point: metric -> seed -> value
    seeds_done: list[set] = []
    for point in points:
        values: dict[str, dict[Any, float]] = {}
        done = set()
        for run_id in point.get("runs") or []:
            run = runs.get(run_id)
            if run is None or run.get("status") != "completed":
                continue
            done.add(run.get("seed"))
            for key, value in flatten(run.get("metrics") or {}).items():
                if _is_number(value):
                    values.setdefault(key, {})[run.get("seed")] = float(value)
        by_seed.append(values)
        seeds_done.append(done)
    metrics = list(dict.fromkeys(k for values in by_seed for k in values))
    rows = []
    for i, (point, values) in enumerate(zip(points, by_seed)):
        params = point.get("params") or {}
        row = [_value(params[k]) if k in params else "-" for k in keys]
        row.append(str(len(seeds_done[i])))
        for metric in metrics:
            first = next(j for j, v in enumerate(by_seed) if metric in v)
            row += _metric_cells(values.get(metric), by_seed[first][metric], i == first)
        rows.append(row)
    headers = [*keys, "n", *(["mean", "std", "95% CI", "p"] * len(metrics))]
    groups = [("", len(keys) + 1), *((m, 4) for m in metrics)]
    return Table(headers, rows, groups)


def _metric_cells(values: dict[Any, float] | None, ref: dict[Any, float],
                  is_ref: bool) -> list[str]:
    if not values:
        return ["-"] * 4
    s = summarize(list(values.values()))
    if is_ref:
        p = "ref"
    else:
        shared = [seed for seed in values if seed in ref]
        p = format_p(paired_test([values[k] for k in shared], [ref[k] for k in shared]).p) \
            if shared else "-"
    return [_number(s.mean), _number(s.std), _number(s.ci95), p]


# ---------------------------------------------------------------------------------------------
# studies and runs


def _study_blocks(study: str, records: list[RunRecord], in_sweeps: int) -> list[Block]:
    completed = [r for r in records if r.status == "completed"]
    others = [r for r in records if r.status != "completed"]
    blocks: list[Block] = [Heading(2, study, _anchor("study", study))]
    note = f"{_plural(len(completed), 'completed run')}, newest first"
    if others:
        note += f"; {len(others)} not completed (listed below)"
    if in_sweeps:
        note += f"; {_plural(in_sweeps, 'run')} made by sweeps: see the sweep tables"
    blocks.append(Text(note))
    if len(completed) > 1:
        blocks += _config_differences(completed)
    if others:
        blocks.append(Heading(3, "runs not completed"))
        blocks.append(Table(["run", "status", "started", "error"],
                            [[r.id, r.status, _when(r.started), r.error or "-"] for r in others]))
    for record in completed:
        blocks += _run_blocks(record)
    return blocks


def _config_differences(records: list[RunRecord]) -> list[Block]:
    """The config keys whose values are not the same in every run (absent counts as a value)."""
    configs = [flatten(r.config) for r in records]
    keys = list(dict.fromkeys(k for c in configs for k in c))
    differing = [k for k in keys if len({(k in c, _value(c.get(k))) for c in configs}) > 1]
    if not differing:
        return [Text("the runs share one config")]
    rows = [[r.name, *(_value(c[k]) if k in c else "-" for k in differing)]
            for r, c in zip(records, configs)]
    return [Heading(3, "config keys that differ"), Table(["run", *differing], rows)]


def _run_blocks(record: RunRecord) -> list[Block]:
    summary = record.summary() or {}
    facts = [f"status {record.status}", f"seeds {_seed_text(_seeds(record))}",
             f"started {_when(record.started)}"]
    if record.duration_s is not None:
        facts.append(f"{record.duration_s:.1f} s")
    if record.sweep:
        facts.append(f"sweep {record.sweep}")
    facts.append(f"git {record.git_commit or 'unknown'}")
    blocks: list[Block] = [Heading(3, record.id, _anchor("run", record.id)),
                           Text(" · ".join(facts))]
    versions = summary.get("versions") or {}
    if versions:
        blocks.append(Text("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()
                                                    if v is not None)))
    results = read_results(record.path)
    blocks += text_tables(results) if results else [Text("no result table (results.txt)")]
    for png in sorted(record.path.glob("*.png")):
        if _is_png(png):
            blocks.append(Figure(png, f"{record.id}: {png.name}",
                                 f"{record.study}-{record.name}-{png.name}"))
        else:
            blocks.append(Text(f"{png.name} is not a readable PNG file; left out"))
    return blocks


def _seeds(record: RunRecord) -> list[int]:
    """The seeds a study repeated its work over: ``seed .. seed + runs - 1`` (`for_seeds`)."""
    seed = record.config.get("seed", record.seed)
    runs = record.config.get("runs", 1)
    if not isinstance(seed, int):
        return []
    return list(range(seed, seed + runs)) if isinstance(runs, int) and runs > 0 else [seed]


def _seed_text(seeds: Sequence[Any]) -> str:
    if not seeds:
        return "unknown"
    if len(seeds) > 5 and list(seeds) == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}-{seeds[-1]} ({len(seeds)})"
    return ", ".join(map(str, seeds))


# ---------------------------------------------------------------------------------------------
# assembling the page


def build_report(store: RunStore, study: str | None = None, sweep: str | None = None) -> Report:
    """The page for ``store``: one section per study (its completed runs in full, newest
    first), then one per sweep. Runs made by a sweep appear in their sweep's table, and in
    full only when ``sweep`` names it. ValueError for a study or sweep the store does not
    hold, or nothing to report."""
    records = store.list()
    sweeps = read_sweeps(store.root)
    if not records and not sweeps:
        raise ValueError(f"no runs or sweeps in {store.root}; nothing to report")
    if study is not None:
        known = sorted({r.study for r in records} |
                       {s["study"] for s in sweeps.values() if s.get("study")})
        if study not in known:
            close = did_you_mean(study, known)
            hint = f"; did you mean {close!r}?" if close else ""
            raise ValueError(f"no study {study!r} in {store.root}{hint} (studies with runs: "
                             f"{', '.join(known) or 'none'})")
        records = [r for r in records if r.study == study]
        sweeps = {k: v for k, v in sweeps.items() if v.get("study") == study}
    if sweep is not None:
        if sweep not in sweeps:
            names = list(read_sweeps(store.root))
            close = did_you_mean(sweep, names)
            hint = f"; did you mean {close!r}?" if close else ""
            where = f" of study {study!r}" if study is not None else ""
            raise ValueError(f"no sweep {sweep!r}{where} in {store.root / SWEEPS_DIR}{hint} "
                             f"(sweeps: {', '.join(names) or 'none'})")
        records = [r for r in records if r.sweep == sweep]
        sweeps = {sweep: sweeps[sweep]}
    by_study: dict[str, list[RunRecord]] = {}
    in_sweeps: dict[str, int] = {}
    for record in records:
        if record.sweep is not None and sweep is None:
            in_sweeps[record.study] = in_sweeps.get(record.study, 0) + 1
        else:
            by_study.setdefault(record.study, []).append(record)
    order = sorted(by_study, key=lambda s: (STUDY_ORDER.index(s) if s in STUDY_ORDER
                                            else len(STUDY_ORDER), s))
    if not order and not sweeps:
        raise ValueError(f"nothing to report in {store.root} for "
                         f"{_filters(study, sweep) or 'this store'}")
    blocks: list[Block] = [Heading(1, "Thresher results"), Text(_made_line(store, study, sweep))]
    contents = [(s, _anchor("study", s)) for s in order]
    contents += [(f"sweep {name}", _anchor("sweep", name)) for name in sweeps]
    blocks.append(Contents(contents))
    for name in order:
        blocks += _study_blocks(name, by_study[name], in_sweeps.get(name, 0))
    if sweeps:
        blocks.append(Heading(2, "sweeps", "sweeps"))
        for name, summary in sweeps.items():
            blocks += _sweep_blocks(name, summary)
    shown = sum(r.status == "completed" for rs in by_study.values() for r in rs)
    return Report(blocks, studies=len(order), runs=shown, sweeps=len(sweeps))


def _made_line(store: RunStore, study: str | None, sweep: str | None) -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    line = (f"made {when} by thresher {thresher.__version__} from the store "
            f"{store.root.resolve()}")
    filters = _filters(study, sweep)
    return line + (f" ({filters})" if filters else "")


def _filters(study: str | None, sweep: str | None) -> str:
    return ", ".join(f"{k} {v}" for k, v in (("study", study), ("sweep", sweep)) if v)


# ---------------------------------------------------------------------------------------------
# rendering

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em;
       color: #222; line-height: 1.4; }
h1 { border-bottom: 2px solid #444; } h2 { border-bottom: 1px solid #aaa; margin-top: 2em; }
h3 { margin-top: 1.5em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; white-space: nowrap; }
th { background: #eee; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f6f6; padding: 0.5em; overflow-x: auto; }
figure { margin: 0.5em 0; } img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; color: #555; }
"""


def render_html(report: Report) -> str:
    """One HTML file: inline CSS, plots embedded as base64 data URIs, every text escaped."""
    title = next((b.text for b in report.blocks if isinstance(b, Heading)), "thresher")
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{html.escape(title)}</title>", f"<style>{_CSS}</style>", "</head>",
             "<body>"]
    parts += [_html_block(b) for b in report.blocks]
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def _html_block(block: Block) -> str:
    e = html.escape
    if isinstance(block, Heading):
        anchor = f' id="{e(block.anchor)}"' if block.anchor else ""
        return f"<h{block.level}{anchor}>{e(block.text)}</h{block.level}>"
    if isinstance(block, Text):
        return f"<p>{e(block.text)}</p>"
    if isinstance(block, Pre):
        return f"<pre>{e(block.text)}</pre>"
    if isinstance(block, Contents):
        items = "".join(f'<li><a href="#{e(a)}">{e(label)}</a></li>'
                        for label, a in block.entries)
        return f"<nav><ul>{items}</ul></nav>"
    if isinstance(block, Figure):
        data = base64.b64encode(block.path.read_bytes()).decode("ascii")
        return (f'<figure><img src="data:image/png;base64,{data}" alt="{e(block.caption)}">'
                f"<figcaption>{e(block.caption)}</figcaption></figure>")
    head = ""
    if block.groups:
        head = "<tr>" + "".join(f'<th colspan="{n}">{e(label)}</th>'
                                for label, n in block.groups) + "</tr>"
    head += "<tr>" + "".join(f"<th>{e(h)}</th>" for h in block.headers) + "</tr>"
    numeric = [_is_number_column(column) for column in zip(*block.rows)]
    body = "".join("<tr>" + "".join(f'<td class="num">{e(c)}</td>' if right
                                    else f"<td>{e(c)}</td>" for c, right in zip(row, numeric))
                   + "</tr>" for row in block.rows)
    return f'<div class="scroll"><table><thead>{head}</thead><tbody>{body}</tbody></table></div>'


def render_markdown(report: Report, images: str) -> str:
    """Markdown whose figures link to ``images/<name>`` (the caller copies the files there)."""
    out = []
    for block in report.blocks:
        if isinstance(block, Heading):
            out.append("#" * block.level + " " + block.text)
        elif isinstance(block, Text):
            out.append(block.text)
        elif isinstance(block, Pre):
            out.append("```text\n" + block.text + "\n```")
        elif isinstance(block, Contents):
            out.append("\n".join(f"- {label}" for label, _ in block.entries))
        elif isinstance(block, Figure):
            caption = block.caption.replace("[", "(").replace("]", ")")
            out.append(f"![{caption}]({quote(images)}/{quote(block.name)})")
        else:
            headers = block.headers
            if block.groups:
                labels = [label for label, n in block.groups for _ in range(n)]
                headers = [f"{g} {h}".strip() for g, h in zip(labels, headers)]
            out.append(format_table(block.rows, headers, markdown=True))
    return "\n\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# the command


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``thresher report`` flags; the handler calls `report_command` with them."""
    parser.add_argument("--runs-dir", help="results root (default: $THRESHER_RUNS, else ./runs)")
    parser.add_argument("--study", help="only this study's runs (and its sweeps)")
    parser.add_argument("--sweep", help="only this sweep: its table and its runs in full")
    parser.add_argument("--out", help="the file to write (default: report.html, or report.md "
                        "with --format md)")
    parser.add_argument("--format", dest="fmt", choices=FORMATS, default="html",
                        help="html: one self-contained file (default); md: Markdown with the "
                        "plots in a folder beside it")


def report_command(runs_dir: str | None, study: str | None, sweep: str | None,
                   out: str | None, fmt: str) -> str:
    """Write the report; returns the line the CLI prints. ValueError for bad input."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    path = Path(out if out is not None else f"report.{fmt}")
    _check_out(path)
    report = build_report(RunStore(runs_dir), study, sweep)
    try:
        if fmt == "html":
            atomic_write(path, render_html(report))
        else:
            images = path.parent / f"{path.stem}_files"
            figures = [b for b in report.blocks if isinstance(b, Figure)]
            if figures:
                images.mkdir(exist_ok=True)
            for figure in figures:
                atomic_write(images / figure.name, figure.path.read_bytes())
            atomic_write(path, render_markdown(report, images.name))
    except OSError as e:
        raise ValueError(f"cannot write {path}: {e.strerror or e}") from None
    counts = [_plural(report.studies, "study", "studies"), _plural(report.runs, "run"),
              _plural(report.figures, "figure")]
    if report.sweeps:
        counts.append(_plural(report.sweeps, "sweep"))
    return f"wrote {path} ({', '.join(counts)})"


def _check_out(path: Path) -> None:
    """ValueError before any work when ``path`` cannot be written."""
    parent = path.parent
    if path.is_dir():
        raise ValueError(f"cannot write the report to {path}: it is a folder")
    if not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist"
        raise ValueError(f"cannot write the report to {path}: {parent} {what}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write the report to {path}: {parent} is not writable")


# ---------------------------------------------------------------------------------------------
# small formatting helpers


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def _anchor(kind: str, name: str) -> str:
    return f"{kind}-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def _when(iso: str | None) -> str:
    if not iso:
        return "-"
    try:
        when = datetime.fromisoformat(iso).astimezone(timezone.utc)
    except ValueError:
        return iso
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value)


def _number(x: float) -> str:
    return "n/a" if math.isnan(x) else format(x, ".4g")


def _value(value: Any) -> str:
    """Config and param values as YAML would show them: lists and dicts as compact JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, separators=(", ", ": "))
    return str(value)


def _is_number_column(cells: Sequence[str]) -> bool:
    """Right-align as `format_table` does; "ref" marks a paired test's reference row."""
    return is_number_column(cells, frozenset({"", "-", "n/a", "ref"}))


def _is_png(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(8) == PNG_SIGNATURE
    except OSError:
        return False
