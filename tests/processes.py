"""What the tests that drive the real `thresher` command in subprocesses share."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

CLI = [sys.executable, "-m", "thresher.cli", "-q"]


def wait_for(predicate: Callable[[], bool], timeout: float = 120.0) -> None:
    """Poll until ``predicate()`` holds (the moment to send a signal), failing after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)
