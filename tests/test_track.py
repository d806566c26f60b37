"""Trackers for every study, and `runs export`, read back through MLflow's and TensorBoard's own
readers (each test skips where its package is missing: the `mlflow` and `tensorboard` extras)."""

import importlib.util
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from thresher.cli import main
from thresher.runs.config import ConfigError, load_config
from thresher.runs.export import runs_export
from thresher.runs.store import RunStore
from thresher.runs.track import NullTracker, check_tracker, make_tracker
from thresher.studies import load_builtin


@dataclass
class Fit:
    lr: float = 0.1


@dataclass
class Cfg:
    seed: int = 0
    fit: Fit = field(default_factory=Fit)


@pytest.fixture(autouse=True)
def quiet_and_contained(tmp_path, monkeypatch):
    """Every test runs in an empty working directory that must stay empty (the stores go where
    the test says), with MLflow's telemetry off (it writes an id under the home folder), and
    gets torch's thread count back (the CLI sets it)."""
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
    assert not any(cwd.iterdir()), f"written to the working directory: {os.listdir(cwd)}"


def study(tmp_path, *args: str) -> dict:
    """Run a study command on the offline digits data; its summary.json."""
    assert main(["-q", *args, "--runs-dir", str(tmp_path / "runs"), "--device", "cpu"]) == 0
    name = args[args.index("--name") + 1]
    return json.loads((tmp_path / "runs" / args[0] / name / "summary.json").read_text())


def train(tmp_path, name: str, *extra: str) -> dict:
    return study(tmp_path, "train", "--epochs", "2", "--runs", "2", "--name", name, *extra)


def mlflow_record(uri: str, experiment: str, prefix: str) -> dict:
    """Every tracked run of an experiment by name (``prefix`` cut): status, params, each
    metric's (step, value) history and the artifacts' names."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    record = {}
    for run in client.search_runs([found.experiment_id]):
        histories = {key: sorted((m.step, m.value) for m in
                                 client.get_metric_history(run.info.run_id, key))
                     for key in run.data.metrics}
        name = run.info.run_name.removeprefix(prefix)
        assert name not in record, f"{run.info.run_name} tracked twice"
        record[name] = {"status": run.info.status, "params": run.data.params,
                        "metrics": histories,
                        "artifacts": sorted(a.path for a in client.list_artifacts(
                            run.info.run_id))}
    return record


def mlflow_runs(uri: str, experiment: str) -> list[tuple[str, dict, dict]]:
    """(status, {metric: history}, params) of every run, names aside."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return [(r.info.status, {k: [(m.step, m.value) for m in
                                 client.get_metric_history(r.info.run_id, k)]
                             for k in r.data.metrics}, r.data.params) for r in runs]


