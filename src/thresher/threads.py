"""The OpenMP wait policy of torch's CPU threads, set before torch loads (this module must not
import torch, directly or through another thresher module).

torch's OpenMP runtime reads ``OMP_WAIT_POLICY`` once, when the library loads, i.e. on the first
``import torch``; setting it later changes nothing in this process. By default its threads
spin-wait for each other at the end of every parallel region. When another process holds a core,
a spinning thread burns its time slice waiting for a descheduled partner: on a 2-core machine
with a neighbour busy, `fit` at torch's default 2 threads fell to ~0.3 of its idle speed (the
batch pipeline alone to ~0.13); with ``PASSIVE`` (waiting threads sleep) it kept ~0.45, for
~11% of idle speed (`benchmarks/contention.py` has the table). So the CLI calls
`set_wait_policy` before anything imports torch; ``OMP_WAIT_POLICY=ACTIVE`` in the environment
opts out.
"""

from __future__ import annotations

import os
import sys

WAIT_POLICY = "PASSIVE"


def set_wait_policy(policy: str = WAIT_POLICY) -> str | None:
    """Set ``OMP_WAIT_POLICY`` to ``policy`` unless the user has set it. Returns the policy
    torch's threads in this process run with: None (the runtime's default) when torch had
    already loaded before anything set it; subprocesses inherit the variable either way."""
    too_late = "torch" in sys.modules and "OMP_WAIT_POLICY" not in os.environ
    os.environ.setdefault("OMP_WAIT_POLICY", policy)
    return None if too_late else os.environ["OMP_WAIT_POLICY"]
