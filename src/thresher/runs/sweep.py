"""`thresher sweep`: a study over a grid of config values x seeds, one ordinary run per cell.

Each cell is a run of the study with ``runs=1`` and its own seed, in its own process: the
``thresher`` command itself, started by a backend (a local process pool, or Ray tasks). Its name
holds a content hash of (study, full resolved config, code version), so re-running the same
sweep finds the runs it already made: completed (and diverged) ones are skipped, failed,
interrupted and died ones are run again — by the store's own resume, which keeps the units of
work they finished. Workers write only their run folders; the sweep's driver indexes each
folder as its process ends, so one process writes the SQLite index, however many machines run
the work. ``<runs>/sweeps/<name>/sweep_summary.json`` holds every cell's status and metrics and,
per grid point, mean, std and 95% CI over seeds; it is rewritten as each run ends.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import thresher
from thresher.runs.config import ConfigError, config_to_dict, dump_yaml, flatten, load_config
from thresher.runs.files import atomic_write, to_json
from thresher.runs.stats import summarize
from thresher.runs.store import (
    RunRecord,
    RunStore,
    StoreError,
    git_commit,
    git_diff,
    read_record,
)
from thresher.train.device import usable_cores

log = logging.getLogger("thresher.sweep")

SWEEPS_DIR = "sweeps"
SUMMARY_FILE = "sweep_summary.json"
FINAL = ("completed", "diverged")  # outcomes a re-run would only repeat: skipped on resume
BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class Job:
    """One cell: a grid point and a seed, as one run of the study."""

    study: str
    params: dict[str, Any]  # this cell's grid values, typed as the config holds them
    seed: int
    config: dict[str, Any]  # the full resolved config (runs=1)
    key: str  # content hash of (study, config, code version)
    name: str  # the run's name

    @property
    def id(self) -> str:
        return f"{self.study}/{self.name}"


@dataclass
class Sweep:
    name: str
    study: str
    grid: dict[str, list[str]]
    seeds: list[int]
    base: list[str]  # --set overrides shared by every cell
    config_file: str | None
    definition: str  # hash of what the user asked for: study, file, overrides, grid, seeds
    jobs: list[Job]


# ---------------------------------------------------------------------------------------------
# planning


def parse_grid(items: Sequence[str]) -> dict[str, list[str]]:
    """``["fit.lr=0.1,0.01", "model_options.widths=[64],[128,128]"]`` -> key -> values; commas
    inside brackets or braces belong to a value."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or not text.strip():
            raise ConfigError(f"--grid {item!r} must look like key=v1,v2 (e.g. fit.lr=0.1,0.01)")
        if key in grid:
            raise ConfigError(f"--grid names {key!r} twice; give all its values in one --grid")
        values, depth, current = [], 0, ""
        for char in text:
            depth += (char in "[{") - (char in "]}")
            if char == "," and depth == 0:
                values.append(current.strip())
                current = ""
            else:
                current += char
        values.append(current.strip())
        if any(not v for v in values) or len(set(values)) != len(values):
            raise ConfigError(f"--grid {item!r} has an empty or repeated value")
        grid[key] = values
    return grid


def code_version(repo: str | Path | None = None) -> str:
    """What identifies the code a run ran with: the commit, plus a hash of uncommitted changes
    to tracked files; the package version outside git."""
    commit = git_commit(repo)
    if commit is None:
        return f"thresher {thresher.__version__}"
    if commit.endswith("-dirty"):
        diff = git_diff(repo) or ""
        return f"{commit}:{hashlib.sha256(diff.encode()).hexdigest()[:12]}"
    return commit


