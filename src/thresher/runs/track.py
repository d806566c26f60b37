"""Optional live tracking of a study's runs in MLflow or TensorBoard (``track: ...``).

The results store stays the record of every run; a tracker mirrors it into a tool made for
browsing curves. A study opens one tracked run per unit it repeats (e.g. learner and seed):
``start(name, params)``, then ``log(metrics, step)`` as it goes and ``finish(metrics)`` with the
final scores. Non-finite values are left out (both tools reject or misplot NaN). The packages
are imported only when asked for, and `check_tracker` lets a config refuse a missing one before
any work starts.

MLflow's default store is a local SQLite file, ``./mlflow.db`` (no server; view it with
``mlflow ui --backend-store-uri sqlite:///mlflow.db``): current MLflow refuses the older
``./mlruns`` file store unless MLFLOW_ALLOW_FILE_STORE=true is set. TensorBoard's default log
folder is ``./tensorboard/<experiment>/<run-name>-<name>`` (view it with ``tensorboard --logdir
tensorboard``).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from thresher.runs.config import ConfigError, config_to_dict, flatten

TRACKERS = ("none", "mlflow", "tensorboard")  # each but "none" is also its package's name


class Tracker(Protocol):
    def start(self, name: str, params: Mapping[str, Any]) -> None: ...

    def log(self, metrics: Mapping[str, float], step: int) -> None: ...

    def finish(self, metrics: Mapping[str, float]) -> None: ...


def check_tracker(kind: str) -> None:
    """Refuse an unknown tracker or one whose package is missing, while the config is checked."""
    if kind not in TRACKERS:
        raise ConfigError(f"track must be one of {', '.join(TRACKERS)}, got {kind!r}")
    if kind != "none" and importlib.util.find_spec(kind) is None:
        raise ConfigError(f"track {kind!r} needs the {kind} package, which is not "
                          f"installed: pip install 'thresher[{kind}]'")


def make_tracker(kind: str, experiment: str, run_name: str, config: Any,
                 uri: str | None = None) -> Tracker:
    """The tracker ``kind`` for the runs of one study run; ``config`` becomes every tracked
    run's parameters (dotted keys) and ``uri`` overrides the default store or folder."""
    check_tracker(kind)
    params = {key: str(value) for key, value in flatten(config_to_dict(config)).items()}
    if kind == "mlflow":
        return MlflowTracker(experiment, run_name, params, uri)
    if kind == "tensorboard":
        return TensorBoardTracker(experiment, run_name, params, uri)
    return NullTracker()


def _finite(metrics: Mapping[str, float]) -> dict[str, float]:
    return {key: float(value) for key, value in metrics.items() if not math.isnan(value)}


class NullTracker:
    """``track: none``: every call does nothing, so studies need no ``if tracker``."""

    def start(self, name: str, params: Mapping[str, Any]) -> None:
        pass

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def finish(self, metrics: Mapping[str, float]) -> None:
        pass


class MlflowTracker:
    """One MLflow run per ``start``, named ``<run-name>-<name>``, in experiment ``experiment``."""

    def __init__(self, experiment: str, run_name: str, params: Mapping[str, str],
                 uri: str | None) -> None:
        import mlflow  # present: make_tracker checked

        self.mlflow = mlflow
        mlflow.set_tracking_uri(uri or f"sqlite:///{Path('mlflow.db').resolve()}")
        try:
            mlflow.set_experiment(experiment)
        except mlflow.exceptions.MlflowException as e:
            raise ConfigError(f"MLflow refused the tracking store {mlflow.get_tracking_uri()}: "
                              f"{str(e).splitlines()[0]}") from e
        self.run_name = run_name
        self.params = dict(params)

    def start(self, name: str, params: Mapping[str, Any]) -> None:
        self.mlflow.start_run(run_name=f"{self.run_name}-{name}")
        self.mlflow.log_params({**self.params, **params})

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self.mlflow.log_metrics(_finite(metrics), step=step)

    def finish(self, metrics: Mapping[str, float]) -> None:
        self.mlflow.log_metrics(_finite(metrics))
        self.mlflow.end_run()


class TensorBoardTracker:
    """One event folder per ``start``: scalars as they come, the parameters as a text table and
    the final scores at the last step logged."""

    def __init__(self, experiment: str, run_name: str, params: Mapping[str, str],
                 uri: str | None) -> None:
        from torch.utils.tensorboard import SummaryWriter  # present: make_tracker checked

        self.writer_type = SummaryWriter
        self.folder = Path(uri or "tensorboard") / experiment
        self.run_name = run_name
        self.params = dict(params)
        self.writer: Any = None
        self.step = 0

    def start(self, name: str, params: Mapping[str, Any]) -> None:
        self.writer = self.writer_type(log_dir=str(self.folder / f"{self.run_name}-{name}"))
        rows = {**self.params, **{key: str(value) for key, value in params.items()}}
        self.writer.add_text("params", "\n".join(f"    {k} = {v}" for k, v in rows.items()))
        self.step = 0

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        for key, value in _finite(metrics).items():
            self.writer.add_scalar(key, value, step)
        self.step = step

    def finish(self, metrics: Mapping[str, float]) -> None:
        for key, value in _finite(metrics).items():
            self.writer.add_scalar(key, value, self.step)
        self.writer.close()
