"""The SQLite index of a runs folder: a cache of what its run directories say.

Every run directory holds ``summary.json`` from its first moment, so the index can always be
rebuilt from the directories: when it is missing, damaged, or from an older layout. Paths are
not stored — a run lives at ``<root>/<study>/<name>`` — so a folder moved, copied or synced to
another machine keeps working.
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from thresher.runs.files import to_json

log = logging.getLogger("thresher.runs")

DB_NAME = "thresher.db"
CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "summary.json"
SCHEMA_VERSION = 3  # 1: absolute paths, no owner; 2: no sweep. Older ones are rebuilt from
# the directories on first use
COLUMNS = ("id", "study", "name", "status", "seed", "started", "finished", "duration_s",
           "git_commit", "error", "sweep", "owner_json", "config_json", "metrics_json")
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, study TEXT NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL,
    seed INTEGER, started TEXT, finished TEXT, duration_s REAL, git_commit TEXT, error TEXT,
    sweep TEXT, owner_json TEXT, config_json TEXT, metrics_json TEXT
)"""


def row_values(summary: dict[str, Any]) -> tuple:
    return (f"{summary['study']}/{summary['name']}", summary["study"], summary["name"],
            summary["status"], summary.get("seed"), summary.get("started"),
            summary.get("finished"), summary.get("duration_s"), summary.get("git_commit"),
            summary.get("error"), summary.get("sweep"), to_json(summary.get("owner"), indent=None),
            to_json(summary.get("config") or {}, indent=None),
            to_json(summary.get("metrics") or {}, indent=None))


def insert(con: sqlite3.Connection, summary: dict[str, Any]) -> None:
    # REPLACE: a directory deleted by hand may leave a stale row with the same id.
    con.execute(f"INSERT OR REPLACE INTO runs ({', '.join(COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in COLUMNS)})", row_values(summary))


def read_summary(directory: Path) -> dict[str, Any] | None:
    path = Path(directory) / SUMMARY_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def run_dirs(root: Path) -> Iterator[Path]:
    """``<root>/<study>/<name>`` folders that hold a run (a config.yaml or summary.json)."""
    for study in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for directory in sorted(p for p in study.iterdir() if p.is_dir()):
            if (directory / SUMMARY_FILE).is_file() or (directory / CONFIG_FILE).is_file():
                yield directory


def scan(directories: Iterable[Path]) -> Iterator[dict[str, Any]]:
    """The summary of each run directory; a run cut short before its first summary (only
    config.yaml) reads as running with no owner, which lists as died."""
    for directory in directories:
        try:
            summary = read_summary(directory)
            if summary is None:
                summary = {"config": yaml.safe_load((directory / CONFIG_FILE).read_text()),
                           "status": "running"}
        except (OSError, ValueError, yaml.YAMLError) as e:
            log.warning("skipping %s: %s", directory, e)
            continue
        yield {**summary, "study": directory.parent.name, "name": directory.name}


def fill(con: sqlite3.Connection, root: Path) -> int:
    """Replace the table's contents with what the directories say; returns the run count."""
    con.execute("DROP TABLE IF EXISTS runs")
    con.execute(SCHEMA)
    count = 0
    for summary in scan(run_dirs(root)):
        insert(con, summary)
        count += 1
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return count


def memory_index(root: Path) -> sqlite3.Connection:
    """An index built in memory from the directories, for a store that cannot be written."""
    con = sqlite3.connect(":memory:")
    con.row_factory = sqlite3.Row
    with con:
        fill(con, root)
    return con


def damaged(error: sqlite3.DatabaseError) -> bool:
    """A database error that means a broken file (not a busy one)."""
    text = str(error).lower()
    return (not isinstance(error, sqlite3.OperationalError) or "malformed" in text
            or "not a database" in text or "no such table" in text)


def use_wal(con: sqlite3.Connection, attempts: int = 300) -> None:
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


def open_file(path: Path, root: Path) -> sqlite3.Connection:
    """Connect to the index file, creating or upgrading it (from the directories) as needed.

    Raises sqlite3.DatabaseError for a damaged file (see `damaged`).
    """
    con = sqlite3.connect(path, timeout=60, isolation_level=None)
    con.row_factory = sqlite3.Row
    try:
        use_wal(con)
        version = con.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            con.execute("BEGIN IMMEDIATE")  # one process upgrades; the others then see it done
            has_table = con.execute("SELECT count(*) FROM sqlite_master WHERE name = 'runs'"
                                    ).fetchone()[0]
            version = con.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                count = fill(con, root)
                if has_table:
                    log.info("runs index %s upgraded: %d runs read from their folders",
                             path, count)
            con.execute("COMMIT")
        con.execute("SELECT count(*) FROM runs").fetchone()  # a damaged file fails here
    except BaseException:
        con.close()
        raise
    con.isolation_level = ""  # back to the default: `with con` commits a transaction
    return con
