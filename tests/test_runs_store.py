from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import thresher
from thresher.runs.commands import runs_compare, runs_list, runs_show
from thresher.runs.store import (
    DIFF_FILE,
    RunLookupError,
    RunStore,
    StoreError,
    atomic_path,
    atomic_write,
    git_commit,
)

SEAM_FIELDS = {"study", "name", "config", "metrics", "seed", "versions", "git_commit",
               "started", "finished", "duration_s", "status", "error"}


@dataclass
class Fit:
    lr: float = 0.1


@dataclass
class Cfg:
    seed: int = 3
    hidden: tuple[int, ...] = (8, 4)
    fit: Fit = field(default_factory=Fit)


def db_row(store: RunStore, run_id: str) -> dict:
    con = sqlite3.connect(store.db_path)
    con.row_factory = sqlite3.Row
    try:
        return dict(con.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone())
    finally:
        con.close()


def summary_of(run) -> dict:
    return json.loads(run.path("summary.json").read_text())


def test_atomic_write_replaces_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    atomic_write(target, "first")
    atomic_write(target, b"second")
    assert target.read_text() == "second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.txt"]


def test_failed_write_keeps_old_file_and_no_temp(tmp_path):
    target = tmp_path / "model.pt"
    atomic_write(target, "old")
    with pytest.raises(RuntimeError, match="crash"):
        with atomic_path(target) as tmp:
            tmp.write_text("half writ")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_completed_run_has_seam_fields_and_db_row(tmp_path):
    store = RunStore(tmp_path)
    with store.start("active", Cfg(), name="demo", device="cpu") as run:
        assert (run.dir / "config.yaml").is_file()  # written before any work
        assert db_row(store, "active/demo")["status"] == "running"
        assert summary_of(run)["status"] == "running"  # the folder alone tells what it is
        run.metrics = {"acc": np.float32(0.75), "curve": torch.tensor([1.0, 2.0]), "n": np.int64(3)}
    assert run.dir == tmp_path / "active" / "demo"
    summary = summary_of(run)
    assert SEAM_FIELDS <= set(summary)
    assert summary["status"] == "completed" and summary["error"] is None
    assert summary["seed"] == 3  # taken from the config
    assert summary["config"] == {"seed": 3, "hidden": [8, 4], "fit": {"lr": 0.1}}
    assert summary["metrics"] == {"acc": 0.75, "curve": [1.0, 2.0], "n": 3}
    assert summary["versions"]["torch"] and summary["versions"]["numpy"]
    assert summary["versions"]["thresher"] == thresher.__version__
    assert summary["versions"]["device"] == "cpu"
    assert summary["finished"] >= summary["started"] and summary["duration_s"] >= 0
    assert yaml.safe_load(run.path("config.yaml").read_text()) == summary["config"]
    row = db_row(store, "active/demo")
    assert row["status"] == "completed" and row["seed"] == 3
    assert json.loads(row["metrics_json"])["acc"] == 0.75
    assert "path" not in row  # a run lives at <root>/<study>/<name>: the folder can move


def test_git_commit_is_real_or_none(tmp_path):
    repo = Path(thresher.__file__).resolve().parent
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True)
    store = RunStore(tmp_path)
    with store.start("s", {}) as run:
        pass
    commit = summary_of(run)["git_commit"]
    if head.returncode == 0:
        assert commit.removesuffix("-dirty") == head.stdout.strip()
        assert len(commit.removesuffix("-dirty")) == 40
    else:
        assert commit is None
    assert git_commit(tmp_path) is None  # not a git checkout


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo,
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_a_dirty_checkout_saves_its_diff_beside_the_summary(tmp_path):
    repo = tmp_path / "code"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "model.py").write_text("width = 128\n")
    git(repo, "add", "model.py")
    git(repo, "commit", "-q", "-m", "first")
    head = git(repo, "rev-parse", "HEAD")
    store = RunStore(tmp_path / "runs", repo=repo)
    with store.start("s", {}, name="clean") as run:
        pass
    assert summary_of(run)["git_commit"] == head and not run.path(DIFF_FILE).exists()

    (repo / "model.py").write_text("width = 256\n")
    (repo / "notes.txt").write_text("untracked\n")
    with store.start("s", {}, name="dirty") as run:
        pass
    assert summary_of(run)["git_commit"] == head + "-dirty"
    diff = run.path(DIFF_FILE).read_text()
    assert "-width = 128" in diff and "+width = 256" in diff and "notes.txt" not in diff
    (repo / "model.py").write_text("width = 128\n")  # the diff is the code as the run began
    assert git(repo, "apply", "--check", str(run.path(DIFF_FILE))) == ""


