"""`thresher sweep`: planning, resuming, and real kills of the driver and of a worker."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from processes import CLI, wait_for
from thresher.cli import main
from thresher.runs.store import RunStore
from thresher.runs.sweep import SUMMARY_FILE, parse_grid, plan
from thresher.studies import load_builtin

QUICK = ["--set", "dataset=digits", "--set", "fit.epochs=2"]


def sweep_summary(root: Path, name: str) -> dict:
    return json.loads((root / "sweeps" / name / SUMMARY_FILE).read_text())


def statuses(root: Path, name: str) -> dict[str, str]:
    return {r["id"]: r["status"] for r in sweep_summary(root, name)["runs"]}


def summaries(root: Path, name: str) -> dict[str, dict]:
    """Each run's summary.json as it stands, by run id."""
    return {r["id"]: json.loads((root / r["id"] / "summary.json").read_text())
            for r in sweep_summary(root, name)["runs"]
            if (root / r["id"] / "summary.json").exists()}


def test_grid_values_split_at_top_level_commas_only():
    assert parse_grid(["fit.lr=0.1,0.01", "model_options.widths=[64],[128, 128]"]) == {
        "fit.lr": ["0.1", "0.01"], "model_options.widths": ["[64]", "[128, 128]"]}
    with pytest.raises(ValueError, match="empty or repeated"):
        parse_grid(["fit.lr=0.1,0.1"])
    with pytest.raises(ValueError, match="must look like key=v1,v2"):
        parse_grid(["fit.lr"])


def test_plan_types_every_cell_and_keys_change_with_the_config():
    studies, _ = load_builtin()
    sweep = plan(studies["train"], None, ["dataset=digits"], {"fit.lr": ["0.1", "0.05"]},
                 [0, 1], "s")
    assert [(j.params, j.seed) for j in sweep.jobs] == [
        ({"fit.lr": 0.1}, 0), ({"fit.lr": 0.1}, 1), ({"fit.lr": 0.05}, 0), ({"fit.lr": 0.05}, 1)]
    assert all(j.config["runs"] == 1 and j.config["seed"] == j.seed for j in sweep.jobs)
    assert len({j.key for j in sweep.jobs}) == 4  # seed and value each change the key
    again = plan(studies["train"], None, ["dataset=digits"], {"fit.lr": ["0.1", "0.05"]},
                 [0, 1], "s")
    assert [j.name for j in again.jobs] == [j.name for j in sweep.jobs]


