"""Fixtures several test modules share, and one process-wide setting."""

import signal

import pytest
import torch

# A suite started as a background job (``cmd &`` without job control) inherits SIGINT ignored,
# and so would every CLI subprocess the signal tests start: Ctrl-C would then do nothing to
# them. Handling SIGINT here makes exec'd children start with the default disposition again.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors (bandits, small networks, probes) run fastest on one intra-op thread: on a
    busy 2-core machine a second thread only waits on other work, up to 100x slower per step.
    A module opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``; the count is
    given back afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