def content_key(study: str, config: dict[str, Any], code: str) -> str:
    text = json.dumps({"study": study, "config": config, "code": code}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _slug(params: dict[str, Any]) -> str:
    text = "-".join(f"{k.rsplit('.', 1)[-1]}{v}" for k, v in params.items())
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", text)[:80]


def plan(study: Any, config_file: str | None, base: Sequence[str], grid: dict[str, list[str]],
         seeds: Sequence[int], name: str | None, repo: str | Path | None = None) -> Sweep:
    """Every cell's full config, validated before any run starts (a bad grid value fails here,
    naming its key and value), keyed and named."""
    if not seeds:
        raise ConfigError("--seeds needs at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds repeats a seed: {list(seeds)}")
    fields = {f.name for f in dataclasses.fields(study.config)}
    code = code_version(repo)
    definition = hashlib.sha256(json.dumps(
        {"study": study.name, "file": config_file, "base": list(base), "grid": grid,
         "seeds": list(seeds)}, sort_keys=True).encode()).hexdigest()
    name = name or f"{study.name}-{definition[:8]}"
    jobs = []
    for point in itertools.product(*grid.values()):
        raw = dict(zip(grid, point))
        for seed in seeds:
            overrides = [*base, *(f"{k}={v}" for k, v in raw.items()), f"seed={seed}"]
            if "runs" in fields:
                overrides.append("runs=1")
            try:
                cfg = load_config(study.config, config_file, overrides)
            except ConfigError as e:
                where = ", ".join(f"{k}={v}" for k, v in raw.items())
                raise ConfigError(f"{e} (grid point {where})" if raw else str(e)) from None
            config = config_to_dict(cfg)
            flat = flatten(config)
            params = {k: flat.get(k, config.get(k)) for k in grid}
            key = content_key(study.name, config, code)
            jobs.append(Job(study.name, params, seed, config, key,
                            f"{name}-{_slug(params)}{'-' if params else ''}s{seed}-{key[:8]}"))
    return Sweep(name, study.name, grid, list(seeds), list(base), config_file, definition, jobs)


# ---------------------------------------------------------------------------------------------
# state and summary


def sweep_dir(store: RunStore, name: str) -> Path:
    return store.root / SWEEPS_DIR / name


def run_status(store: RunStore, run_id: str) -> tuple[str, RunRecord | None]:
    """(status, record): pending (no folder yet), or as the run's folder says (``died``
    included)."""
    record = read_record(store.root / run_id)
    return ("pending" if record is None else record.status), record


def _counts(runs: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for run in runs:
        counts[run["status"]] = counts.get(run["status"], 0) + 1
    return counts


def summarise(store: RunStore, sweep: Sweep) -> dict[str, Any]:
    """Every cell's status and numeric metrics, and per grid point mean, std, 95% CI over the
    seeds whose run completed."""
    runs = []
    for job in sweep.jobs:
        status, record = run_status(store, job.id)
        metrics = {}
        if status in FINAL:
            metrics = {_generic(k, job.params): v for k, v in flatten(record.metrics).items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)}
        runs.append({"id": job.id, "key": job.key, "params": job.params, "seed": job.seed,
                     "status": status, "metrics": metrics})
    points = []
    for params, group in itertools.groupby(runs, key=lambda r: json.dumps(r["params"],
                                                                            sort_keys=True)):
        group = list(group)
        done = [r for r in group if r["status"] == "completed"]
        keys = list(dict.fromkeys(k for r in done for k in r["metrics"]))
        stats = {}
        for key in keys:
            values = [r["metrics"][key] for r in done if key in r["metrics"]]
            s = summarize(values)
            stats[key] = {"mean": s.mean, "std": s.std, "ci95": s.ci95, "n": s.n,
                          "seeds": [r["seed"] for r in done if key in r["metrics"]],
                          "values": values}
        points.append({"params": json.loads(params), "runs": [r["id"] for r in group],
                       "seeds": [r["seed"] for r in group], "metrics": stats})
    counts = _counts(runs)
    return {"name": sweep.name, "study": sweep.study, "definition": sweep.definition,
            "grid": sweep.grid, "seeds": sweep.seeds,
            "base": {k.strip(): v.strip() for k, _, v in (o.partition("=") for o in sweep.base)},
            "config_file": sweep.config_file, "counts": counts,
            "runs": runs, "points": points}


def _generic(metric: str, params: dict[str, Any]) -> str:
    """A metric key with the cell's own grid value named by its grid key: sweeping
    ``methods=margin,random`` gives ``accuracy.digits.<methods>`` in both rows (not
    ``accuracy.digits.margin`` in one and ``.random`` in the other), so the rows compare."""
    parts = metric.split(".")
    for key, value in params.items():
        name = value[0] if isinstance(value, list) and len(value) == 1 else value
        if isinstance(name, str):
            parts = [f"<{key}>" if part == name else part for part in parts]
    return ".".join(parts)


def write_summary(store: RunStore, sweep: Sweep) -> dict[str, Any]:
    summary = summarise(store, sweep)
    atomic_write(sweep_dir(store, sweep.name) / SUMMARY_FILE, to_json(summary))
    return summary


def _check_definition(store: RunStore, sweep: Sweep) -> None:
    """A sweep name already used by another sweep definition is refused, as a run name is.
    The same definition with changed code is the same sweep: its cells get new keys, so they
    run again, and the summary follows them (the earlier runs stay in the store)."""
    path = sweep_dir(store, sweep.name) / SUMMARY_FILE
    if path.is_file() and json.loads(path.read_text()).get("definition") != sweep.definition:
        raise StoreError(f"sweep {sweep.name!r} exists with another study, config, grid or "
                         "seeds; give another --name")


# ---------------------------------------------------------------------------------------------
# running


@dataclass(frozen=True)
class Task:
    """A cell as a backend runs it: the ``thresher`` command, writing only its run folder, with
    its output in the sweep's ``logs/``."""

    job: Job
    root: Path  # the runs folder (on a cluster: a filesystem every worker shares)
    sweep: str

    @property
    def folder(self) -> Path:
        return self.root / SWEEPS_DIR / self.sweep

    @property
    def log(self) -> Path:
        return self.folder / "logs" / f"{self.job.name}.log"

    def command(self, threads: int) -> list[str]:
        config = self.folder / "configs" / f"{self.job.key[:16]}.yaml"
        return [sys.executable, "-m", "thresher.cli", "-q", self.job.study, "--config",
                str(config), "--name", self.job.name, "--runs-dir", str(self.root),
                "--threads", str(threads), "--sweep", self.sweep, "--no-index"]


Done = Callable[[Task, int], None]  # (task, exit code): called in the driver as each ends
Launch = Callable[[Sequence[Task], Done], None]


def run_sweep(sweep: Sweep, store: RunStore, launch: Launch) -> dict[str, Any]:
    """Run every cell not already final through ``launch`` (a backend), indexing each run and
    rewriting the summary as it ends. Ctrl-C / SIGTERM reach the backend as KeyboardInterrupt:
    it stops its workers (each records itself as interrupted) before this returns."""
    store.ensure_index()
    _check_definition(store, sweep)
    todo = []
    for job in sweep.jobs:
        status, _ = run_status(store, job.id)
        if status in FINAL:
            continue
        if status == "running":
            raise StoreError(f"run {job.id} of sweep {sweep.name} is still running; wait for "
                             "it or stop it before running the sweep again")
        task = Task(job, store.root, sweep.name)
        atomic_write(task.folder / "configs" / f"{job.key[:16]}.yaml", dump_yaml(job.config))
        task.log.parent.mkdir(parents=True, exist_ok=True)
        todo.append(task)
    write_summary(store, sweep)
    log.info("sweep %s: %d runs, %d already done, %d to run", sweep.name, len(sweep.jobs),
             len(sweep.jobs) - len(todo), len(todo))

    def done(task: Task, returncode: int) -> None:
        record = store.add(store.root / task.job.study / task.job.name)
        status = record.status if record is not None else "pending"
        if status == "completed":
            log.info("%s: completed", task.job.id)
        else:
            log.warning("%s: %s (exit code %d; its output is in %s)", task.job.id, status,
                        returncode, task.log)
        write_summary(store, sweep)

    try:
        launch(todo, done)
    finally:
        summary = write_summary(store, sweep)
    return summary


def sweep_status(store: RunStore, name: str) -> dict[str, Any]:
    """The stored summary with every cell's status read afresh from its folder."""
    path = sweep_dir(store, name) / SUMMARY_FILE
    if not path.is_file():
        names = sorted(p.name for p in (store.root / SWEEPS_DIR).glob("*")) \
            if (store.root / SWEEPS_DIR).is_dir() else []
        raise StoreError(f"no sweep {name!r} in {store.root}"
                         + (f"; sweeps: {', '.join(names)}" if names else ""))
    summary = json.loads(path.read_text())
    for run in summary["runs"]:
        run["status"], _ = run_status(store, run["id"])
    summary["counts"] = _counts(summary["runs"])
    return summary


# ---------------------------------------------------------------------------------------------
# the local backend


def default_jobs() -> tuple[int, int]:
    """(jobs, GPUs): one job per GPU where there are GPUs, else one per core."""
    import torch

    gpus = torch.cuda.device_count()
    cores = usable_cores()
    return (gpus or cores), gpus


def local_launcher(jobs: int, gpus: int = 0) -> Launch:
    """A pool of ``jobs`` worker processes; each gets ``cores // jobs`` torch threads (so two
    jobs on two cores do not fight) and, with GPUs, one GPU of its own."""
    cores = usable_cores()
    threads = max(1, cores // jobs)

    def launch(work: Sequence[Task], done: Done) -> None:
        pending = list(work)
        running: dict[subprocess.Popen, tuple[Task, int]] = {}
        free = list(range(jobs))
        try:
            with signals_checked() as stop:
                while pending or running:
                    stop()
                    launch_free(pending, running, free)
                    proc = _wait_any(running, stop)
                    task, slot = running.pop(proc)
                    free.append(slot)
                    done(task, proc.returncode)
        except BaseException:
            _stop(running, done)
            raise

    def launch_free(pending: list[Task], running: dict[subprocess.Popen, tuple[Task, int]],
                    free: list[int]) -> None:
        while pending and free:
            task = pending.pop(0)
            slot = free.pop(0)
            env = dict(os.environ)
            if gpus:
                env["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)
            # its own session: a Ctrl-C at the terminal reaches the driver only, which passes
            # one SIGINT on to each worker (see `_stop`)
            with open(task.log, "ab") as out:
                proc = subprocess.Popen(task.command(threads), env=env, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            running[proc] = (task, slot)

    return launch


@contextmanager
def signals_checked() -> Iterator[Callable[[], None]]:
    """While the driver waits on its workers, SIGINT and SIGTERM only set a flag, and the
    yielded ``stop()`` re-raises them through the previous handlers at a point of our choosing:
    raised anywhere (inside the fork of a new worker, a logging lock), Python may swallow the
    KeyboardInterrupt and the sweep would carry on."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}

    def stop() -> None:
        if caught:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            signal.raise_signal(caught[0])

    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _wait_any(running: dict[subprocess.Popen, Any], stop: Callable[[], None]
              ) -> subprocess.Popen:
    """The first of ``running`` to end (polling: portable), checking for a stop signal."""
    while True:
        stop()
        for proc in running:
            if proc.poll() is not None:
                return proc
        time.sleep(0.05)


def _stop(running: dict[subprocess.Popen, tuple[Task, int]], done: Done,
          grace: float = 60.0) -> None:
    """Ask every worker to stop as Ctrl-C would (each records its run as interrupted, keeping
    its finished units), wait for them, and index what they wrote."""
    for proc in running:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + grace
    for proc, (task, _) in running.items():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        try:
            done(task, proc.returncode)
        except Exception as e:  # the index is best effort here; the folders are the truth
            log.error("could not index %s: %s", task.job.id, e)
