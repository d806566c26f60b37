"""Device choice: cuda > mps > cpu unless the user names one; torch's CPU thread count."""

from __future__ import annotations

import os

import torch

DEVICES = ("auto", "cpu", "cuda", "mps")


def check_device_name(name: str) -> None:
    """Refuse a device name that no machine has (availability is `choose_device`'s check)."""
    if name not in DEVICES and not name.startswith("cuda:"):
        raise ValueError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)} or cuda:N")


def choose_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda > mps > cpu; an explicit name must be available here."""
    check_device_name(name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available on this machine")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' requested but MPS is not available on this machine")
    return torch.device(name)


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_threads() -> int:
    """The CPU thread count `set_threads(0)` picks: one per usable core (torch's own default).
    Measured with `benchmarks/contention.py`: with the passive OpenMP wait policy
    (`thresher.threads`) this is fastest idle and holds up when another process takes a core,
    so there is no reason to use fewer."""
    return usable_cores()


def set_threads(threads: int) -> int:
    """Run torch's CPU operators on ``threads`` threads (0: `default_threads`); returns the
    count in effect."""
    if threads < 0:
        raise ValueError(f"threads must be >= 0 (0: one per core), got {threads}")
    torch.set_num_threads(threads or default_threads())
    return torch.get_num_threads()
