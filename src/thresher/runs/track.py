"""Optional tracking of a study's runs in MLflow or TensorBoard (``track: ...``).

The results store stays the record of every run; a tracker mirrors it into a tool made for
browsing curves. A study opens one tracked run per unit of work (a seed, a learner x seed, a
corruption): ``start(name, params)``, then ``log(metrics, step)`` as it goes and
``finish(metrics)`` with the final scores. It does so inside the unit's compute, so a resumed
run does not log again the units it reads back. At the end one more tracked run, ``summary``,
holds the run's final metrics and its artifacts (``artifact(path)``: figures, JSON files, the
result table). Every tracked run carries the config as parameters. Non-finite values are left
out (both tools reject or misplot NaN). The packages are imported only when asked for, and
`check_tracker` lets a config refuse a missing one before any work starts.

MLflow's default store is a local SQLite file, ``./mlflow.db`` (no server; view it with
``mlflow ui --backend-store-uri sqlite:///mlflow.db``), with artifacts in ``mlartifacts/``
beside it: current MLflow refuses the older ``./mlruns`` file store unless
MLFLOW_ALLOW_FILE_STORE=true is set. TensorBoard's events go to ``<run dir>/tensorboard/<name>``
(view them with ``tensorboard --logdir runs``), or with ``track_uri`` to
``<track_uri>/<experiment>/<run-name>-<name>``.

The second half says what each study tracks per unit; the studies call it while they run and
`thresher.runs.export` when it replays a finished run, so both give the same record.
"""

from __future__ import annotations

import importlib.util
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from thresher.runs.config import ConfigError, check_choice, config_to_dict, flatten, to_plain
from thresher.runs.index import SUMMARY_FILE
from thresher.runs.store import RESULTS_FILE

if TYPE_CHECKING:
    from thresher.runs.store import Run

TRACKERS = ("none", "mlflow", "tensorboard")  # each but "none" is also its package's name
SUMMARY = "summary"  # the tracked run of the whole study run: final metrics and artifacts
TEXT_LIMIT = 100_000  # characters of a JSON or text artifact shown in TensorBoard


class Tracker(Protocol):
    where: str  # the store or folder written, for messages

    def has(self, name: str) -> bool: ...

    def start(self, name: str, params: Mapping[str, Any]) -> None: ...

    def log(self, metrics: Mapping[str, float | None], step: int) -> None: ...

    def artifact(self, path: Path) -> None: ...

    def finish(self, metrics: Mapping[str, float | None]) -> None: ...


def check_tracker(kind: str) -> None:
    """Refuse an unknown tracker or one whose package is missing, while the config is checked."""
    check_choice("track", kind, TRACKERS)
    if kind != "none" and importlib.util.find_spec(kind) is None:
        raise ConfigError(f"track {kind!r} needs the {kind} package, which is not "
                          f"installed: pip install 'thresher[{kind}]'")


def make_tracker(kind: str, experiment: str, run_name: str, config: Any, folder: Path,
                 uri: str | None = None) -> Tracker:
    """The tracker ``kind`` for the tracked runs of one study run; ``config`` becomes every
    tracked run's parameters (dotted keys), ``folder`` is the run's directory (TensorBoard's
    default home) and ``uri`` overrides the default store or folder."""
    check_tracker(kind)
    params = {key: str(value) for key, value in flatten(config_to_dict(config)).items()}
    if kind == "mlflow":
        return MlflowTracker(experiment, run_name, params, uri)
    if kind == "tensorboard":
        root = Path(uri) / experiment if uri else Path(folder) / "tensorboard"
        return TensorBoardTracker(root, f"{run_name}-" if uri else "", params)
    return NullTracker()


def run_tracker(cfg: Any, run: Run) -> Tracker:
    """The tracker a study's config asks for (``track``, ``track_uri``), for ``run``: experiment
    ``thresher-<study>``, tracked runs named after the run."""
    return make_tracker(cfg.track, f"thresher-{run.study}", run.name, cfg, run.dir,
                        cfg.track_uri)


def _finite(metrics: Mapping[str, float | None]) -> dict[str, float]:
    return {key: float(value) for key, value in metrics.items()
            if value is not None and math.isfinite(value)}


class NullTracker:
    """``track: none``: every call does nothing, so studies need no ``if tracker``."""

    where = "nowhere"

    def has(self, name: str) -> bool:
        return False

    def start(self, name: str, params: Mapping[str, Any]) -> None:
        pass

    def log(self, metrics: Mapping[str, float | None], step: int) -> None:
        pass

    def artifact(self, path: Path) -> None:
        pass

    def finish(self, metrics: Mapping[str, float | None]) -> None:
        pass


