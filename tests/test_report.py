"""`thresher report` over a store of real runs of every study plus hand-made sweeps: the page's
tables, plots and config differences read back from the HTML, the Markdown variant, the errors,
and the page as a real headless browser renders it."""

import argparse
import base64
import json
import math
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

import thresher
from thresher.cli import main
from thresher.runs.publish import add_report_arguments, report_command, text_tables
from thresher.runs.report import format_table
from thresher.runs.store import RunStore

CHROMIUM = shutil.which("chromium")
PNG = b"\x89PNG\r\n\x1a\n"
DATA_URI = "data:image/png;base64,"
# the hand-made sweep: accuracy per budget and seed; seed 2 of budget 800 failed
ACCURACY = {200: {0: 0.90, 1: 0.92, 2: 0.94}, 400: {0: 0.80, 1: 0.83, 2: 0.84},
            800: {0: 0.85, 1: 0.90}}
LOSS = {400: {0: 1.0, 1: 1.2, 2: 1.1}, 800: {0: 0.9, 1: 1.0}}  # not measured at budget 200


class Page(HTMLParser):
    """Tables (rows of cell texts, header rows included), images, headings and text of a page."""

    def __init__(self, text: str):
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.headings: list[tuple[str, str]] = []
        self.tags: set[str] = set()
        self.text: list[str] = []
        self._cell: list[str] | None = None
        self._heading: str | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(dict(attrs)["src"])
        elif tag == "a":
            self.links.append(dict(attrs)["href"])
        elif tag in ("h1", "h2", "h3"):
            self._heading = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None
        elif tag in ("h1", "h2", "h3"):
            self.headings.append((tag, self._heading))
            self._heading = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)
        if self._heading is not None:
            self._heading += data

    def h(self, tag: str) -> list[str]:
        return [text for t, text in self.headings if t == tag]

    def table(self, first_header: str, second_header: str | None = None) -> list[list[list[str]]]:
        return [t for t in self.tables if t and t[0][0] == first_header
                and (second_header is None or t[0][1] == second_header)]


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def sweep_run(params: dict, seed: int, status: str, metrics: dict) -> dict:
    return {"id": f"active/budgets-{params['budget']}-s{seed}", "key": f"k{params['budget']}{seed}",
            "params": params, "seed": seed, "status": status, "metrics": metrics}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    store = ["--runs-dir", str(root)]
    for argv in (["train", "--name", "t1", "--epochs", "2", "--runs", "2"],
                 ["train", "--name", "t2", "--epochs", "3", "--runs", "2"],
                 ["active", "--name", "a1", "--datasets", "digits", "--budget", "200", "--runs",
                  "2", "--epochs", "3", "--methods", "margin", "random"],
                 ["continual", "--name", "c1", "--dataset", "digits", "--lite"],
                 ["robustness", "--name", "r1", "--run", "train/t1", "--corruptions",
                  "gaussian_noise", "--severities", "1", "3"]):
        assert main(["-q", *argv, *store]) == 0
    # the runs of sweep "budgets", as a sweep's driver records them
    sweep_runs, points = [], []
    for budget in (200, 400, 800):
        ids = []
        for seed in (0, 1, 2):
            metrics = {"accuracy": {"digits": {"margin": ACCURACY[budget][seed]}}} \
                if seed in ACCURACY[budget] else {}
            if seed in LOSS.get(budget, {}):
                metrics["loss"] = LOSS[budget][seed]
            status = "completed" if metrics else "failed"
            record = sweep_run({"budget": budget}, seed, status, metrics)
            sweep_runs.append(record)
            ids.append(record["id"])
            run = RunStore(root).start("active", {"seed": seed, "budget": budget},
                                       name=record["id"].split("/")[1], sweep="budgets")
            if status == "failed":
                with pytest.raises(RuntimeError), run:
                    raise RuntimeError("out of memory")
            else:
                with run:
                    run.metrics = metrics
        points.append({"params": {"budget": budget}, "runs": ids, "seeds": [0, 1, 2],
                       "metrics": {}})  # the report pairs seeds from the runs themselves
    write_sweep(root, {"name": "budgets", "study": "active", "grid": {"budget": [200, 400, 800]},
                       "seeds": [0, 1, 2], "base": {"note": "<i>x</i> & y", "fit": {"epochs": 3}},
                       "counts": {"completed": 8, "failed": 1, "pending": 0},
                       "runs": sweep_runs, "points": points})
    lone = sweep_run({"budget": 50}, 0, "completed", {"accuracy": 0.5})
    write_sweep(root, {"name": "tiny", "study": "active", "grid": {"budget": [50]}, "seeds": [0],
                       "base": {}, "counts": {"completed": 1}, "runs": [lone],
                       "points": [{"params": {"budget": 50}, "runs": [lone["id"]], "seeds": [0],
                                   "metrics": {}}]})
    return root


