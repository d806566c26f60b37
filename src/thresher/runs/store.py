"""Run directories and the SQLite results store.

Layout: ``<root>/<study>/<run-name>/`` holds ``config.yaml`` (written at start), ``code.diff``
(at start, when the code differs from its commit), ``summary.json`` (written at the end,
whatever the outcome) and artifacts, ``results.txt`` among them; ``<root>/thresher.db``
indexes every run so results can be listed and compared without walking directories. The
directory is the ground truth; the DB is an index that parallel processes can write at once
(WAL + timeout).
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import secrets
import sqlite3
import subprocess
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import thresher
from thresher.registry import did_you_mean
from thresher.runs.config import config_to_dict, dump_yaml, to_plain

RUNS_ENV = "THRESHER_RUNS"
DB_NAME = "thresher.db"
CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "summary.json"
RESULTS_FILE = "results.txt"  # the study's rendered table: the CLI prints it after the run
DIFF_FILE = "code.diff"  # uncommitted changes to tracked files when the commit is -dirty

_COLUMNS = ("id", "study", "name", "path", "status", "seed", "started", "finished",
            "duration_s", "git_commit", "error", "config_json", "metrics_json")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, study TEXT NOT NULL, name TEXT NOT NULL, path TEXT NOT NULL,
    status TEXT NOT NULL, seed INTEGER, started TEXT, finished TEXT, duration_s REAL,
    git_commit TEXT, error TEXT, config_json TEXT, metrics_json TEXT
)"""


class RunLookupError(LookupError):
    """A run reference matched no run, or more than one."""