class MlflowTracker:
    """One MLflow run per ``start``, named ``<run-name>-<name>``, in experiment ``experiment``.

    Written through `MlflowClient` on its own URI, so no global MLflow state (the active run,
    the tracking URI) is touched. Final scores are logged at the last step, so a curve keeps
    its shape. A run of the same name left ``RUNNING`` (a unit that an interrupted attempt did
    not finish, and that a resumed run repeats) is marked ``KILLED`` when the unit starts again.
    """

    def __init__(self, experiment: str, run_name: str, params: Mapping[str, str],
                 uri: str | None) -> None:
        from mlflow.exceptions import MlflowException  # present: make_tracker checked
        from mlflow.tracking import MlflowClient

        self.uri = uri or f"sqlite:///{Path('mlflow.db').resolve()}"
        self.where = f"MLflow {self.uri}, experiment {experiment}"
        self.client = MlflowClient(tracking_uri=self.uri)
        try:
            self.experiment_id = self._experiment(experiment)
        except MlflowException as e:
            raise ConfigError(f"MLflow refused the tracking store {self.uri}: "
                              f"{str(e).splitlines()[0]}") from e
        self.run_name = run_name
        self.params = dict(params)
        self.run_id: str | None = None
        self.step = 0

    def _experiment(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = None  # the server's choice; a SQLite store's beside its file (MLflow's
        # default, ./mlruns, would land in whatever folder the command runs in)
        if self.uri.startswith("sqlite:///"):
            location = str(Path(self.uri[len("sqlite:///"):]).resolve().parent / "mlartifacts")
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except MlflowException:  # created meanwhile by another process (a sweep's worker)
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def runs(self, name: str, status: str | None = None) -> list:
        """The MLflow runs called ``<run-name>-<name>`` (with ``status``) in the experiment."""
        where = f"attributes.run_name = '{self.run_name}-{name}'"
        if status is not None:
            where += f" and attributes.status = '{status}'"
        return self.client.search_runs([self.experiment_id], filter_string=where)

    def has(self, name: str) -> bool:
        """Whether a tracked run ``name`` of this run is in the experiment already."""
        return bool(self.runs(name))

    def start(self, name: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        for stale in self.runs(name, "RUNNING"):
            self.client.set_terminated(stale.info.run_id, "KILLED")
        run = self.client.create_run(self.experiment_id, run_name=f"{self.run_name}-{name}")
        self.run_id, self.step = run.info.run_id, 0
        rows = {**self.params, **{key: str(value) for key, value in params.items()}}
        self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in rows.items()])

    def log(self, metrics: Mapping[str, float | None], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        rows = [Metric(key, value, now, step) for key, value in _finite(metrics).items()]
        if rows:
            self.client.log_batch(self.run_id, metrics=rows)
        self.step = step

    def artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def finish(self, metrics: Mapping[str, float | None]) -> None:
        self.log(metrics, self.step)
        self.client.set_terminated(self.run_id)
        self.run_id = None


class TensorBoardTracker:
    """One event folder per ``start`` (``root/<prefix><name>``): scalars as they come, the
    parameters as a text table, the final scores at the last step logged, figures as images
    and JSON or text files as text. Events left in the folder by an attempt that did not
    finish the unit are removed when it starts again, so its curves are not drawn twice."""

    def __init__(self, root: Path, prefix: str, params: Mapping[str, str]) -> None:
        from torch.utils.tensorboard import SummaryWriter  # present: make_tracker checked

        self.writer_type = SummaryWriter
        self.root = root
        self.where = f"TensorBoard {root}"
        self.prefix = prefix
        self.params = dict(params)
        self.writer: Any = None
        self.step = 0

    def folder(self, name: str) -> Path:
        return self.root / f"{self.prefix}{name}"

    def has(self, name: str) -> bool:
        """Whether a tracked run ``name`` of this run has events already."""
        return any(self.folder(name).glob("events.out.tfevents.*"))

    def start(self, name: str, params: Mapping[str, Any]) -> None:
        for stale in self.folder(name).glob("events.out.tfevents.*"):
            stale.unlink()
        self.writer = self.writer_type(log_dir=str(self.folder(name)))
        rows = {**self.params, **{key: str(value) for key, value in params.items()}}
        self.writer.add_text("params", "\n".join(f"    {k} = {v}" for k, v in rows.items()))
        self.step = 0

    def log(self, metrics: Mapping[str, float | None], step: int) -> None:
        for key, value in _finite(metrics).items():
            self.writer.add_scalar(key, value, step)
        self.step = step

    def artifact(self, path: Path) -> None:
        path = Path(path)
        if path.suffix == ".png":
            import numpy as np
            from PIL import Image

            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
            self.writer.add_image(path.name, pixels, self.step, dataformats="HWC")
            return
        text = path.read_text()
        if len(text) > TEXT_LIMIT:
            text = text[:TEXT_LIMIT] + f"\n... ({len(text) - TEXT_LIMIT} more characters in " \
                f"{path.name})"
        self.writer.add_text(path.name, "\n".join(f"    {line}" for line in text.splitlines()),
                             self.step)

    def finish(self, metrics: Mapping[str, float | None]) -> None:
        self.log(metrics, self.step)
        self.writer.close()


# ---------------------------------------------------------------------------------------------
# what is tracked: the same live and when `runs export` replays a finished run


Point = tuple[int, Mapping[str, float | None]]


class Tracked(NamedTuple):
    """One tracked run: its name, its own parameters (beside the config), (step, metrics)
    points and final scores."""

    name: str
    params: dict[str, Any]
    points: list[Point]
    final: dict[str, float | None]


def track(tracker: Tracker, tracked: Tracked) -> None:
    """Write one tracked run at once: a unit whose numbers all come at its end, or a unit
    replayed from a finished run."""
    tracker.start(tracked.name, tracked.params)
    for step, metrics in tracked.points:
        tracker.log(metrics, step)
    tracker.finish(tracked.final)


def scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of a run's (nested) metrics under dotted keys: what a tracker can plot.
    Lists, text and flags are left out."""
    return {key: value for key, value in flatten(to_plain(metrics)).items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)}


def artifacts(folder: Path) -> list[Path]:
    """A run folder's figures, JSON files and result table. summary.json is left out: the
    tracked parameters and metrics hold it, and it is rewritten once the run ends."""
    return sorted(path for path in Path(folder).iterdir() if path.is_file() and (
        path.suffix in (".png", ".json") and path.name != SUMMARY_FILE
        or path.name == RESULTS_FILE))


def track_summary(tracker: Tracker, folder: Path, metrics: Mapping[str, Any]) -> None:
    """The whole run as one tracked run, ``summary``: the config, the final metrics and the
    artifacts. A study calls it last, once every file is written."""
    tracker.start(SUMMARY, {})
    for path in artifacts(folder):
        tracker.artifact(path)
    tracker.finish(scalars(metrics))


TRAIN_FINAL = ("test_acc", "test_loss", "train_seconds", "images_per_s")


def seed_run(seed: int) -> tuple[str, dict[str, Any]]:
    """train: the name and parameters of a seed's tracked run."""
    return f"seed{seed}", {"run_seed": seed}


def epoch_metrics(row: Mapping[str, Any]) -> dict[str, float | None]:
    """train: one row of fit's history (``on_epoch``), logged at its epoch."""
    return {key: value for key, value in row.items() if key != "epoch"}


def train_final(seed_result: Mapping[str, Any]) -> dict[str, float | None]:
    """train: a seed's test scores and speed."""
    return {key: seed_result[key] for key in TRAIN_FINAL}


def active_tracked(dataset: str, method: str, seed: int, curve: Sequence[Mapping[str, Any]],
                   costs: Mapping[str, Any]) -> Tracked:
    """active: one method x seed, test accuracy against the labelled count, and its costs."""
    return Tracked(f"{dataset}-{method}-seed{seed}",
                   {"dataset": dataset, "method": method, "run_seed": seed},
                   [(p["labelled"], {"accuracy": p["accuracy"]}) for p in curve],
                   {key: costs[key] for key in ("inferences", "loss_queries",
                                                "selection_seconds", "seconds")})


def corruption_tracked(name: str, accuracy: Mapping[int, float]) -> Tracked:
    """robustness: one corruption, accuracy against severity, and its mean over severities."""
    values = list(accuracy.values())
    return Tracked(name, {"corruption": name},
                   [(severity, {"accuracy": a}) for severity, a in accuracy.items()],
                   {"mean_accuracy": sum(values) / len(values)})


def learner_run(learner: str, seed: int) -> tuple[str, dict[str, Any]]:
    """continual: the name and parameters of a learner x seed's tracked run."""
    return f"{learner}-seed{seed}", {"learner": learner, "run_seed": seed}


def continual_point(point: Mapping[str, Any]) -> dict[str, float | None]:
    """continual: one point of a learner's curve (see `loop.train_stream`), logged at its
    batch."""
    metrics = {"overall_accuracy": point["seen"], "loss": point["loss"],
               "memory_size": point["memory"], "learning_rate": point["lr"]}
    metrics.update({f"task_{j}_accuracy": a for j, a in enumerate(point["accuracy"])})
    return metrics


def continual_final(result: Mapping[str, Any]) -> dict[str, float | None]:
    """continual: once a learner has seen the whole stream, the accuracy on the last task, the
    average and average incremental accuracy, forgetting, BWT and time per task."""
    return {"final_accuracy": result["R"][-1][-1], "average_accuracy": result["avg_acc"],
            "average_incremental_accuracy": result["inc_acc"],
            "forgetting": result["forgetting"], "bwt": result["bwt"],
            "seconds_per_task": result["seconds_per_task"]}

