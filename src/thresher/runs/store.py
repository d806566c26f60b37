"""Run directories and the SQLite index of them.

Layout: ``<root>/<study>/<run-name>/`` holds ``config.yaml`` and ``summary.json`` (both from
the first moment; the summary is rewritten with the outcome), ``code.diff`` (when the code
differs from its commit), ``units/`` (each finished unit of work, see `thresher.runs.units`),
``heartbeat`` and artifacts, ``results.txt`` among them. ``<root>/thresher.db`` indexes every
run so results can be listed without walking directories; the directories are the ground truth
and the index is rebuilt from them when it is missing, damaged or cannot be written.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import platform
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import yaml

import thresher
from thresher.registry import did_you_mean
from thresher.runs import index
from thresher.runs.config import config_to_dict, dump_yaml, flatten, to_plain
from thresher.runs.files import atomic_path, atomic_write, to_json
from thresher.runs.index import CONFIG_FILE, DB_NAME, SUMMARY_FILE, read_summary
from thresher.runs.owner import HEARTBEAT_S, Heartbeat, owner_alive, this_process
from thresher.runs.units import Units

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; a run's exclusivity is then not enforced
    fcntl = None

__all__ = ["CONFIG_FILE", "DB_NAME", "DIFF_FILE", "RESULTS_FILE", "RUNS_ENV", "SUMMARY_FILE",
           "Run", "RunLookupError", "RunRecord", "RunStore", "StoreError", "atomic_path",
           "atomic_write", "read_results", "to_json"]

log = logging.getLogger("thresher.runs")
T = TypeVar("T")

RUNS_ENV = "THRESHER_RUNS"
RESULTS_FILE = "results.txt"  # the study's rendered table: the CLI prints it after the run
DIFF_FILE = "code.diff"  # uncommitted changes to tracked files when the commit is -dirty
LOCK_FILE = ".lock"
STATUSES = ("running", "completed", "failed", "interrupted", "diverged", "died")
MAX_NAME = 255  # bytes: the longest file name most filesystems allow


class RunLookupError(LookupError):
    """A run reference matched no run, or more than one."""


class StoreError(ValueError):
    """The runs folder cannot be used as asked: missing, a file, not writable, or a run name
    that is taken by a different config or in use."""


# ---------------------------------------------------------------------------------------------
# provenance


def _checkout(repo: str | Path | None) -> Path:
    return Path(repo) if repo is not None else Path(thresher.__file__).resolve().parent


def git_commit(repo: str | Path | None = None) -> str | None:
    """HEAD of the repo holding the thresher package (or ``repo``), None outside git.

    A ``-dirty`` suffix means tracked files differ from HEAD; untracked files (such as the
    runs directory itself) do not count.
    """
    where = _checkout(repo)
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=where, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):  # no git binary, not a directory, hung
        return None
    dirty = status.returncode == 0 and status.stdout.strip() != ""
    return head.stdout.strip() + ("-dirty" if dirty else "")


def git_diff(repo: str | Path | None = None) -> str | None:
    """``git diff HEAD`` of the repo holding the thresher package (or ``repo``): with a
    ``-dirty`` commit it is the only record of the code that produced the results. None
    outside git or when the diff cannot be read; untracked files are not in it."""
    where = _checkout(repo)
    try:
        diff = subprocess.run(["git", "diff", "HEAD"], cwd=where, capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return diff.stdout if diff.returncode == 0 else None


def versions(device: str | None = None) -> dict[str, Any]:
    """Software versions and the settings that decide whether a result reproduces: CPU
    results are bit-identical only at the same torch thread count."""
    torch = sys.modules.get("torch")
    return {
        "python": platform.python_version(),
        "thresher": thresher.__version__,
        "torch": _dist_version("torch"),
        "numpy": _dist_version("numpy"),
        "platform": platform.platform(),
        "device": None if device is None else str(device),
        "threads": torch.get_num_threads() if torch is not None else None,
    }


def _dist_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _check_component(what: str, value: str) -> None:
    if not value or value in (".", "..") or "/" in value or "\\" in value:
        raise StoreError(f"{what} {value!r} must be a plain directory name (no slashes)")
    if len(value.encode()) > MAX_NAME:
        raise StoreError(f"{what} is {len(value.encode())} bytes long; at most {MAX_NAME} fit "
                         f"in a folder name")


@contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM while a run's outcome is written: a second Ctrl-C a moment after
    the first must not cut the record short. Held signals are re-sent afterwards.

    The Python-level handlers are swapped, not the OS signal mask: a signal that arrived just
    before the block is run by whatever handler is installed when Python gets to it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: held.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(held):
            signal.raise_signal(sig)


def _lock(directory: Path) -> Any:
    """An exclusive lock on the run directory for this process's lifetime (released by the OS
    when it dies, however it dies); StoreError when another process holds it."""
    path = directory / LOCK_FILE
    path.touch()
    handle = open(path)  # held until the run ends; read-only, so the disk can still be remounted
    if fcntl is not None:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise StoreError(f"run {directory.parent.name}/{directory.name} is in use by "
                             "another process") from None
    return handle


# ---------------------------------------------------------------------------------------------
# one run


class Run:
    """One run's directory. Use as a context manager so the outcome is always recorded.

    The study fills ``run.metrics`` (and may set ``run.device``) and wraps each unit of work in
    `unit`; leaving the ``with`` block writes summary.json and updates the index: completed,
    failed (an exception), diverged (an exception whose ``run_status`` says so) or interrupted
    (Ctrl-C, SIGTERM). Exceptions are re-raised.
    """

    def __init__(self, store: RunStore, study: str, name: str, directory: Path, config: dict,
                 seed: int | None, device: str | None, started: datetime, commit: str | None,
                 lock: Any, attempt: int = 1, earlier_s: float = 0.0, sweep: str | None = None):
        self.store = store
        self.sweep = sweep
        self.study = study
        self.name = name
        self.dir = directory
        self.config = config
        self.seed = seed
        self.device = device
        self.git_commit = commit
        self.metrics: dict[str, Any] = {}
        self.status = "running"
        self.error: str | None = None
        self.started = started
        self.finished: datetime | None = None
        self.attempt = attempt
        self.units = Units(directory)
        self.owner = this_process(store.heartbeat_s)
        self._earlier_s = earlier_s  # compute time of earlier attempts of a resumed run
        self._clock = time.perf_counter()
        self._duration: float | None = None
        self._lock = lock
        self._heartbeat: Heartbeat | None = None  # started once the run is first recorded

    @property
    def id(self) -> str:
        return f"{self.study}/{self.name}"

    def path(self, name: str) -> Path:
        """Where artifact ``name`` lives inside the run directory."""
        return self.dir / name

    def unit(self, key: str, compute: Callable[[], T]) -> T:
        """One unit of the run's work (a seed, a method x seed, a cell): computed once and
        written the moment it is done; a resumed run reads it back instead of repeating it."""
        value, earlier = self.units.get_or_compute(key, compute)
        if earlier:
            log.info("%s: done in an earlier attempt, read back", key)
        return value

    def save_text(self, name: str, text: str) -> Path:
        return atomic_write(self.path(name), text)

    def save_results(self, table: str) -> Path:
        """The run's rendered result table (results.txt): an artifact, not a metric; the CLI
        and ``runs show`` print it."""
        return self.save_text(RESULTS_FILE, table.rstrip("\n") + "\n")

    def save_json(self, name: str, obj: Any) -> Path:
        return atomic_write(self.path(name), to_json(obj))

    def save_figure(self, name: str, fig: Any, **savefig_kwargs: Any) -> Path:
        """Save a matplotlib figure; the format follows the name's suffix (default png)."""
        path = self.path(name)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", **savefig_kwargs)
        return path

    def save_torch(self, name: str, obj: Any) -> Path:
        import torch  # only runs that save tensors pay for the import

        path = self.path(name)
        with atomic_path(path) as tmp:
            torch.save(obj, tmp)
        return path

    def summary(self) -> dict[str, Any]:
        """The summary.json seam: what ran, with which code, by whom, and what came out."""
        return {
            "study": self.study,
            "name": self.name,
            "config": self.config,
            "metrics": to_plain(self.metrics),
            "seed": self.seed,
            "versions": versions(self.device),
            "git_commit": self.git_commit,
            "started": _iso(self.started),
            "finished": None if self.finished is None else _iso(self.finished),
            "duration_s": self._duration,
            "status": self.status,
            "error": self.error,
            "attempt": self.attempt,
            "owner": self.owner,
            "sweep": self.sweep,
        }

    def record(self) -> dict[str, Any]:
        """Write summary.json and the index row as the run stands now."""
        summary = self.summary()
        atomic_write(self.path(SUMMARY_FILE), to_json(summary))
        self.store._write_row(summary)
        return summary

    def finish(self, status: str = "completed", error: str | None = None) -> dict[str, Any]:
        """Record the outcome and let the run go; the ``with`` block calls this for you."""
        self.finished = _utcnow()
        self._duration = round(self._earlier_s + time.perf_counter() - self._clock, 3)
        self.status, self.error = status, error
        try:
            return self.record()
        finally:
            self.close()

    def close(self) -> None:
        """Stop the heartbeat and release the directory (idempotent)."""
        if self._heartbeat is not None:
            self._heartbeat.stop()
        if not self._lock.closed:
            self._lock.close()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: Any) -> bool:
        with _signals_held():
            if exc is None:
                self.finish()
                return False
            status = ("interrupted" if isinstance(exc, KeyboardInterrupt)
                      else getattr(exc, "run_status", "failed"))
            message = f"{exc_type.__name__}: {exc}" if str(exc) else exc_type.__name__
            try:
                self.save_text("traceback.txt",
                               "".join(traceback.format_exception(exc_type, exc, tb)))
                self.finish(status, message)
            except (OSError, sqlite3.Error) as e:  # a full or read-only disk: the run shows
                self.close()  # as died, and the units it finished are kept
                log.error("could not record run %s as %s: %s", self.id, status, e)
        return False  # re-raise


