"""Which process owns a running run, and whether it is still alive.

A run killed with SIGKILL (or the machine with it) cannot record its end, so a ``running``
record alone says nothing. Each run records its owner — host, pid and the process's start time
(pids are reused) — and touches a heartbeat file while it works. On the owner's host the
process table answers exactly; elsewhere (a store on a shared disk, or copied off the machine)
a heartbeat older than a few intervals means the owner is gone.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from thresher.data.cache import pid_alive

HEARTBEAT_FILE = "heartbeat"
HEARTBEAT_S = 30.0  # how often a live run touches its heartbeat file


def process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the name may hold spaces


def this_process(heartbeat_s: float = HEARTBEAT_S) -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "process_start": process_start(pid),
            "heartbeat_s": heartbeat_s}


def owner_alive(owner: dict[str, Any] | None, directory: Path) -> bool:
    """Whether the process that owns a ``running`` run still exists."""
    if not owner:
        return False  # a run recorded before owners were: nothing can be running it now
    if owner.get("host") == socket.gethostname():
        pid = int(owner["pid"])
        if not pid_alive(pid):
            return False
        recorded, now = owner.get("process_start"), process_start(pid)
        return recorded is None or now is None or recorded == now
    interval = float(owner.get("heartbeat_s") or HEARTBEAT_S)
    try:
        age = time.time() - (directory / HEARTBEAT_FILE).stat().st_mtime
    except OSError:
        return False
    return age < max(3 * interval, interval + 60)


class Heartbeat:
    """A daemon thread that touches ``<run>/heartbeat`` every ``interval`` seconds."""

    def __init__(self, directory: Path, interval: float = HEARTBEAT_S):
        self.path = directory / HEARTBEAT_FILE
        self.interval = interval
        self._stop = threading.Event()
        self._beat()
        self._thread = threading.Thread(target=self._loop, name="thresher-heartbeat",
                                        daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        try:
            self.path.touch()
        except OSError:  # a full or read-only disk: the run itself will report it
            pass

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._beat()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