@pytest.mark.parametrize("args, message", [
    (["--grid", "fit.lr=0.1,fast"], "fit.lr"),
    (["--grid", "fit.optimizer=sgd,adamm"], "did you mean 'adam'"),
    (["--grid", "fit.lrr=0.1,0.2"], "did you mean 'fit.lr'"),
    (["--seeds", "0", "0"], "repeats a seed"),
])
def test_a_bad_grid_fails_before_any_run(tmp_path, capsys, args, message):
    assert main(["sweep", "train", "--runs-dir", str(tmp_path), *QUICK, *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "train").exists() and not (tmp_path / "sweeps").exists()


def test_a_sweep_is_ordinary_runs_and_running_it_again_repeats_nothing(tmp_path, capsys):
    args = ["sweep", "train", "--runs-dir", str(tmp_path), *QUICK, "--grid", "fit.lr=0.1,0.05",
            "--seeds", "0", "1", "--name", "s", "--jobs", "2"]
    assert main(args) == 0
    assert "sweep s (train): 4 completed" in capsys.readouterr().out
    summary = sweep_summary(tmp_path, "s")
    point = summary["points"][0]
    assert point["params"] == {"fit.lr": 0.1} and point["metrics"]["test_acc"]["n"] == 2
    records = RunStore(tmp_path).list()
    assert len(records) == 4 and {r.sweep for r in records} == {"s"}
    # a cell is the run the study command makes with the same settings
    assert main(["-q", "train", "--runs-dir", str(tmp_path / "alone"), "--dataset", "digits",
                 "--epochs", "2", "--lr", "0.05", "--seed", "1"]) == 0
    alone = RunStore(tmp_path / "alone").list()[0].metrics["test_acc"]
    cell = [r for r in summary["runs"] if r["params"] == {"fit.lr": 0.05} and r["seed"] == 1]
    assert cell[0]["metrics"]["test_acc"] == alone
    before = summaries(tmp_path, "s")
    assert main(args) == 0
    assert summaries(tmp_path, "s") == before  # nothing re-run
    assert len(RunStore(tmp_path).list()) == 4
    assert main(["sweep", "status", "s", "--runs-dir", str(tmp_path)]) == 0
    assert "4 completed" in capsys.readouterr().out


def test_a_sweep_name_is_bound_to_its_cells(tmp_path, capsys):
    base = ["sweep", "train", "--runs-dir", str(tmp_path), *QUICK, "--name", "s"]
    assert main([*base, "--seeds", "0"]) == 0
    assert main([*base, "--seeds", "0", "1"]) == 2
    assert "exists with another study, config, grid or seeds" in capsys.readouterr().err


LONG = ["sweep", "train", "--set", "dataset=digits", "--set", "fit.epochs=500",
        "--grid", "fit.lr=0.1,0.05", "--seeds", "0", "1", "--jobs", "2", "--name", "k"]


def test_sigint_of_the_driver_keeps_finished_runs_and_resuming_redoes_the_rest(tmp_path):
    command = [*CLI, *LONG, "--runs-dir", str(tmp_path)]
    driver = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (tmp_path / "sweeps" / "k" / SUMMARY_FILE).exists()
                 and "completed" in statuses(tmp_path, "k").values())
        driver.send_signal(signal.SIGINT)
        _, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 130, err
    first = statuses(tmp_path, "k")
    assert "completed" in first.values() and set(first.values()) <= {
        "completed", "interrupted", "pending"}
    assert "running" not in first.values()
    done = {k: v for k, v in summaries(tmp_path, "k").items() if v["status"] == "completed"}
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    after = summaries(tmp_path, "k")
    assert set(statuses(tmp_path, "k").values()) == {"completed"}
    assert {k: after[k] for k in done} == done  # untouched
    redone = [k for k, v in first.items() if v == "interrupted"]
    assert all(after[k]["attempt"] == 2 for k in redone)
    assert len(RunStore(tmp_path).list()) == 4  # no duplicate rows


def test_sigkill_of_a_worker_is_recorded_and_resuming_redoes_that_run(tmp_path):
    command = [*CLI, *LONG, "--runs-dir", str(tmp_path)]
    driver = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    victim = {}

    def a_worker_is_running() -> bool:
        for run_dir in (tmp_path / "train").glob("k-*"):
            summary = run_dir / "summary.json"
            if summary.exists():
                data = json.loads(summary.read_text())
                if data["status"] == "running" and (run_dir / "heartbeat").exists():
                    victim.update(id=f"train/{run_dir.name}", pid=data["owner"]["pid"])
                    return True
        return False

    try:
        wait_for(lambda: (tmp_path / "train").exists() and a_worker_is_running())
        import os

        os.kill(victim["pid"], signal.SIGKILL)
        _, err = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 1 and "did not complete" in err
    first = statuses(tmp_path, "k")
    assert first[victim["id"]] == "died"
    assert sorted(first.values()).count("completed") == 3
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    assert set(statuses(tmp_path, "k").values()) == {"completed"}
    assert summaries(tmp_path, "k")[victim["id"]]["attempt"] == 2
    assert len(RunStore(tmp_path).list()) == 4


def test_workers_of_a_killed_driver_stop_and_record_themselves(tmp_path):
    command = [*CLI, *LONG, "--runs-dir", str(tmp_path)]
    driver = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (tmp_path / "train").exists() and any(
            (d / "heartbeat").exists() for d in (tmp_path / "train").iterdir()))
    finally:
        driver.kill()
        driver.wait()
    store = RunStore(tmp_path)
    wait_for(lambda: all(r.status != "running" for r in store.list()), timeout=60)
    assert {r.status for r in store.list()} <= {"interrupted", "completed"}
    assert "interrupted" in {r.status for r in store.list()}
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    assert set(statuses(tmp_path, "k").values()) == {"completed"}


def test_a_metric_named_after_the_swept_value_is_one_column():
    from thresher.runs.sweep import _generic

    assert _generic("accuracy.digits.margin", {"methods": ["margin"]}) == \
        "accuracy.digits.<methods>"
    assert _generic("learners.naive.avg_acc", {"learners": ["naive"], "fit.lr": 0.1}) == \
        "learners.<learners>.avg_acc"
    assert _generic("test_acc", {"fit.lr": 0.1}) == "test_acc"