def events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder), size_guidance={"images": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


# --- the seam --------------------------------------------------------------------------------


def test_none_tracks_nothing_and_an_unknown_kind_names_the_closest(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    tracker = make_tracker("none", "exp", "r1", Cfg(), folder)
    assert isinstance(tracker, NullTracker)
    tracker.start("a", {})
    tracker.log({"loss": 1.0}, 1)
    tracker.artifact(folder / "x.png")
    tracker.finish({"acc": 0.5})
    assert not tracker.has("a") and not any(folder.iterdir())
    with pytest.raises(ConfigError, match="track must be one of 'none', 'mlflow', 'tensorboard'"):
        check_tracker("wandb")


@pytest.mark.parametrize("name", ["train", "active", "continual", "robustness"])
def test_every_study_has_the_tracker_fields_checked_with_did_you_mean(name):
    config = load_builtin()[0][name].config
    assert load_config(config, overrides=["track=none"], validate=False).track_uri is None
    with pytest.raises(ConfigError, match="did you mean 'tensorboard'"):
        load_config(config, overrides=["track=tensorbord"])


@pytest.mark.parametrize("kind", ["mlflow", "tensorboard"])
def test_a_missing_package_is_a_config_error_naming_the_extra(kind, monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == kind else real(name, *a))
    with pytest.raises(ConfigError, match=rf"pip install 'thresher\[{kind}\]'"):
        make_tracker(kind, "exp", "r1", Cfg(), tmp_path)
    store = RunStore(tmp_path / "runs")
    store.start("train", Cfg(), name="done").finish()
    with pytest.raises(ConfigError, match=rf"pip install 'thresher\[{kind}\]'"):
        runs_export(store, ["done"], kind)


def test_an_mlflow_unit_started_again_marks_the_unfinished_attempt_killed(tmp_path):
    """A unit an interrupted attempt began is repeated by the resumed run: the leftover MLflow
    run is marked KILLED, the new one holds the unit."""
    pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'ml.db'}"
    first = make_tracker("mlflow", "thresher-x", "r1", Cfg(), tmp_path, uri)
    first.start("seed0", {"run_seed": 0})
    first.log({"loss": 1.0}, 1)  # then the process dies
    again = make_tracker("mlflow", "thresher-x", "r1", Cfg(), tmp_path, uri)
    again.start("seed0", {"run_seed": 0})
    again.log({"loss": 0.5, "memory": math.nan}, 1)
    again.finish({"acc": 0.75, "forgetting": None})
    runs = mlflow_runs(uri, "thresher-x")
    assert sorted(r[0] for r in runs) == ["FINISHED", "KILLED"]
    finished = next(r for r in runs if r[0] == "FINISHED")
    assert finished[1] == {"loss": [(1, 0.5)], "acc": [(1, 0.75)]}  # NaN and None left out
    assert finished[2] == {"seed": "0", "fit.lr": "0.1", "run_seed": "0"}


def test_a_tensorboard_unit_started_again_drops_the_earlier_events(tmp_path):
    pytest.importorskip("tensorboard")
    for value in (1.0, 0.5):
        tracker = make_tracker("tensorboard", "thresher-x", "r1", Cfg(), tmp_path)
        tracker.start("seed0", {})
        tracker.log({"loss": value}, 1)
        tracker.finish({"acc": 0.75})
    folder = tmp_path / "tensorboard" / "seed0"
    assert len(list(folder.glob("events.out.tfevents.*"))) == 1
    assert [(e.step, e.value) for e in events(folder).Scalars("loss")] == [(1, 0.5)]


# --- the studies, live and exported ----------------------------------------------------------


def test_train_in_mlflow_live_and_exported_from_a_run_tracked_nowhere(tmp_path):
    """Per seed: the config and seed as params, fit's epoch rows as steps, the test scores;
    per run: the summary with the run's artifacts. Exporting a run made with ``track: none``
    gives the same record: same names, params, steps and (training being bit-reproducible on
    the CPU) the same values, timings aside."""
    pytest.importorskip("mlflow")
    live_uri, export_uri = (f"sqlite:///{tmp_path / n}" for n in ("live.db", "export.db"))
    summary = train(tmp_path, "live", "--set", "track=mlflow", "--set", f"track_uri={live_uri}")
    train(tmp_path, "off")
    runs = tmp_path / "runs" / "train"
    text = runs_export(RunStore(tmp_path / "runs"), ["train/off"], "mlflow", export_uri)
    assert text == (f"exported train/off (3 tracked runs) to MLflow {export_uri}, "
                    "experiment thresher-train")

    live = mlflow_record(live_uri, "thresher-train", "live-")
    exported = mlflow_record(export_uri, "thresher-train", "off-")
    assert set(live) == set(exported) == {"seed0", "seed1", "summary"}
    for record, name in ((live, "live"), (exported, "off")):
        per_seed = json.loads((runs / name / "per_seed.json").read_text())
        for seed in (0, 1):
            tracked, saved = record[f"seed{seed}"], per_seed[seed]
            assert tracked["status"] == "FINISHED"
            assert tracked["params"]["run_seed"] == str(seed)
            assert tracked["params"]["fit.epochs"] == "2"
            assert tracked["metrics"]["val_acc"] == [(1, saved["history"][0]["val_acc"]),
                                                     (2, saved["history"][1]["val_acc"])]
            assert tracked["metrics"]["test_acc"] == [(2, saved["test_acc"])]
            assert tracked["artifacts"] == []
        assert record["summary"]["artifacts"] == ["per_seed.json", "results.txt"]
    assert live["summary"]["metrics"]["test_acc"] == [(0, summary["metrics"]["test_acc"])]
    assert live["seed0"]["params"]["track"] == "mlflow"
    assert exported["seed0"]["params"]["track"] == "none"
    timings = {"seconds", "train_seconds", "images_per_s"}
    for name in live:
        assert {k: v for k, v in live[name]["params"].items() if not k.startswith("track")} \
            == {k: v for k, v in exported[name]["params"].items() if not k.startswith("track")}
        assert set(live[name]["metrics"]) == set(exported[name]["metrics"])
        for key, history in live[name]["metrics"].items():
            if key not in timings:
                assert history == exported[name]["metrics"][key], (name, key)

    with pytest.raises(ValueError, match="train/off is in MLflow .* already"):
        runs_export(RunStore(tmp_path / "runs"), ["off"], "mlflow", export_uri)
    train(tmp_path, "live", "--set", "track=mlflow", "--set", f"track_uri={live_uri}")
    again = mlflow_runs(live_uri, "thresher-train")  # both seeds were read back, not re-run
    assert sum("run_seed" in r[2] for r in again) == 2


def test_active_in_mlflow_per_method_and_seed_and_export_writes_the_same(tmp_path):
    """Each method x seed: accuracy against the labelled count; the summary holds the figures
    and results.json. The same run exported to another store gives an identical record."""
    pytest.importorskip("mlflow")
    live_uri, export_uri = (f"sqlite:///{tmp_path / n}" for n in ("live.db", "export.db"))
    study(tmp_path, "active", "--datasets", "digits", "--budget", "200", "--runs", "1",
          "--epochs", "3", "--methods", "margin", "random", "--rounds", "2", "--name", "a",
          "--set", "track=mlflow", "--set", f"track_uri={live_uri}")
    live = mlflow_record(live_uri, "thresher-active", "a-")
    assert set(live) == {"digits-margin-seed0", "digits-random-seed0", "summary"}
    results = json.loads((tmp_path / "runs" / "active" / "a" / "results.json").read_text())
    for method in ("margin", "random"):
        tracked = live[f"digits-{method}-seed0"]
        curve = results["results"]["digits"][method]["curves"][0]
        assert tracked["metrics"]["accuracy"] == [(120, curve[0]["accuracy"]),
                                                  (200, curve[1]["accuracy"])]
        assert tracked["params"]["method"] == method and tracked["params"]["budget"] == "200"
        assert tracked["metrics"]["inferences"][0][0] == 200
    assert live["summary"]["artifacts"] == ["active_learning_results.png", "learning_curve.png",
                                            "results.json", "results.txt"]

    runs_export(RunStore(tmp_path / "runs"), ["active/a"], "mlflow", export_uri)
    assert mlflow_record(export_uri, "thresher-active", "a-") == live


def test_robustness_in_tensorboard_and_runs_exported_there(tmp_path):
    """robustness: a tracked run per corruption with accuracy against severity (in the run's
    own folder by default), the heat map as an image and the JSON as text; then a train run
    and a continual run made with ``track: none`` exported to TensorBoard."""
    pytest.importorskip("tensorboard")
    train(tmp_path, "t")
    study(tmp_path, "robustness", "--run", "train/t", "--corruptions", "gaussian_noise",
          "contrast", "--severities", "1", "3", "--name", "r", "--set", "track=tensorboard")
    folder = tmp_path / "runs" / "robustness" / "r"
    saved = json.loads((folder / "robustness.json").read_text())
    assert sorted(p.name for p in (folder / "tensorboard").iterdir()) == [
        "contrast", "gaussian_noise", "summary"]
    noise = events(folder / "tensorboard" / "gaussian_noise")
    row = saved["accuracy"]["gaussian_noise"]
    assert [(e.step, e.value) for e in noise.Scalars("accuracy")] == [
        (1, pytest.approx(row["1"])), (3, pytest.approx(row["3"]))]
    assert noise.Scalars("mean_accuracy")[0].value == pytest.approx((row["1"] + row["3"]) / 2)
    summary = events(folder / "tensorboard" / "summary")
    image = summary.Images("robustness.png")[0]
    from PIL import Image

    with Image.open(folder / "robustness.png") as png:
        assert (image.width, image.height) == png.size
    assert "robustness.json/text_summary" in summary.Tags()["tensors"]
    assert summary.Scalars("clean_accuracy")[0].value == pytest.approx(saved["clean_accuracy"])

    store = RunStore(tmp_path / "runs")
    runs_export(store, ["train/t"], "tensorboard")
    per_seed = json.loads((tmp_path / "runs" / "train" / "t" / "per_seed.json").read_text())
    seed1 = events(tmp_path / "runs" / "train" / "t" / "tensorboard" / "seed1")
    assert [(e.step, e.value) for e in seed1.Scalars("train_loss")] == [
        (row["epoch"], pytest.approx(row["train_loss"])) for row in per_seed[1]["history"]]
    with pytest.raises(ValueError, match="train/t is in TensorBoard .* already"):
        runs_export(store, ["train/t"], "tensorboard")

    study(tmp_path, "continual", "--lite", "--learners", "naive", "--epochs", "2",
          "--set", "fit.testing_interval=50", "--name", "c")
    exported = tmp_path / "exported"
    runs_export(store, ["continual/c"], "tensorboard", str(exported))
    curve = json.loads((tmp_path / "runs" / "continual" / "c" / "per_run.json").read_text()
                       )[0]["curve"]
    naive = events(exported / "thresher-continual" / "c-naive-seed0")
    assert [(e.step, e.value) for e in naive.Scalars("task_1_accuracy")] == [
        (p["batch"], pytest.approx(p["accuracy"][1])) for p in curve]
    assert events(exported / "thresher-continual" / "c-summary").Images("curves.png")


def test_export_refuses_runs_that_did_not_complete_and_names_the_choices(tmp_path):
    store = RunStore(tmp_path / "runs")
    store.start("train", Cfg(), name="half").finish("interrupted", "KeyboardInterrupt")
    with pytest.raises(ValueError, match="train/half is interrupted; only completed runs"):
        runs_export(store, ["train/half"], "tensorboard")
    with pytest.raises(ConfigError, match="did you mean 'mlflow'"):
        runs_export(store, ["train/half"], "mlfow")