def test_git_commit_without_git_binary(monkeypatch):
    monkeypatch.setenv("PATH", "")
    assert git_commit() is None


def test_exception_is_recorded_as_failed_and_reraised(tmp_path):
    store = RunStore(tmp_path)
    with pytest.raises(ValueError, match="diverged"):
        with store.start("s", {"seed": 1}, name="bad") as run:
            run.metrics["partial"] = 1
            raise ValueError("loss diverged")
    summary = summary_of(run)
    assert summary["status"] == "failed"
    assert summary["error"] == "ValueError: loss diverged"
    assert summary["metrics"] == {"partial": 1}
    assert "loss diverged" in run.path("traceback.txt").read_text()
    row = db_row(store, "s/bad")
    assert row["status"] == "failed" and row["error"] == "ValueError: loss diverged"


def test_keyboard_interrupt_is_recorded_and_reraised(tmp_path):
    store = RunStore(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with store.start("s", {}, name="stopped") as run:
            raise KeyboardInterrupt
    assert summary_of(run)["status"] == "interrupted"
    assert db_row(store, "s/stopped")["status"] == "interrupted"


def test_a_taken_name_resumes_the_same_config_and_refuses_another(tmp_path):
    store = RunStore(tmp_path)
    with store.start("s", {"lr": 0.1}, name="same") as run:
        run.unit("seed0", lambda: {"acc": 0.5})
    calls = []
    with store.start("s", {"lr": 0.1}, name="same") as again:
        value = again.unit("seed0", lambda: calls.append(1) or {"acc": 0.9})
    assert value == {"acc": 0.5} and calls == []  # read back, not recomputed
    assert again.dir == run.dir and summary_of(again)["attempt"] == 2
    with pytest.raises(StoreError, match=r"different config \(lr: 0.1 -> 0.2\)"):
        store.start("s", {"lr": 0.2}, name="same")
    assert len(store.list()) == 1


def test_default_names_are_unique_timestamps(tmp_path):
    store = RunStore(tmp_path)
    names = {store.start("s", {}).name for _ in range(5)}
    assert len(names) == 5
    assert all(len(n.split("-")) == 3 and n[:8].isdigit() for n in names)


def test_bad_names_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="plain directory name"):
        RunStore(tmp_path).start("s", {}, name="../escape")


def test_root_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("THRESHER_RUNS", str(tmp_path / "elsewhere"))
    assert RunStore().root == tmp_path / "elsewhere"
    assert RunStore(tmp_path).root == tmp_path


