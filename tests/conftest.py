"""Fixtures several test modules share."""

import pytest
import torch


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
