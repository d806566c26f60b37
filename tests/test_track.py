"""The tracker seam: none, MLflow (a stand-in module, and the real one where installed) and
TensorBoard (where installed)."""

import importlib.util
import math
import sys
import types
from dataclasses import dataclass, field

import pytest

from thresher.runs.config import ConfigError
from thresher.runs.track import NullTracker, check_tracker, make_tracker


@dataclass
class Fit:
    lr: float = 0.1


@dataclass
class Cfg:
    seed: int = 0
    fit: Fit = field(default_factory=Fit)


def test_none_tracks_nothing_and_unknown_kinds_are_refused():
    tracker = make_tracker("none", "exp", "r1", Cfg())
    assert isinstance(tracker, NullTracker)
    tracker.start("a", {})
    tracker.log({"loss": 1.0}, 1)
    tracker.finish({"acc": 0.5})
    with pytest.raises(ConfigError, match="track must be one of none, mlflow, tensorboard"):
        check_tracker("wandb")


@pytest.mark.parametrize("kind", ["mlflow", "tensorboard"])
def test_a_missing_package_is_a_config_error_naming_the_extra(kind, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == kind else real(name, *a))
    with pytest.raises(ConfigError, match=rf"pip install 'thresher\[{kind}\]'"):
        make_tracker(kind, "exp", "r1", Cfg())


def test_mlflow_tracker_logs_params_steps_and_finite_final_scores(monkeypatch):
    logged = []
    fake = types.SimpleNamespace(
        set_tracking_uri=lambda uri: logged.append(("uri", uri)),
        set_experiment=lambda name: logged.append(("experiment", name)),
        start_run=lambda run_name: logged.append(("start", run_name)),
        log_params=lambda params: logged.append(("params", params)),
        log_metrics=lambda metrics, step=None: logged.append(("metrics", step, metrics)),
        end_run=lambda: logged.append(("end",)))
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    tracker = make_tracker("mlflow", "thresher-x", "r1", Cfg(), "file:mlruns")
    tracker.start("ta-agem-seed3", {"learner": "ta-agem"})
    tracker.log({"loss": 0.5, "task_1_accuracy": 0.7}, 100)
    tracker.finish({"average_accuracy": 0.8, "forgetting": math.nan})
    assert logged[:3] == [("uri", "file:mlruns"), ("experiment", "thresher-x"),
                          ("start", "r1-ta-agem-seed3")]
    assert logged[3] == ("params", {"seed": "0", "fit.lr": "0.1", "learner": "ta-agem"})
    assert logged[4] == ("metrics", 100, {"loss": 0.5, "task_1_accuracy": 0.7})
    assert logged[5] == ("metrics", None, {"average_accuracy": 0.8})  # NaN left out
    assert logged[-1] == ("end",)


def test_tensorboard_events_read_back(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tracker = make_tracker("tensorboard", "thresher-x", "r1", Cfg(), str(tmp_path))
    tracker.start("naive-seed0", {"learner": "naive"})
    tracker.log({"loss": 0.5}, 10)
    tracker.log({"loss": 0.25, "memory": math.nan}, 20)
    tracker.finish({"average_accuracy": 0.8})
    events = EventAccumulator(str(tmp_path / "thresher-x" / "r1-naive-seed0"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(10, 0.5), (20, 0.25)]
    assert [(e.step, e.value) for e in events.Scalars("average_accuracy")] == [
        (20, pytest.approx(0.8))]
    assert "memory" not in events.Tags()["scalars"]