# ---------------------------------------------------------------------------------------------
# the store


@dataclass
class RunRecord:
    """One run as the index (or its summary.json) knows it; a ``running`` run whose process is
    gone has status ``died``."""

    id: str
    study: str
    name: str
    path: Path
    status: str
    seed: int | None
    started: str | None
    finished: str | None
    duration_s: float | None
    git_commit: str | None
    error: str | None
    config: dict[str, Any]
    metrics: dict[str, Any]
    owner: dict[str, Any] | None = None
    sweep: str | None = None  # the sweep that made the run, if one did

    def summary(self) -> dict[str, Any] | None:
        """The run's summary.json, or None if it has none."""
        return read_summary(self.path)


def read_results(directory: Path) -> str | None:
    """A run directory's rendered result table (``results.txt``), None when it has none."""
    path = Path(directory) / RESULTS_FILE
    return path.read_text() if path.is_file() else None


def _status(status: str, owner: dict | None, directory: Path) -> str:
    return "died" if status == "running" and not owner_alive(owner, directory) else status


def _record_from_summary(directory: Path, summary: dict[str, Any]) -> RunRecord:
    directory = Path(directory)
    return RunRecord(
        id=f"{summary['study']}/{summary['name']}", study=summary["study"],
        name=summary["name"], path=directory,
        status=_status(summary["status"], summary.get("owner"), directory),
        seed=summary.get("seed"), started=summary.get("started"),
        finished=summary.get("finished"), duration_s=summary.get("duration_s"),
        git_commit=summary.get("git_commit"), error=summary.get("error"),
        config=summary.get("config") or {}, metrics=summary.get("metrics") or {},
        owner=summary.get("owner"), sweep=summary.get("sweep"))