def test_artifacts(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with RunStore(tmp_path).start("s", {}) as run:
        fig, ax = plt.subplots()
        ax.plot([1, 2, 3])
        png = run.save_figure("plots/curve.png", fig)
        plt.close(fig)
        run.save_json("scores.json", {"x": np.arange(3)})
        run.save_torch("state.pt", {"w": torch.ones(2)})
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(run.path("scores.json").read_text()) == {"x": [0, 1, 2]}
    assert torch.equal(torch.load(run.path("state.pt"))["w"], torch.ones(2))
    leftovers = [p.name for p in run.dir.rglob(".*")]
    assert leftovers == [".lock"]  # no temporary files


def make_runs(store: RunStore) -> None:
    for name, lr, acc in [("a", 0.1, 0.9), ("b", 0.01, 0.95)]:
        with store.start("active", Cfg(fit=Fit(lr=lr)), name=name) as run:
            run.metrics = {"acc": acc, "loss": 1 - acc}
    with store.start("distill", {"k": 1}, name="a") as run:
        run.metrics = {"acc": 0.5}


def test_list_filters_and_orders_newest_first(tmp_path):
    store = RunStore(tmp_path)
    make_runs(store)
    assert [r.id for r in store.list()] == ["distill/a", "active/b", "active/a"]
    assert [r.id for r in store.list(study="active")] == ["active/b", "active/a"]
    assert [r.id for r in store.list(limit=1)] == ["distill/a"]
    assert store.list(status="failed") == []
    record = store.list(study="active")[0]
    assert record.metrics == {"acc": 0.95, "loss": pytest.approx(0.05)}
    assert record.config["fit"]["lr"] == 0.01


def test_get_by_id_name_path_and_errors(tmp_path):
    store = RunStore(tmp_path)
    make_runs(store)
    assert store.get("active/b").name == "b"
    assert store.get("b").id == "active/b"
    assert store.get(tmp_path / "active" / "b").id == "active/b"
    with pytest.raises(RunLookupError, match="ambiguous.*distill/a.*active/a"):
        store.get("a")
    with pytest.raises(RunLookupError, match="no run 'active/bb'.*did you mean 'active/b'"):
        store.get("active/bb")


def test_get_directory_from_another_store(tmp_path):
    make_runs(RunStore(tmp_path / "one"))
    record = RunStore(tmp_path / "two").get(tmp_path / "one" / "active" / "a")
    assert record.id == "active/a" and record.metrics["acc"] == 0.9


def test_a_run_whose_process_is_gone_shows_as_died(tmp_path):
    store = RunStore(tmp_path)
    alive = store.start("s", {}, name="alive")  # this process: still going
    assert store.get("alive").status == "running"
    code = ("import os, sys; from thresher.runs.store import RunStore; "
            "RunStore(sys.argv[1]).start('s', {}, name='killed'); os._exit(0)")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    assert store.get("killed").status == "died"
    assert store.get(tmp_path / "s" / "killed").status == "died"
    assert [r.id for r in store.list(status="died")] == ["s/killed"]
    assert "--resume s/killed" in runs_show(store, "killed")
    alive.finish()


def test_commands(tmp_path):
    store = RunStore(tmp_path)
    make_runs(store)
    listing = runs_list(store, study="active").splitlines()
    assert listing[0].split() == ["id", "status", "started", "duration", "acc", "loss"]
    assert listing[2].split()[:2] == ["active/b", "completed"] and "0.95" in listing[2]
    assert runs_list(store, status="failed").startswith("no runs status=failed")

    shown = runs_show(store, "active/a")
    assert "fit.lr" in shown and "acc" in shown and "python" in shown and "completed" in shown
    assert "results" not in shown  # the run saved no table
    with store.start("active", {}, name="tabled") as run:
        run.save_results("method  acc\nrandom  0.9")
    assert runs_show(store, "active/tabled").endswith("results\nmethod  acc\nrandom  0.9")

    compared = runs_compare(store, ["active/a", "active/b"]).splitlines()
    assert compared[0].split() == ["active/a", "active/b"]
    rows = {line.split()[0]: line.split()[1:] for line in compared[2:]}
    assert rows["config.fit.lr"] == ["0.1", "0.01"]
    assert "config.seed" not in rows  # identical keys are left out
    assert rows["acc"] == ["0.9", "0.95"]


WRITER = textwrap.dedent("""
    import sys
    from thresher.runs.store import RunStore
    store = RunStore(sys.argv[1])
    for i in range(25):
        with store.start("sweep", {"i": i, "worker": sys.argv[2]}) as run:
            run.metrics = {"i": i}
""")


def test_concurrent_writers_from_two_processes(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(w)],
                              stderr=subprocess.PIPE, text=True) for w in range(2)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    records = RunStore(tmp_path).list(study="sweep")
    assert len(records) == 50
    assert {r.status for r in records} == {"completed"}
    assert len({r.id for r in records}) == 50
