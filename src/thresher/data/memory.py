"""Episodic memories: what a replay learner keeps of the stream it has seen.

Shared by the continual learners (reservoir for experience replay, per-task ring for A-GEM,
the clustering memory of TA-A-GEM) and by anything else that replays past samples, such as an
RL agent's replay buffer (a reservoir of flattened transitions).

Every memory stores samples as the model sees them (normalised float, flattened) in tensors
allocated once, so adding and sampling are a few tensor operations, never a Python loop over
examples. ``sample(n)`` returns ``(x, y)`` or ``None`` while there is nothing to replay.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from thresher.seeding import make_rng

Sample = tuple[torch.Tensor, torch.Tensor]


def _subset(size: int, n: int, generator: torch.Generator, device: torch.device
            ) -> torch.Tensor | None:
    """``n`` distinct random indices below ``size`` (all of them when ``n >= size``)."""
    if n >= size:
        return None
    return torch.randperm(size, generator=generator, device=device)[:n]


class ReservoirMemory:
    """A uniform sample of everything offered so far (reservoir sampling), for ER.

    Example i of the stream (counting from 0) takes slot i while the memory has room, else
    replaces a uniformly drawn slot with probability capacity / (i + 1). A whole batch is
    placed with one ``index_copy_``; rejected examples go to a spare row that is never read.
    """

    def __init__(self, capacity: int, shape: tuple[int, ...], device: torch.device,
                 generator: torch.Generator) -> None:
        self.capacity = capacity
        self.shape = tuple(shape)
        self.x = torch.zeros(capacity + 1, math.prod(shape), device=device)
        self.y = torch.zeros(capacity + 1, dtype=torch.long, device=device)
        self.seen = 0
        self.generator = generator

    def __len__(self) -> int:
        return min(self.seen, self.capacity)

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        n = x.shape[0]
        position = torch.arange(self.seen, self.seen + n, device=x.device)
        draw = (torch.rand(n, generator=self.generator, device=x.device) * (position + 1)).long()
        slot = torch.where(position < self.capacity, position, draw).clamp_(max=self.capacity)
        self.x.index_copy_(0, slot, x.reshape(n, -1))
        self.y.index_copy_(0, slot, y)
        self.seen += n

    def sample(self, n: int) -> Sample | None:
        size = len(self)
        if size == 0:
            return None
        idx = _subset(size, n, self.generator, self.x.device)
        if idx is None:
            return self.x[:size].view(-1, *self.shape), self.y[:size]
        return self.x.index_select(0, idx).view(-1, *self.shape), self.y.index_select(0, idx)


class TaskRingBuffer:
    """A-GEM's episodic memory: the last ``per_task`` samples of each finished task.

    Batches of the current task are written round-robin into its ring; `end_task` (the one
    place a task boundary enters) moves the ring into the memory of past tasks, which is what
    reference gradients are drawn from.
    """

    def __init__(self, per_task: int, shape: tuple[int, ...], device: torch.device,
                 generator: torch.Generator) -> None:
        self.per_task = per_task
        self.shape = tuple(shape)
        d = math.prod(shape)
        self.ring_x = torch.zeros(per_task, d, device=device)
        self.ring_y = torch.zeros(per_task, dtype=torch.long, device=device)
        self.written = 0
        self.past_x = torch.zeros(0, d, device=device)
        self.past_y = torch.zeros(0, dtype=torch.long, device=device)
        self.generator = generator

    def __len__(self) -> int:
        return self.past_x.shape[0] + min(self.written, self.per_task)

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        n = x.shape[0]
        keep = min(n, self.per_task)  # of a batch longer than the ring only its tail survives
        x, y = x.reshape(n, -1)[n - keep:], y[n - keep:]
        start = (self.written + n - keep) % self.per_task
        first = min(keep, self.per_task - start)  # up to the ring's end, the rest from slot 0
        self.ring_x[start:start + first], self.ring_y[start:start + first] = x[:first], y[:first]
        self.ring_x[:keep - first], self.ring_y[:keep - first] = x[first:], y[first:]
        self.written += n

    def end_task(self) -> None:
        filled = min(self.written, self.per_task)
        self.past_x = torch.cat([self.past_x, self.ring_x[:filled]])
        self.past_y = torch.cat([self.past_y, self.ring_y[:filled]])
        self.written = 0

    def sample(self, n: int) -> Sample | None:
        size = self.past_x.shape[0]
        if size == 0:
            return None
        idx = _subset(size, n, self.generator, self.past_x.device)
        if idx is None:
            return self.past_x.view(-1, *self.shape), self.past_y
        return (self.past_x.index_select(0, idx).view(-1, *self.shape),
                self.past_y.index_select(0, idx))


class ClusteringMemory:
    """TA-A-GEM's task-agnostic memory: one pool per label, each of at most Q clusters of at
    most P samples, so it never holds more than Q x P x pools samples.

    Insertion (Lamers et al. 2023): a sample goes to its label's pool (a new label opens a pool
    while fewer than ``pools`` are open, else the sample is not kept). While the pool has fewer
    than Q clusters the sample starts a new one; otherwise it joins the cluster whose mean is
    nearest (Euclidean), and a cluster that would exceed P samples first drops one: the
    ``oldest``, the one farthest from the cluster ``mean`` (the mean including the newcomer), or
    a ``random`` one. The newcomer is never the one dropped.

    Cost per offered sample: O(Q) distances, to the means of the sample's own pool (kept up to
    date incrementally; a device-side label -> pool table picks them without a host round
    trip), then one read of two integers to the host; bookkeeping (counts, ages) lives in small
    NumPy arrays. Labels must lie in ``range(num_labels)``.
    """

    def __init__(self, pools: int, clusters: int, cluster_size: int, shape: tuple[int, ...],
                 device: torch.device, generator: torch.Generator, removal: str = "oldest",
                 seed: int = 0, num_labels: int = 10) -> None:
        if removal not in ("oldest", "mean", "random"):
            raise ValueError(f"unknown removal policy {removal!r}; choose oldest, mean or random")
        self.pools, self.clusters, self.cluster_size = pools, clusters, cluster_size
        self.shape = tuple(shape)
        self.removal = removal
        d = math.prod(shape)
        self.x = torch.zeros(pools, clusters, cluster_size, d, device=device)
        self.y = torch.zeros(pools, clusters, cluster_size, dtype=torch.long, device=device)
        self.sums = torch.zeros(pools, clusters, d, device=device)
        self.means = torch.zeros(pools, clusters, d, device=device)
        self.unopened = torch.full((pools, clusters), math.inf, device=device)  # 0 once open
        self.counts = np.zeros((pools, clusters), dtype=np.int64)
        self.opened = np.zeros(pools, dtype=np.int64)  # clusters opened per pool
        self.stamps = np.zeros((pools, clusters, cluster_size), dtype=np.int64)  # insertion time
        self.pool_of: dict[int, int] = {}
        self.pool_table = torch.zeros(num_labels, dtype=torch.long, device=device)
        self.clock = 0
        self.rng = make_rng(seed, "removal")  # the random removal policy's draws
        self.generator = generator
        self._occupied: torch.Tensor | None = None  # flat slot indices, rebuilt when they grow

    @property
    def capacity(self) -> int:
        return self.pools * self.clusters * self.cluster_size

    def __len__(self) -> int:
        return int(self.counts.sum())

    def pool_sizes(self) -> dict[int, int]:
        """Samples held per label."""
        return {label: int(self.counts[p].sum()) for label, p in self.pool_of.items()}

    def offer(self, x: torch.Tensor, y: torch.Tensor) -> bool:
        """Offer one sample ``x`` (the model's input shape) with 0-dim label ``y``; returns
        whether it was kept."""
        z = x.reshape(-1)
        pool_guess = self.pool_table[y]  # right for any label that already has a pool
        distances = (self.means[pool_guess] - z).square_().sum(-1) + self.unopened[pool_guess]
        label, nearest = torch.stack([y, distances.argmin()]).tolist()
        pool = self._pool(label)
        if pool is None:
            return False
        self.clock += 1
        if self.opened[pool] < self.clusters:  # also every new pool: the guess is not used
            cluster, slot = int(self.opened[pool]), 0
            self.opened[pool] += 1
            self.unopened[pool, cluster] = 0.0
        else:
            cluster = nearest
            slot = self._free_slot(pool, cluster, z)
        if slot == self.counts[pool, cluster]:
            self.counts[pool, cluster] += 1
            self._occupied = None
        else:
            self.sums[pool, cluster] -= self.x[pool, cluster, slot]
        self.x[pool, cluster, slot] = z
        self.y[pool, cluster, slot] = label
        self.sums[pool, cluster] += z
        self.means[pool, cluster] = self.sums[pool, cluster] / int(self.counts[pool, cluster])
        self.stamps[pool, cluster, slot] = self.clock
        return True

    def _pool(self, label: int) -> int | None:
        if label not in self.pool_of:
            if len(self.pool_of) == self.pools:
                return None
            self.pool_of[label] = len(self.pool_of)
            self.pool_table[label] = self.pool_of[label]
        return self.pool_of[label]

    def _free_slot(self, pool: int, cluster: int, z: torch.Tensor) -> int:
        """The slot the newcomer takes: the next empty one, else the one the policy drops."""
        count = int(self.counts[pool, cluster])
        if count < self.cluster_size:
            return count
        if self.removal == "oldest":
            return int(self.stamps[pool, cluster].argmin())
        if self.removal == "random":
            return int(self.rng.integers(self.cluster_size))
        mean = (self.sums[pool, cluster] + z) / (count + 1)
        return int((self.x[pool, cluster] - mean).square().sum(1).argmax())

    def sample(self, n: int) -> Sample | None:
        if self._occupied is None:
            slots = np.arange(self.cluster_size) < self.counts[..., None]
            self._occupied = torch.from_numpy(np.flatnonzero(slots)).to(self.x.device)
        size = len(self._occupied)
        if size == 0:
            return None
        idx = _subset(size, n, self.generator, self.x.device)
        flat = self._occupied if idx is None else self._occupied[idx]
        x = self.x.view(-1, self.x.shape[-1]).index_select(0, flat)
        return x.view(-1, *self.shape), self.y.view(-1).index_select(0, flat)
