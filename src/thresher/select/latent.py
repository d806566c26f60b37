"""Latent dataset distillation baselines: m points per class chosen or made from latents.

Every function takes latents ``x [N, D]`` with class labels ``y [N]`` in ``[0, C)`` (C is
``max(y) + 1``; every class in that range must hold at least m examples) and returns m points
per class, class by class: selection methods return indices into ``x`` (real latents, so they
decode to real images), synthesis methods return ``(points [C*m, D], labels [C*m])``. A study
judges them alike, by a fresh probe trained on the result (`thresher.train.probe`).

Loops run over classes or over chosen points, never over examples: distances are matrix
products (``thresher.select.kmeans``), random draws come from the caller's generator, and
everything stays on ``x``'s device.

`prototype_losses` and `PrototypeOptimizer` optimise synthetic prototypes under a weighted sum
of three terms; an agent may change the weights between calls of `PrototypeOptimizer.run`
while the prototypes and Adam's state carry over.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from thresher.select.kmeans import kmeans, nearest, sq_distances

TERMS = ("class_match", "real_align", "diversity")
CHUNK = 8192  # rows per block when a computation over all N latents is chunked


# ---------------------------------------------------------------- input checks and grouping

def _num_classes(y: torch.Tensor, n: int | None = None) -> int:
    if y.dim() != 1:
        raise ValueError(f"y must be a 1-D tensor of class indices, got shape {list(y.shape)}")
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise ValueError(f"y must hold integer class indices, got dtype {y.dtype}")
    if n is not None and len(y) != n:
        raise ValueError(f"x has {n} rows but y has {len(y)} labels")
    if len(y) == 0:
        raise ValueError("y is empty: there is nothing to choose from")
    low = int(y.min())
    if low < 0:
        raise ValueError(f"labels must be >= 0, got {low}")
    return int(y.max()) + 1


def _check_x(x: torch.Tensor) -> None:
    if x.dim() != 2:
        raise ValueError(f"x must be [N, D] latents, got shape {list(x.shape)}")
    if not x.dtype.is_floating_point:
        raise ValueError(f"x must be floating point, got dtype {x.dtype}")


def _check_m(m: int, counts: torch.Tensor) -> None:
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise ValueError(f"m (points per class) must be an integer >= 1, got {m!r}")
    short = (counts < m).nonzero().flatten()
    if len(short):
        c = int(short[0])
        raise ValueError(f"class {c} has {int(counts[c])} examples, fewer than m={m}")


def _groups(y: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """``order`` (indices of ``y`` sorted by class, stable), ``starts`` and ``counts`` per class
    (``counts`` also as a host list, read once)."""
    order = torch.argsort(y, stable=True)
    counts = torch.bincount(y, minlength=num_classes)
    return order, torch.cumsum(counts, 0) - counts, counts.tolist()


def _prepare(x: torch.Tensor | None, y: torch.Tensor, m: int):
    if x is not None:
        _check_x(x)
    c = _num_classes(y, None if x is None else x.shape[0])
    order, starts, counts = _groups(y, c)
    _check_m(m, torch.tensor(counts))
    return c, order, starts, counts


def _class_labels(num_classes: int, m: int, device: torch.device) -> torch.Tensor:
    return torch.arange(num_classes, device=device).repeat_interleave(m)


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


# ---------------------------------------------------------------- selection and synthesis

def random_real(y: torch.Tensor, m: int, generator: torch.Generator) -> torch.Tensor:
    """``[C*m]`` indices: m distinct examples per class, uniformly at random. One random key per
    example and two sorts (by key, then stably by class) shuffle every class at once."""
    c, _, starts, _ = _prepare(None, y, m)
    keys = torch.rand(len(y), generator=generator, device=generator.device).to(y.device)
    order = torch.argsort(keys)
    order = order[torch.argsort(y[order], stable=True)]
    return order[(starts[:, None] + torch.arange(m, device=y.device)).flatten()]


def kmeans_centroids(x: torch.Tensor, y: torch.Tensor, m: int, generator: torch.Generator,
                     iters: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """The m k-means centroids of every class (k-means++ start, Lloyd's iterations): synthetic
    points that summarise where each class's mass lies."""
    c, order, starts, counts = _prepare(x, y, m)
    points = torch.cat([_class_kmeans(x, order, starts, counts, k, m, generator, iters)[1]
                        for k in range(c)])
    return points.to(_work_dtype(x)), _class_labels(c, m, x.device)


def kmeans_medoids(x: torch.Tensor, y: torch.Tensor, m: int, generator: torch.Generator,
                   iters: int = 50) -> torch.Tensor:
    """``[C*m]`` indices: for every per-class k-means centroid, the nearest real latent of that
    class. Centroids claim points closest first; one whose nearest point is taken gets the
    nearest unused one, so the m points of a class are distinct."""
    c, order, starts, counts = _prepare(x, y, m)
    picks = []
    for k in range(c):
        members, centers = _class_kmeans(x, order, starts, counts, k, m, generator, iters)
        picks.append(members[_distinct_nearest(sq_distances(x[members].float(), centers))])
    return torch.cat(picks)


def _class_kmeans(x, order, starts, counts, k, m, generator, iters):
    members = order[int(starts[k]):int(starts[k]) + counts[k]]
    return members, kmeans(x[members], m, generator, iters=iters).centers


def _distinct_nearest(d: torch.Tensor) -> torch.Tensor:
    """For each column (centroid) of ``d [n, m]``, a distinct row: its nearest, or, when that
    row is already claimed by a closer centroid, its nearest unclaimed one."""
    first = d.argmin(0)
    if len(first.unique()) == d.shape[1]:
        return first
    d = d.clone()
    out = torch.empty_like(first)
    for j in d.min(0).values.argsort().tolist():  # one loop over centroids, not examples
        i = d[:, j].argmin()
        out[j] = i
        d[i] = math.inf
    return out


def herding(x: torch.Tensor, y: torch.Tensor, m: int) -> torch.Tensor:
    """``[C*m]`` indices by kernel herding (Welling 2009; linear kernel): per class, greedily add
    the unused point that brings the running mean of the chosen points closest to the class
    mean. With ``s`` the sum of the t points chosen so far and ``mu`` the class mean,
    ``|(s + x_i) / (t+1) - mu|^2`` ranks like ``|x_i|^2 - 2 x_i . ((t+1) mu - s)``: one
    matrix-vector product per pick, no host synchronisation."""
    c, order, starts, counts = _prepare(x, y, m)
    picks = []
    for k in range(c):
        members = order[int(starts[k]):int(starts[k]) + counts[k]]
        xc = x[members].to(_work_dtype(x))
        mu, sq = xc.mean(0), xc.square().sum(1)
        total = torch.zeros_like(mu)
        used = torch.zeros(len(xc), dtype=torch.bool, device=x.device)
        chosen = torch.empty(m, dtype=torch.long, device=x.device)
        for t in range(m):
            score = (sq - 2 * (xc @ ((t + 1) * mu - total))).masked_fill_(used, math.inf)
            i = score.argmin()
            chosen[t] = i
            used[i] = True
            total += xc[i]
        picks.append(members[chosen])
    return torch.cat(picks)


def _random_features(d: int, n_features: int, feature_dim: int, generator: torch.Generator,
                     device: torch.device, dtype: torch.dtype):
    """``n_features`` random Linear(d, feature_dim) maps, drawn as torch initialises a Linear
    (weights and biases uniform in +-1/sqrt(d)), side by side: ``W [d, K*F]``, ``b [K*F]``, so
    all K maps are one matrix product."""
    bound = 1 / math.sqrt(d)
    width = n_features * feature_dim
    w = torch.rand(d, width, generator=generator, device=generator.device)
    b = torch.rand(width, generator=generator, device=generator.device)
    return ((2 * w - 1) * bound).to(device, dtype), ((2 * b - 1) * bound).to(device, dtype)


def _feature_means(z: torch.Tensor, labels: torch.Tensor, num_classes: int, w: torch.Tensor,
                   b: torch.Tensor) -> torch.Tensor:
    """``[C, K*F]``: the mean of ReLU(z W + b) over each class's rows of ``z``, in row chunks
    (differentiable; chunks only bound memory for a large ``z``)."""
    sums = z.new_zeros(num_classes, w.shape[1])
    for start in range(0, z.shape[0], CHUNK):
        part = torch.relu(torch.addmm(b, z[start:start + CHUNK], w))
        member = F.one_hot(labels[start:start + CHUNK], num_classes).T.to(z.dtype)
        sums = sums + member @ part  # a matrix product: index_add is ~10x slower on CPU
    counts = torch.bincount(labels, minlength=num_classes).clamp_min(1)
    return sums / counts[:, None].to(z.dtype)


def mean_embedding_discrepancy(points: torch.Tensor, labels: torch.Tensor, x: torch.Tensor,
                               y: torch.Tensor, generator: torch.Generator, n_features: int = 8,
                               feature_dim: int = 256) -> torch.Tensor:
    """What distribution matching minimises, measured exactly: the squared L2 distance between
    each class's mean random-ReLU embedding of ``points`` and of all its real latents, summed
    over classes and averaged over ``n_features`` maps drawn from ``generator``. A scalar;
    draw the maps from a fresh seed to compare methods on maps none of them trained on."""
    _check_x(x)
    c = _num_classes(y, x.shape[0])
    _check_points(points, labels, x, c)
    w, b = _random_features(x.shape[1], n_features, feature_dim, generator, x.device,
                            _work_dtype(x))
    with torch.no_grad():
        real = _feature_means(x.to(w.dtype), y, c, w, b)
        syn = _feature_means(points.to(w.dtype), labels, c, w, b)
        present = torch.bincount(labels, minlength=c) > 0  # classes the points speak for
        return (syn - real)[present].square().sum() / n_features


def distribution_matching(x: torch.Tensor, y: torch.Tensor, m: int, generator: torch.Generator,
                          steps: int = 500, lr: float = 0.05, n_features: int = 8,
                          feature_dim: int = 256, init: torch.Tensor | None = None,
                          real_batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Dataset condensation by distribution matching (Zhao & Bilen 2023) in latent space.

    m synthetic points per class are optimised with Adam so that, under ``n_features`` random
    ReLU feature maps (Linear(D, feature_dim) + ReLU, redrawn every step), each class's mean
    embedding of its synthetic points matches that of its real latents (squared L2, summed over
    classes, averaged over maps). As in DM, every step compares with a fresh random batch of
    ``real_batch`` latents per class (drawn with replacement; 0: all of them, exact but N times
    the work). ``init`` (``[C*m, D]``, class by class) defaults to m random real latents per
    class. All classes move in one batched step.
    """
    c, order, starts, counts = _prepare(x, y, m)
    for name, value, low in (("steps", steps, 0), ("n_features", n_features, 1),
                             ("feature_dim", feature_dim, 1), ("real_batch", real_batch, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    d = x.shape[1]
    labels = _class_labels(c, m, x.device)
    dtype = _work_dtype(x)
    if init is None:
        init = x[random_real(y, m, generator)]
    elif tuple(init.shape) != (c * m, d):
        raise ValueError(f"init must be [{c * m}, {d}] (m={m} points for each of {c} classes, "
                         f"class by class), got {list(init.shape)}")
    points = init.detach().to(x.device, dtype).clone().requires_grad_(True)
    optimizer = torch.optim.Adam([points], lr=lr)
    xw = x.to(dtype)
    count_t = torch.tensor(counts, device=x.device)
    real_labels = _class_labels(c, real_batch, x.device)
    for _ in range(steps):
        w, b = _random_features(d, n_features, feature_dim, generator, x.device, dtype)
        with torch.no_grad():
            if real_batch:
                u = torch.rand(c, real_batch, generator=generator, device=generator.device)
                within = (u.to(x.device) * count_t[:, None]).long()  # u*count may round up
                rows = starts[:, None] + torch.minimum(within, count_t[:, None] - 1)
                real = _feature_means(xw[order[rows.flatten()]], real_labels, c, w, b)
            else:
                real = _feature_means(xw, y, c, w, b)
        syn = _feature_means(points, labels, c, w, b)
        loss = (syn - real).square().sum() / n_features  # summed over classes, mean over maps
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return points.detach(), labels


# ---------------------------------------------------------------- prototype optimisation

def class_means(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``[C, D]`` mean latent of every class (a class with no examples gets zeros)."""
    _check_x(x)
    c = _num_classes(y, x.shape[0])
    dtype = _work_dtype(x)
    sums = torch.zeros(c, x.shape[1], dtype=dtype, device=x.device).index_add_(0, y, x.to(dtype))
    return sums / torch.bincount(y, minlength=c).clamp_min(1)[:, None].to(dtype)


def mean_intra_class_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The mean Euclidean distance between two distinct latents of the same class, over all
    such pairs of all classes: the length scale of the diversity kernel. Exact, in row chunks
    of one class at a time (~1 s for 50,000 x 128 latents in 10 classes on a laptop CPU)."""
    _check_x(x)
    c = _num_classes(y, x.shape[0])
    order, starts, counts = _groups(y, c)
    dtype = _work_dtype(x)
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    pairs = 0
    for k in range(c):
        xc = x[order[int(starts[k]):int(starts[k]) + counts[k]]].to(dtype)
        for start in range(0, len(xc), CHUNK):
            dist = sq_distances(xc[start:start + CHUNK], xc)
            rows = torch.arange(dist.shape[0], device=x.device)
            dist[rows, rows + start] = 0  # a point's distance to itself, free of rounding
            total += dist.sqrt().sum(dtype=torch.float64)
        pairs += counts[k] * (counts[k] - 1)
    if pairs == 0:
        raise ValueError("no class has two examples: the intra-class distance is undefined")
    return (total / pairs).to(dtype)


def _check_points(points: torch.Tensor, labels: torch.Tensor, x: torch.Tensor,
                  num_classes: int) -> None:
    if points.dim() != 2 or points.shape[1] != x.shape[1]:
        raise ValueError(f"points must be [M, {x.shape[1]}] like x, got {list(points.shape)}")
    _check_point_labels(labels, points.shape[0], num_classes)


def _check_point_labels(labels: torch.Tensor, n_points: int, num_classes: int) -> None:
    if labels.shape != (n_points,):
        raise ValueError(f"labels must be [{n_points}], one per point, got {list(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must hold integer class indices, got dtype {labels.dtype}")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes}) (the classes of y), got values "
                         f"in [{int(labels.min())}, {int(labels.max())}]")


class _Pools:
    """What the prototype losses need of the real latents, computed once: latents sorted by
    class, where each class starts, its size, and the prototypes of each class."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, labels: torch.Tensor,
                 means: torch.Tensor, bandwidth: float | torch.Tensor | None):
        _check_x(x)
        c = _num_classes(y, x.shape[0])
        if labels.dim() != 1:
            raise ValueError(f"labels must be a 1-D tensor, got shape {list(labels.shape)}")
        _check_point_labels(labels, len(labels), c)
        if tuple(means.shape) != (c, x.shape[1]):
            raise ValueError(f"class_means must be [{c}, {x.shape[1]}] (one mean per class of y),"
                             f" got {list(means.shape)}")
        order, starts, counts = _groups(y, c)
        missing = [k for k in labels.unique().tolist() if counts[k] == 0]
        if missing:
            raise ValueError(f"class {missing[0]} has prototypes but no real latents")
        self.dtype = _work_dtype(x)
        self.xs = x[order].to(self.dtype)
        self.starts, self.counts = starts.tolist(), counts
        self.labels = labels.to(x.device)
        self.means = means.to(x.device, self.dtype)
        self.proto_of = [(k, (self.labels == k).nonzero().flatten())
                         for k in self.labels.unique().tolist()]
        same = self.labels[:, None] == self.labels[None]
        self.pairs = same & ~torch.eye(len(labels), dtype=torch.bool, device=x.device)
        if bandwidth is None:
            bandwidth = mean_intra_class_distance(x, y)
        self.bandwidth = torch.as_tensor(bandwidth, dtype=self.dtype, device=x.device)

    def losses(self, points: torch.Tensor, temperature: float) -> dict[str, torch.Tensor]:
        # class_match: |p|^2 is the same for every class, so -|p - mu|^2 / T ranks and
        # normalises like (2 p.mu - |mu|^2) / T, without the cancellation
        logits = (2 * points @ self.means.T - self.means.square().sum(1)) / temperature
        class_match = F.cross_entropy(logits, self.labels)
        # real_align: find each prototype's nearest real latent of its class (no gradient),
        # then the exact squared distance to it
        with torch.no_grad():
            near = torch.empty(len(points), dtype=torch.long, device=points.device)
            for k, idx in self.proto_of:
                pool = self.xs[self.starts[k]:self.starts[k] + self.counts[k]]
                near[idx] = nearest(points[idx].detach(), pool)[0] + self.starts[k]
        real_align = (points - self.xs[near]).square().sum(1).mean()
        # diversity: Gaussian kernel over same-class prototype pairs
        sq = points.square().sum(1)
        d2 = (sq[:, None] + sq[None] - 2 * points @ points.T).clamp_min(0)
        kernel = torch.exp(-d2 / (2 * self.bandwidth ** 2))
        diversity = (kernel * self.pairs).sum() / self.pairs.sum().clamp_min(1)
        return {"class_match": class_match, "real_align": real_align, "diversity": diversity}


def _check_temperature(temperature: float) -> None:
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature)
            and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")