# ---------------------------------------------------------------------------------------------
# files


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; it replaces ``path`` only if the block succeeds.

    Readers never see a half-written file, and an exception leaves no temp file behind. Use it
    for writers that want a filename (matplotlib, torch.save).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` (str as UTF-8) to ``path`` all at once, flushed to disk."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def to_json(obj: Any) -> str:
    """JSON text of ``obj`` after ``to_plain`` (numpy/torch scalars become Python numbers).

    Non-finite floats are kept as NaN/Infinity, which Python's json reads back unchanged.
    """
    return json.dumps(to_plain(obj), indent=2) + "\n"


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


def versions(device: str | None = None) -> dict[str, str | None]:
    """Software versions that decide whether a result reproduces."""
    return {
        "python": platform.python_version(),
        "thresher": thresher.__version__,
        "torch": _dist_version("torch"),
        "numpy": _dist_version("numpy"),
        "platform": platform.platform(),
        "device": None if device is None else str(device),
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
        raise ValueError(f"{what} {value!r} must be a plain directory name (no slashes)")


# ---------------------------------------------------------------------------------------------
# one run


class Run:
    """One run's directory. Use as a context manager so the outcome is always recorded.

    The study fills ``run.metrics`` (and may set ``run.device``); leaving the ``with`` block
    writes summary.json and updates the DB: completed, failed (exception) or interrupted
    (Ctrl-C). Exceptions are re-raised.
    """

    def __init__(self, store: RunStore, study: str, name: str, directory: Path, config: dict,
                 seed: int | None, device: str | None, started: datetime, commit: str | None):
        self.store = store
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
        self._clock = time.perf_counter()
        self._duration: float | None = None

    @property
    def id(self) -> str:
        return f"{self.study}/{self.name}"

    def path(self, name: str) -> Path:
        """Where artifact ``name`` lives inside the run directory."""
        return self.dir / name

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
        """The summary.json seam: what ran, with which code, and what came out."""
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
        }

    def finish(self, status: str = "completed", error: str | None = None) -> dict[str, Any]:
        """Write summary.json and update the DB row; the ``with`` block calls this for you."""
        self.finished = _utcnow()
        self._duration = round(time.perf_counter() - self._clock, 3)
        self.status, self.error = status, error
        summary = self.summary()
        atomic_write(self.path(SUMMARY_FILE), to_json(summary))
        self.store._write_row(summary, self.dir)
        return summary

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: Any) -> bool:
        if exc is None:
            self.finish()
            return False
        self.save_text("traceback.txt", "".join(traceback.format_exception(exc_type, exc, tb)))
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        message = f"{exc_type.__name__}: {exc}" if str(exc) else exc_type.__name__
        self.finish(status, message)
        return False  # re-raise


# ---------------------------------------------------------------------------------------------
# the store


@dataclass
class RunRecord:
    """One run as the DB (or its summary.json) knows it."""

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

    def summary(self) -> dict[str, Any] | None:
        """The run's summary.json, or None if the run never finished writing one."""
        return _read_summary(self.path)


def read_results(directory: Path) -> str | None:
    """A run directory's rendered result table (``results.txt``), None when it has none."""
    path = Path(directory) / RESULTS_FILE
    return path.read_text() if path.is_file() else None


def _read_summary(directory: Path) -> dict[str, Any] | None:
    path = Path(directory) / SUMMARY_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _record_from_summary(directory: Path, summary: dict[str, Any]) -> RunRecord:
    return RunRecord(
        id=f"{summary['study']}/{summary['name']}", study=summary["study"],
        name=summary["name"], path=Path(directory).resolve(), status=summary["status"],
        seed=summary.get("seed"), started=summary.get("started"),
        finished=summary.get("finished"), duration_s=summary.get("duration_s"),
        git_commit=summary.get("git_commit"), error=summary.get("error"),
        config=summary.get("config") or {}, metrics=summary.get("metrics") or {})


def _record_from_row(row: sqlite3.Row) -> RunRecord:
    return RunRecord(
        id=row["id"], study=row["study"], name=row["name"], path=Path(row["path"]),
        status=row["status"], seed=row["seed"], started=row["started"],
        finished=row["finished"], duration_s=row["duration_s"], git_commit=row["git_commit"],
        error=row["error"], config=json.loads(row["config_json"] or "{}"),
        metrics=json.loads(row["metrics_json"] or "{}"))


def _use_wal(con: sqlite3.Connection, attempts: int = 300) -> None:
    """Put the database in WAL mode (readers and writers then don't block each other).

    Switching needs a moment of exclusive access and SQLite reports "database is locked" at once
    instead of waiting, which two processes creating the store together do hit; so retry. The
    mode persists in the file: afterwards the first check finds it set.
    """
    for attempt in range(attempts):
        try:
            if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                con.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or attempt == attempts - 1:
                raise
            time.sleep(0.01 + secrets.randbelow(20) / 1000)  # jitter: the two do not retry in step


class RunStore:
    """All runs under one root directory (default ``$THRESHER_RUNS`` or ``./runs``)."""

    def __init__(self, root: str | Path | None = None, repo: str | Path | None = None):
        self.root = Path(root if root is not None else os.environ.get(RUNS_ENV) or "runs")
        self.repo = repo  # the checkout whose code each run records (None: thresher's own)

    @property
    def db_path(self) -> Path:
        return self.root / DB_NAME

    def start(self, study: str, config: Any, name: str | None = None, seed: int | None = None,
              device: str | None = None) -> Run:
        """Create the run directory, write config.yaml and record the run as running.

        ``name`` defaults to ``<YYYYmmdd-HHMMSS>-<random>`` (UTC); a taken name gets ``-1``,
        ``-2``, ... appended. ``seed`` defaults to ``config["seed"]`` when the config has one.
        """
        _check_component("study", study)
        if name is not None:
            _check_component("run name", name)
        snapshot = config_to_dict(config)
        if seed is None and isinstance(snapshot.get("seed"), int):
            seed = snapshot["seed"]
        started = _utcnow()
        commit = git_commit(self.repo)
        directory = self._make_dir(study, name or f"{started:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}")
        run = Run(self, study, directory.name, directory, snapshot, seed, device, started, commit)
        atomic_write(directory / CONFIG_FILE, dump_yaml(snapshot))
        diff = git_diff(self.repo) if commit is not None and commit.endswith("-dirty") else None
        if diff:
            atomic_write(directory / DIFF_FILE, diff)
        self._write_row(run.summary(), directory)
        return run

    def _make_dir(self, study: str, name: str) -> Path:
        parent = self.root / study
        parent.mkdir(parents=True, exist_ok=True)
        for i in itertools.count():
            candidate = parent / (name if i == 0 else f"{name}-{i}")
            try:
                candidate.mkdir()  # atomic: two processes never get the same directory
                return candidate
            except FileExistsError:
                continue
        raise AssertionError("unreachable")

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        self.root.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.db_path, timeout=60)
        con.row_factory = sqlite3.Row
        try:
            _use_wal(con)
            con.execute(_SCHEMA)
            with con:  # one transaction, committed on success
                yield con
        finally:
            con.close()

    def _write_row(self, summary: dict[str, Any], directory: Path) -> None:
        # REPLACE: a directory deleted by hand may leave a stale row with the same id.
        values = (f"{summary['study']}/{summary['name']}", summary["study"], summary["name"],
                  str(Path(directory).resolve()), summary["status"], summary["seed"],
                  summary["started"], summary["finished"], summary["duration_s"],
                  summary["git_commit"], summary["error"],
                  json.dumps(to_plain(summary["config"])), json.dumps(to_plain(summary["metrics"])))
        placeholders = ", ".join("?" for _ in _COLUMNS)
        with self._db() as con:
            con.execute(f"INSERT OR REPLACE INTO runs ({', '.join(_COLUMNS)}) "
                        f"VALUES ({placeholders})", values)

    def list(self, study: str | None = None, status: str | None = None,
             limit: int | None = None) -> list[RunRecord]:
        """Runs from the DB, newest first."""
        where, params = [], []
        if study is not None:
            where.append("study = ?")
            params.append(study)
        if status is not None:
            where.append("status = ?")
            params.append(status)
        sql = "SELECT * FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started DESC, rowid DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        with self._db() as con:
            return [_record_from_row(row) for row in con.execute(sql, params)]

    def get(self, ref: str | Path) -> RunRecord:
        """Find one run by id (``study/name``), run directory path, name, or unique prefix.

        summary.json wins over the DB when present; a run that died without writing one
        shows what the DB last knew (usually ``running``).
        """
        text = str(ref)
        records = self.list()
        by_id = [r for r in records if r.id == text]
        if by_id:
            return self._fresh(by_id[0])
        directory = Path(ref)
        if directory.is_dir():
            summary = _read_summary(directory)
            if summary is not None:
                return _record_from_summary(directory, summary)
            resolved = directory.resolve()
            by_path = [r for r in records if r.path == resolved]
            if by_path:
                return by_path[0]
        for match in (lambda r: r.name == text,
                      lambda r: r.name.startswith(text) or r.id.startswith(text)):
            found = [r for r in records if match(r)]
            if len(found) == 1:
                return self._fresh(found[0])
            if found:
                raise RunLookupError(f"run {text!r} is ambiguous; it matches: "
                                     f"{', '.join(r.id for r in found)}")
        raise RunLookupError(self._not_found(text, records))

    def _fresh(self, record: RunRecord) -> RunRecord:
        summary = _read_summary(record.path)
        return record if summary is None else _record_from_summary(record.path, summary)

    def _not_found(self, ref: str, records: list[RunRecord]) -> str:
        message = f"no run {ref!r} in {self.root}"
        if not records:
            return message + " (the store is empty)"
        close = did_you_mean(ref, [r.id for r in records] + [r.name for r in records])
        if close:
            return message + f"; did you mean {close!r}?"
        return message + f"; recent runs: {', '.join(r.id for r in records[:5])}"