def write_sweep(root: Path, summary: dict) -> None:
    folder = root / "sweeps" / summary["name"]
    folder.mkdir(parents=True)
    (folder / "sweep_summary.json").write_text(json.dumps(summary))


def store_pngs(root: Path) -> dict[bytes, Path]:
    return {p.read_bytes(): p for p in root.glob("*/*/*.png")}


@pytest.fixture(scope="module")
def html_page(runs, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("page") / "report.html"
    return out, report_command(str(runs), None, None, str(out), "html")


def test_html_page_holds_every_study_its_tables_plots_and_provenance(runs, html_page):
    out, message = html_page
    assert message == f"wrote {out} (4 studies, 5 runs, 3 figures, 2 sweeps)"
    text = out.read_text()
    page = Page(text)
    assert page.h("h2") == ["train", "active", "continual", "robustness", "sweeps"]
    shown = [h for h in page.h("h3") if "/" in h]
    assert shown == ["train/t2", "train/t1", "active/a1", "continual/c1", "robustness/r1"]
    # each run's results.txt as a real table, cell for cell
    for run_id in shown:
        results = (runs / run_id / "results.txt").read_text()
        for table in (b for b in text_tables(results) if hasattr(b, "rows")):
            assert [table.headers, *table.rows] in page.tables, run_id
    t2, t1, a1 = page.table("method", "test accuracy (%) (mean ± 95% CI)")
    assert t2[1][0] == t1[1][0] == "mlp on digits" and t2[1][2] == t1[1][2] == "2"
    assert a1[0][-2:] == ["Δ vs random", "p (paired t)"]
    assert [row[0] for row in a1[1:]] == ["margin", "random"]
    assert [row[0] for row in page.table("corruption")[0][1:]] == ["gaussian_noise", "mean"]
    assert len(page.table("method", "average accuracy (%) (mean ± 95% CI)")) == 1
    assert len(page.table("method", "incremental acc (%)")) == 1
    # only the key that differs between the two train runs, newest first
    assert page.table("run")[0] == [["run", "fit.epochs"], ["t2", "3"], ["t1", "2"]]
    # every plot of the store, embedded byte for byte
    pngs = store_pngs(runs)
    assert len(pngs) == 3 and len(page.images) == 3
    for src in page.images:
        assert src.startswith(DATA_URI)
        data = base64.b64decode(src[len(DATA_URI):], validate=True)
        assert data in pngs and min(png_size(data)) > 0
    body = " ".join(" ".join(page.text).split())
    assert "seeds 0, 1" in body and "git " in body
    version = thresher.__version__
    assert f"by thresher {version}" in body and "versions: python " in body
    assert f"thresher {version}, torch " in body
    assert f"from the store {runs.resolve()}" in body
    assert "9 runs made by sweeps: see the sweep tables" in body
    # one file: nothing fetched, nothing run, every text escaped
    assert page.tags.isdisjoint({"script", "link", "iframe", "object", "embed"})
    assert page.links and all(link.startswith("#") for link in page.links)
    assert "<i>" not in text and "base note=&lt;i&gt;x&lt;/i&gt; &amp; y, fit.epochs=3" in text


def test_sweep_table_reports_each_grid_point_and_a_paired_test_by_seed(html_page):
    page = Page(html_page[0].read_text())
    assert page.h("h3")[-2:] == ["sweep budgets", "sweep tiny"]
    (budgets,) = [t for t in page.tables if t[0][0] == "" and t[0][1:] == [
        "accuracy.digits.margin", "loss"]]
    assert budgets[1] == ["budget", "n", *["mean", "std", "95% CI", "p"] * 2]
    rows = {row[0]: row[1:] for row in budgets[2:]}
    assert list(rows) == ["200", "400", "800"]
    t975_df2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)  # closed form of the t quantile for 2 df
    assert rows["200"] == ["3", "0.92", "0.02", f"{t975_df2 * 0.02 / math.sqrt(3):.4g}", "ref",
                           "-", "-", "-", "-"]
    # 400 vs 200 over seeds 0-2: differences -0.10, -0.09, -0.10 -> t = -29 on 2 df
    t = 29.0
    assert rows["400"][0] == "3" and rows["400"][1] == f"{(0.80 + 0.83 + 0.84) / 3:.4g}"
    assert rows["400"][4] == f"{1 - t / math.sqrt(2 + t * t):.3f}" == "0.001"
    assert rows["400"][8] == "ref"  # the first grid point that measured the loss
    # 800 has seeds 0 and 1 only: paired over those (1 df, a Cauchy tail)
    assert rows["800"][0] == "2" and rows["800"][1] == "0.875"
    assert rows["800"][4] == f"{1 - 2 / math.pi * math.atan(0.035 / 0.015):.3f}"  # -.05, -.02
    assert rows["800"][8] == f"{1 - 2 / math.pi * math.atan(3.0):.3f}"  # loss: -0.1, -0.2
    body = " ".join(" ".join(page.text).split())
    assert "runs: completed 8, failed 1, pending 0" in body
    assert "grid budget = 200, 400, 800" in body