def read_record(directory: Path) -> RunRecord | None:
    """The run in ``directory`` as its summary.json says (``died`` derived), None without one."""
    summary = read_summary(directory)
    return None if summary is None else _record_from_summary(Path(directory), summary)


def _config_changes(old: dict, new: dict, limit: int = 5) -> list[str]:
    before, after = flatten(old), flatten(new)
    keys = [k for k in dict.fromkeys([*before, *after]) if before.get(k) != after.get(k)]
    shown = [f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in keys[:limit]]
    return shown + ([f"... {len(keys) - limit} more"] if len(keys) > limit else [])


class RunStore:
    """All runs under one root directory (default ``$THRESHER_RUNS`` or ``./runs``)."""

    def __init__(self, root: str | Path | None = None, repo: str | Path | None = None,
                 heartbeat_s: float = HEARTBEAT_S, indexed: bool = True):
        self.root = Path(root if root is not None else os.environ.get(RUNS_ENV) or "runs")
        self.repo = repo  # the checkout whose code each run records (None: thresher's own)
        self.heartbeat_s = heartbeat_s
        # False: runs write their folders only and someone else indexes them (`add`), as the
        # driver of a sweep does for its workers: SQLite must not be written from many machines
        # over a network filesystem
        self.indexed = indexed

    @property
    def db_path(self) -> Path:
        return self.root / DB_NAME

    # -- the folder ------------------------------------------------------------------------

    def writable(self) -> bool:
        return os.access(self.root, os.W_OK | os.X_OK) and (
            not self.db_path.exists() or os.access(self.db_path, os.W_OK))

    def check_readable(self) -> None:
        """StoreError unless the root is an existing folder; reading never creates one."""
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"runs folder {self.root} is a file; --runs-dir or {RUNS_ENV} "
                             "must name a folder")
        if not self.root.is_dir():
            raise StoreError(f"no runs folder {self.root} (check --runs-dir or {RUNS_ENV})")

    def check_writable(self) -> None:
        """Create the root if needed; StoreError (before any work) if runs cannot go there."""
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"runs folder {self.root} is a file; --runs-dir or {RUNS_ENV} "
                             "must name a folder")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create runs folder {self.root}: {e.strerror}") from None
        if not self.writable():
            raise StoreError(f"runs folder {self.root} is not writable (read-only disk or "
                             "permissions); choose another with --runs-dir or " + RUNS_ENV)

    # -- starting and resuming -------------------------------------------------------------

    def start(self, study: str, config: Any, name: str | None = None, seed: int | None = None,
              device: str | None = None, sweep: str | None = None) -> Run:
        """Open a run: a new directory, or — when ``name`` is taken by a run of the same
        config — that run, resumed (its finished units are kept).

        ``name`` defaults to ``<YYYYmmdd-HHMMSS>-<random>`` (UTC; a taken one gets ``-1``,
        ``-2``, ...). ``seed`` defaults to ``config["seed"]`` when the config has one. A name
        taken by another config, or by a run still going, is a StoreError.
        """
        _check_component("study", study)
        if name is not None:
            _check_component("run name", name)
        snapshot = config_to_dict(config)
        if seed is None and isinstance(snapshot.get("seed"), int):
            seed = snapshot["seed"]
        if self.indexed:
            self.ensure_index()  # before the new folder, which would look like a lost index
        else:
            self.check_writable()
        parent = self.root / study
        parent.mkdir(exist_ok=True)
        if name is not None:
            try:
                (parent / name).mkdir()
            except FileExistsError:
                return self._resume(study, name, snapshot, seed, device, sweep)
            directory = parent / name
        else:
            directory = self._new_dir(parent, f"{_utcnow():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}")
        lock = _lock(directory)
        return self._open(study, directory, snapshot, seed, device, lock, _utcnow(), 1, 0.0,
                          sweep)

    def _open(self, study: str, directory: Path, snapshot: dict, seed: int | None,
              device: str | None, lock: Any, started: datetime, attempt: int,
              earlier_s: float, sweep: str | None) -> Run:
        commit = git_commit(self.repo)
        if not (directory / CONFIG_FILE).is_file():
            atomic_write(directory / CONFIG_FILE, dump_yaml(snapshot))
        diff = git_diff(self.repo) if commit is not None and commit.endswith("-dirty") else None
        if diff:
            atomic_write(directory / DIFF_FILE, diff)
        run = Run(self, study, directory.name, directory, snapshot, seed, device, started,
                  commit, lock, attempt, earlier_s, sweep)
        try:
            run.record()
            run._heartbeat = Heartbeat(directory, self.heartbeat_s)
        except BaseException:
            run.close()
            raise
        return run

    def _resume(self, study: str, name: str, snapshot: dict, seed: int | None,
                device: str | None, sweep: str | None) -> Run:
        directory = self.root / study / name
        if not directory.is_dir():
            raise StoreError(f"{directory} exists and is not a run folder")
        lock = _lock(directory)
        try:
            summary = read_summary(directory) or {}
            config_path = directory / CONFIG_FILE
            if config_path.is_file():
                stored = yaml.safe_load(config_path.read_text()) or {}
                changes = _config_changes(stored, yaml.safe_load(dump_yaml(snapshot)) or {})
                if changes:
                    raise StoreError(
                        f"run {study}/{name} exists with a different config "
                        f"({'; '.join(changes)}); give another --name, or --resume "
                        f"{study}/{name} to continue it with its own config")
            if summary.get("status") == "running" and owner_alive(summary.get("owner"),
                                                                  directory):
                owner = summary["owner"]
                raise StoreError(f"run {study}/{name} is still running (pid {owner['pid']} "
                                 f"on {owner['host']})")
            done = len(Units(directory).keys())
            log.info("resuming run %s/%s: %d unit(s) already done", study, name, done)
            started = (datetime.fromisoformat(summary["started"]) if summary.get("started")
                       else _utcnow())
            return self._open(study, directory, snapshot, seed, device, lock, started,
                              int(summary.get("attempt") or 1) + 1,
                              float(summary.get("duration_s") or 0.0), sweep)
        except BaseException:
            lock.close()
            raise

    def _new_dir(self, parent: Path, name: str) -> Path:
        for i in itertools.count():
            candidate = parent / (name if i == 0 else f"{name}-{i}")
            try:
                candidate.mkdir()  # atomic: two processes never get the same directory
                return candidate
            except FileExistsError:
                continue
        raise AssertionError("unreachable")

    # -- the index -------------------------------------------------------------------------

    @contextmanager
    def _db(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection to the index, in one transaction committed on success.

        Reading never creates anything. A store that cannot be written is read through an
        index built in memory from its directories; a missing or damaged index file is rebuilt
        from them (with a warning).
        """
        if write:
            self.check_writable()
        else:
            self.check_readable()
        if not self.writable():
            con = index.memory_index(self.root)
        elif not self.db_path.exists() and not write and not any(index.run_dirs(self.root)):
            con = index.memory_index(self.root)  # an empty store: leave no file behind
        else:
            con = self._connect()
        try:
            with con:
                yield con
        finally:
            con.close()

    def _connect(self) -> sqlite3.Connection:
        missing = not self.db_path.exists()
        if missing and any(index.run_dirs(self.root)):
            log.warning("runs index %s is missing; rebuilding it from the run folders",
                        self.db_path)
        try:
            return index.open_file(self.db_path, self.root)
        except sqlite3.DatabaseError as e:
            if not index.damaged(e):
                raise
            kept = self.db_path.with_name(f"{DB_NAME}.damaged-{_utcnow():%Y%m%d-%H%M%S}")
            log.warning("runs index %s is damaged (%s); rebuilding it from the run folders "
                        "(the damaged file is kept as %s)", self.db_path, e, kept.name)
            os.replace(self.db_path, kept)
            for suffix in ("-wal", "-shm"):
                Path(f"{self.db_path}{suffix}").unlink(missing_ok=True)
            return index.open_file(self.db_path, self.root)

    def _write_row(self, summary: dict[str, Any]) -> None:
        if self.indexed:
            with self._db(write=True) as con:
                index.insert(con, summary)

    def add(self, directory: Path) -> RunRecord | None:
        """Index a run folder written by another process (a sweep's worker); None when the
        folder holds no run (its process died before writing anything)."""
        summaries = list(index.scan([Path(directory)]))
        if not summaries:
            return None
        with self._db(write=True) as con:
            index.insert(con, summaries[0])
        return _record_from_summary(Path(directory), summaries[0])

    def ensure_index(self) -> None:
        """Create the index (rebuilt from any run folders already there) if it is missing."""
        with self._db(write=True):
            pass

    def reindex(self) -> int:
        """Rebuild the index from the run directories; returns how many runs it holds."""
        with self._db(write=True) as con:
            return index.fill(con, self.root)

    def _record(self, row: sqlite3.Row) -> RunRecord:
        directory = self.root / row["study"] / row["name"]
        owner = json.loads(row["owner_json"] or "null")
        return RunRecord(
            id=row["id"], study=row["study"], name=row["name"], path=directory,
            status=_status(row["status"], owner, directory), seed=row["seed"],
            started=row["started"], finished=row["finished"], duration_s=row["duration_s"],
            git_commit=row["git_commit"], error=row["error"],
            config=json.loads(row["config_json"] or "{}"),
            metrics=json.loads(row["metrics_json"] or "{}"), owner=owner, sweep=row["sweep"])

    def list(self, study: str | None = None, status: str | None = None,
             limit: int | None = None) -> list[RunRecord]:
        """Runs from the index, newest first (``status`` as shown: ``died`` included)."""
        sql, params = "SELECT * FROM runs", []
        if study is not None:
            sql += " WHERE study = ?"
            params.append(study)
        sql += " ORDER BY started DESC, rowid DESC"
        with self._db() as con:
            records = [self._record(row) for row in con.execute(sql, params)]
        records += self._unindexed({r.id for r in records}, study)
        if status is not None:
            records = [r for r in records if r.status == status]
        return records if limit is None else records[:limit]

    def _unindexed(self, known: set[str], study: str | None) -> list[RunRecord]:
        """Run folders the index does not know (a run killed before its first row, or copied
        in), read from their folders; ``reindex`` adds them to the index for good."""
        directories = [d for d in index.run_dirs(self.root)
                       if f"{d.parent.name}/{d.name}" not in known
                       and (study is None or d.parent.name == study)]
        return [_record_from_summary(self.root / s["study"] / s["name"], s)
                for s in index.scan(directories)]

    def get(self, ref: str | Path) -> RunRecord:
        """Find one run by id (``study/name``), run directory path, name, or unique prefix.

        summary.json wins over the index when present.
        """
        text = str(ref)
        directory = Path(ref)
        found = read_record(directory) if directory.is_dir() else None
        if found is not None:
            return found
        records = self.list()
        for match in (lambda r: r.id == text, lambda r: r.name == text,
                      lambda r: r.name.startswith(text) or r.id.startswith(text)):
            found = [r for r in records if match(r)]
            if len(found) == 1:
                return self._fresh(found[0])
            if found:
                raise RunLookupError(f"run {text!r} is ambiguous; it matches: "
                                     f"{', '.join(r.id for r in found)}")
        raise RunLookupError(self._not_found(text, records))

    def _fresh(self, record: RunRecord) -> RunRecord:
        return read_record(record.path) or record

    def _not_found(self, ref: str, records: list[RunRecord]) -> str:
        message = f"no run {ref!r} in {self.root}"
        if not records:
            return message + " (the store is empty)"
        close = did_you_mean(ref, [r.id for r in records] + [r.name for r in records])
        if close:
            return message + f"; did you mean {close!r}?"
        return message + f"; recent runs: {', '.join(r.id for r in records[:5])}"

    # -- removing --------------------------------------------------------------------------

    def delete(self, record: RunRecord, force: bool = False) -> None:
        """Remove a run's folder and its index row together (a running run needs ``force``)."""
        if record.status == "running" and not force:
            raise StoreError(f"run {record.id} is still running (pid "
                             f"{(record.owner or {}).get('pid')}); stop it first or use --force")
        if record.path.exists():
            shutil.rmtree(record.path)
        with self._db(write=True) as con:
            con.execute("DELETE FROM runs WHERE id = ?", (record.id,))

    def gc(self, statuses: tuple[str, ...] = (), dry_run: bool = False) -> dict[str, list[str]]:
        """Tidy the store: index rows whose folder is gone, temporary files left by killed
        writers in runs no longer running, and (when asked) every run with one of
        ``statuses``. Returns what was (or, with ``dry_run``, would be) removed."""
        for status in statuses:
            if status not in STATUSES:
                raise StoreError(f"unknown status {status!r}; choose from {', '.join(STATUSES)}")
        removed: dict[str, list[str]] = {"rows": [], "temporary files": [], "runs": []}
        records = self.list()
        for record in records:
            if not record.path.is_dir():
                removed["rows"].append(record.id)
            elif record.status in statuses:
                removed["runs"].append(record.id)
            elif record.status != "running":
                removed["temporary files"] += [str(p.relative_to(self.root))
                                               for p in record.path.rglob(".*.tmp")]
        if dry_run:
            return removed
        for record in records:
            if record.id in removed["runs"]:
                self.delete(record)
        for rel in removed["temporary files"]:
            (self.root / rel).unlink(missing_ok=True)
        with self._db(write=True) as con:
            con.executemany("DELETE FROM runs WHERE id = ?", [(i,) for i in removed["rows"]])
        return removed