def prototype_losses(points: torch.Tensor, labels: torch.Tensor, x: torch.Tensor,
                     y: torch.Tensor, class_means: torch.Tensor, temperature: float = 0.1,
                     bandwidth: float | torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Three scalar terms that judge prototypes ``points [M, D]`` with ``labels [M]``:

    - ``class_match``: mean cross-entropy of each prototype's own class under
      ``softmax_c(-|p - mu_c|^2 / temperature)`` over the real class means (it should look
      like its class);
    - ``real_align``: mean squared distance from each prototype to the nearest real latent of
      its class (it stays on the data manifold, so it decodes to an image);
    - ``diversity``: mean over same-class prototype pairs of ``exp(-|p_i - p_j|^2 / (2 s^2))``,
      ``s`` the mean intra-class distance of the real latents (lower is more diverse; 0 when no
      class has two prototypes).

    All differentiable in ``points``. ``bandwidth`` is ``s``; pass it (from
    `mean_intra_class_distance`) when calling repeatedly, else it is computed from ``x``, ``y``.
    """
    _check_temperature(temperature)
    pools = _Pools(x, y, labels, class_means, bandwidth)
    _check_points(points, labels, x, len(pools.counts))
    return pools.losses(points.to(pools.dtype), temperature)


class PrototypeOptimizer:
    """Prototypes and one Adam state that persist across `run` calls, so an agent can change the
    terms' weights between intervals without restarting the optimiser: two runs of 10 steps
    are one run of 20. The real latents' per-class pools, class means and the diversity
    bandwidth are computed once, here. ``generator`` is kept for terms that draw; none of the
    three does yet."""

    def __init__(self, init_points: torch.Tensor, labels: torch.Tensor, x: torch.Tensor,
                 y: torch.Tensor, lr: float = 0.01, generator: torch.Generator | None = None,
                 temperature: float = 0.1):
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
        _check_temperature(temperature)
        self._pools = _Pools(x, y, labels, class_means(x, y), None)
        _check_points(init_points, labels, x, len(self._pools.counts))
        self._points = init_points.detach().to(x.device, self._pools.dtype).clone()
        self._points.requires_grad_(True)
        self._optimizer = torch.optim.Adam([self._points], lr=lr)
        self.temperature = temperature
        self.generator = generator
        self.steps_taken = 0

    @property
    def points(self) -> torch.Tensor:
        """The current prototypes ``[M, D]`` (a detached copy)."""
        return self._points.detach().clone()

    @property
    def labels(self) -> torch.Tensor:
        return self._pools.labels

    def run(self, steps: int, weights: dict[str, float]) -> dict[str, float]:
        """Minimise ``sum(weights[t] * term_t)`` for ``steps`` Adam steps (a missing term has
        weight 0); returns each term's value at the prototypes reached (``steps=0``: the
        current ones)."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
        for name, value in weights.items():
            if name not in TERMS:
                raise ValueError(f"unknown loss term {name!r}; the terms are {', '.join(TERMS)}")
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"weight of {name!r} must be a finite number >= 0, "
                                 f"got {value!r}")
        for _ in range(steps):
            terms = self._pools.losses(self._points, self.temperature)
            loss = sum(float(weights.get(name, 0.0)) * terms[name] for name in TERMS)
            self._optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self._optimizer.step()
            self.steps_taken += 1
        with torch.no_grad():
            terms = self._pools.losses(self._points, self.temperature)
        return {name: float(value) for name, value in terms.items()}