def test_study_and_sweep_filters(runs, tmp_path):
    out = tmp_path / "active.html"
    assert report_command(str(runs), "active", None, str(out), "html") == \
        f"wrote {out} (1 study, 1 run, 1 figure, 2 sweeps)"
    page = Page(out.read_text())
    assert page.h("h2") == ["active", "sweeps"]
    assert report_command(str(runs), None, "budgets", str(out), "html") == \
        f"wrote {out} (1 study, 8 runs, 0 figures, 1 sweep)"
    page = Page(out.read_text())
    runs_shown = [h for h in page.h("h3") if h.startswith("active/")]
    assert len(runs_shown) == 8 and "active/a1" not in runs_shown
    assert page.table("run", "status")[0][1][:2] == ["active/budgets-800-s2", "failed"]
    assert page.h("h3")[-1] == "sweep budgets" and "sweep tiny" not in page.h("h3")


def test_markdown_links_plots_written_beside_it(runs, tmp_path, monkeypatch):
    parser = argparse.ArgumentParser()
    add_report_arguments(parser)
    monkeypatch.chdir(tmp_path)  # no --out: report.md in the working folder
    args = parser.parse_args(["--runs-dir", str(runs), "--format", "md"])
    out = Path("report.md")
    message = report_command(**vars(args))
    assert message == f"wrote {out} (4 studies, 5 runs, 3 figures, 2 sweeps)"
    text = out.read_text()
    assert DATA_URI not in text
    links = [line[line.index("](") + 2:-1] for line in text.splitlines() if line.startswith("![")]
    assert len(links) == 3 and all(link.startswith("report_files/") for link in links)
    pngs = store_pngs(runs)
    assert {(out.parent / link).read_bytes() for link in links} == set(pngs)
    assert "| run | fit.epochs |\n| --- | ---: |\n| t2 | 3 |\n| t1 | 2 |" in text
    assert "| corruption | s1 | s3 | mean |" in text
    assert "| budget | n | accuracy.digits.margin mean | accuracy.digits.margin std |" in text


