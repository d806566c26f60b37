"""`thresher.data.memory`: the reservoir, the per-task ring and the clustering memory."""

import pytest
import torch

from thresher.data.memory import ClusteringMemory, ReservoirMemory, TaskRingBuffer

CPU = torch.device("cpu")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def clustering(pools=3, q=4, p=2, removal="oldest", shape=(1,)) -> ClusteringMemory:
    return ClusteringMemory(pools, q, p, shape, CPU, gen(), removal, seed=0, num_labels=10)


def contents(memory: ClusteringMemory) -> list[float]:
    x, _ = memory.sample(10_000)
    return sorted(x.flatten().tolist())


def test_clustering_memory_never_exceeds_q_p_pools_and_routes_by_label():
    memory = clustering(pools=3, q=4, p=2, shape=(5,))
    rng = gen(2)
    for i in range(500):
        memory.offer(torch.randn(5, generator=rng), torch.tensor(i % 10))
        assert len(memory) <= 4 * 2 * 3 == memory.capacity
    assert len(memory) == memory.capacity
    assert set(memory.pool_of) == {0, 1, 2}  # labels 3..9 found every pool taken
    for label, pool in memory.pool_of.items():
        assert set(memory.y[pool].flatten().tolist()) == {label}
    assert memory.pool_sizes() == {0: 8, 1: 8, 2: 8}
    x, y = memory.sample(5)
    assert x.shape == (5, 5) and len(set(y.tolist())) >= 1


def test_new_clusters_open_until_q_then_samples_join_the_nearest_mean():
    memory = clustering(pools=1, q=2, p=5)
    for value in (0.0, 100.0, 1.0, 99.0, 2.0):
        memory.offer(torch.tensor([value]), torch.tensor(7))
    assert memory.counts.tolist() == [[3, 2]]
    assert memory.means[0, :, 0].tolist() == [1.0, 99.5]


@pytest.mark.parametrize("removal, kept", [("oldest", [1.0, 10.0]), ("mean", [0.0, 1.0])])
def test_a_full_cluster_drops_by_its_policy_and_keeps_the_newcomer(removal, kept):
    memory = clustering(pools=1, q=1, p=2, removal=removal)
    for value in (0.0, 10.0, 1.0):  # mean with the newcomer: 11/3; farthest old sample: 10
        memory.offer(torch.tensor([value]), torch.tensor(0))
    assert contents(memory) == kept
    assert memory.sums[0, 0].item() == sum(kept)


def test_random_removal_keeps_the_newcomer_and_the_size():
    memory = clustering(pools=1, q=1, p=3, removal="random")
    for value in range(20):
        memory.offer(torch.tensor([float(value)]), torch.tensor(0))
        assert float(value) in contents(memory)
    assert len(memory) == 3


def test_reservoir_fills_in_order_then_stays_at_capacity():
    memory = ReservoirMemory(4, (1,), CPU, gen())
    memory.add(torch.arange(3.0).view(3, 1), torch.arange(3))
    assert sorted(memory.sample(100)[1].unique().tolist()) == [0, 1, 2]
    for start in range(3, 200, 7):
        memory.add(torch.arange(start, start + 7.0).view(7, 1), torch.arange(start, start + 7))
        assert len(memory) == 4
    stored = memory.y[:4]
    assert torch.equal(memory.x[:4, 0].long(), stored) and len(stored.unique()) == 4


def test_ring_buffer_keeps_the_last_samples_of_each_finished_task():
    memory = TaskRingBuffer(5, (1,), CPU, gen())
    memory.add(torch.arange(7.0).view(7, 1), torch.arange(7))
    assert memory.sample(3) is None  # nothing from a finished task yet
    memory.end_task()
    x, y = memory.sample(100)
    assert sorted(y.tolist()) == [2, 3, 4, 5, 6] and len(memory) == 5
    assert len(memory.sample(2)[1].unique()) == 2
    for start in range(0, 6, 2):  # batches of 2 into 5 slots: the third wraps around
        memory.add(torch.arange(start, start + 2.0).view(2, 1), torch.arange(start, start + 2))
    memory.end_task()
    assert sorted(memory.past_y[5:].tolist()) == [1, 2, 3, 4, 5]
