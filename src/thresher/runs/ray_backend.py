"""The ``ray`` backend of `thresher sweep`: each cell a Ray task (optional: ``thresher[ray]``).

A task runs the same ``thresher`` command the local pool runs, on whichever node Ray places it,
with ``num_cpus`` torch threads and a GPU where the sweep has GPUs. The runs folder must be a
path every node sees (a shared filesystem): workers write their run folders there, and the
driver alone indexes them into SQLite as each task ends — SQLite must not be written over a
network filesystem by many machines at once.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from thresher.runs.sweep import Done, Launch, Task, signals_checked
from thresher.train.device import usable_cores


def _run(command: list[str], log: str) -> int:
    """The task body, on a Ray worker: the cell's command in a subprocess (the node's own
    Python), passing a cancellation on as the SIGINT that makes the run record itself."""
    command = [sys.executable, *command[1:]]
    with open(log, "ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        return proc.wait()
    except BaseException:  # ray.cancel raises KeyboardInterrupt here
        proc.send_signal(signal.SIGINT)
        return proc.wait()


def ray_launcher(address: str | None, jobs: int, gpus: int) -> Launch:
    """Tasks on the Ray cluster at ``address`` (``auto``, ``HOST:PORT``), or on a local Ray
    started for the sweep and stopped after it; at most ``jobs`` at once."""
    try:
        import ray
    except ImportError:
        raise ValueError("the ray backend needs Ray: pip install 'thresher[ray]'") from None
    cores = usable_cores()
    threads = max(1, cores // jobs)

    def launch(work: Sequence[Task], done: Done) -> None:
        started = not ray.is_initialized()
        if started:
            if address:
                ray.init(address=address, logging_level="WARNING", log_to_driver=False)
            else:
                ray.init(num_cpus=cores, num_gpus=gpus, include_dashboard=False,
                         logging_level="WARNING", log_to_driver=False)
        remote = ray.remote(num_cpus=threads, num_gpus=1 if gpus else 0, max_retries=0)(_run)
        pending = list(work)
        running: dict[Any, Task] = {}
        try:
            with signals_checked() as stop:
                while pending or running:
                    while pending and len(running) < jobs:
                        task = pending.pop(0)
                        running[remote.remote(task.command(threads), str(task.log))] = task
                    ready: list = []
                    while not ready:
                        stop()
                        ready, _ = ray.wait(list(running), num_returns=1, timeout=0.2)
                    task = running.pop(ready[0])
                    done(task, _returncode(ray, ready[0]))
        except BaseException:
            for ref in running:
                ray.cancel(ref)
            for ref, task in running.items():
                done(task, _returncode(ray, ref))
            raise
        finally:
            if started:
                ray.shutdown()

    return launch


def _returncode(ray: Any, ref: Any) -> int:
    """The task's exit code; -1 when Ray lost it (worker or node died, task cancelled)."""
    try:
        return int(ray.get(ref))
    except Exception:  # ray raises its own error types for a lost or cancelled task
        return -1