def test_text_tables_read_format_table_back_and_keep_other_text():
    table = format_table([{"method": "a b", "acc (mean ± 95% CI)": "97.12 ± 0.31", "n": 3},
                          {"method": "c", "acc (mean ± 95% CI)": None, "n": 12}])
    blocks = text_tables(f"title line\n{table}\n  note: a  b  c\n\nafter")
    assert [type(b).__name__ for b in blocks] == ["Pre", "Table", "Pre"]
    assert blocks[0].text == "title line"
    assert blocks[1].headers == ["method", "acc (mean ± 95% CI)", "n"]
    assert blocks[1].rows == [["a b", "97.12 ± 0.31", "3"], ["c", "-", "12"]]
    assert blocks[2].text == "  note: a  b  c\n\nafter"  # text across a column gap: no row
    assert [type(b).__name__ for b in text_tables("no table here\n---x")] == ["Pre"]


@pytest.mark.parametrize("study, sweep, expected", [
    ("trian", None, "no study 'trian' in .*; did you mean 'train'\\?"),
    (None, "budget", "no sweep 'budget' in .*sweeps; did you mean 'budgets'\\? "
                     "\\(sweeps: budgets, tiny\\)"),
    ("train", "budgets", "no sweep 'budgets' of study 'train'"),
])
def test_unknown_study_or_sweep_is_refused_by_name(runs, tmp_path, study, sweep, expected):
    out = tmp_path / "r.html"
    with pytest.raises(ValueError, match=expected):
        report_command(str(runs), study, sweep, str(out), "html")
    assert not out.exists()


def test_empty_store_and_unwritable_out_are_refused(runs, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no runs or sweeps in .*empty; nothing to report"):
        report_command(str(tmp_path / "empty"), None, None, str(tmp_path / "r.html"), "html")
    with pytest.raises(ValueError, match="no runs folder"):
        report_command(str(tmp_path / "absent"), None, None, str(tmp_path / "r.html"), "html")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="cannot write the report to .*: .*file is not a folder"):
        report_command(str(runs), None, None, str(blocker / "r.html"), "html")
    with pytest.raises(ValueError, match="it is a folder"):
        report_command(str(runs), None, None, str(tmp_path), "md")
    assert not (tmp_path / "r.html").exists()


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                           f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                          timeout=90, check=True)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary")
def test_page_renders_in_a_headless_browser_with_no_broken_image(html_page, tmp_path):
    out = html_page[0]
    source = Page(out.read_text())
    dom = Page(chromium("--dump-dom", out.as_uri(), profile=tmp_path / "p").stdout)
    assert len(dom.tables) == len(source.tables) >= 9
    assert dom.images == source.images and len(source.images) == 3
    shot = tmp_path / "shot.png"
    chromium(f"--screenshot={shot}", "--window-size=1200,3000", out.as_uri(),
             profile=tmp_path / "p")
    assert png_size(shot.read_bytes()) == (1200, 3000) and shot.stat().st_size > 50_000
    # a broken image has naturalWidth 0 once the page has loaded; a test-only copy of the page
    # records each width (the report itself runs no script)
    probe = tmp_path / "probe.html"
    probe.write_text(out.read_text().replace("</body>", (
        "<script>addEventListener('load', () => document.body.dataset.widths = "
        "[...document.images].map(i => i.complete ? i.naturalWidth : -1).join(' '))</script>"
        "</body>")))
    probed = chromium("--virtual-time-budget=5000", "--dump-dom", probe.as_uri(),
                      profile=tmp_path / "p").stdout
    widths = probed.split('data-widths="')[1].split('"')[0].split()
    expected = [png_size(base64.b64decode(src[len(DATA_URI):]))[0] for src in source.images]
    assert [int(w) for w in widths] == expected and min(expected) > 0
