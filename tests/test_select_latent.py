"""Latent distillation baselines: shapes and labels, recovered structure, hand-checked prototype
losses, the prototype optimiser's persistent state, input errors."""

import math

import pytest
import torch

from thresher.select import (
    PrototypeOptimizer,
    class_means,
    distribution_matching,
    herding,
    kmeans_centroids,
    kmeans_medoids,
    mean_embedding_discrepancy,
    mean_intra_class_distance,
    prototype_losses,
    random_real,
)
from thresher.select.latent import _distinct_nearest

pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def latents(classes: int = 3, n_per: int = 40, d: int = 8, seed: int = 0):
    """Centred, L2-normalised latents with a direction per class, labels shuffled."""
    g = gen(seed)
    y = torch.arange(classes).repeat_interleave(n_per)
    y = y[torch.randperm(len(y), generator=g)]
    x = 2 * torch.eye(classes, d)[y] + torch.randn(len(y), d, generator=g)
    x = x - x.mean(0)
    return x / x.norm(dim=1, keepdim=True), y


def class_by_class(classes: int, m: int) -> torch.Tensor:
    return torch.arange(classes).repeat_interleave(m)


@pytest.mark.parametrize("select", ["random", "medoids", "herding"])
def test_selections_are_distinct_indices_class_by_class(select):
    x, y = latents()
    idx = {"random": lambda: random_real(y, 5, gen()),
           "medoids": lambda: kmeans_medoids(x, y, 5, gen()),
           "herding": lambda: herding(x, y, 5)}[select]()
    assert idx.shape == (15,) and idx.dtype == torch.long
    assert len(idx.unique()) == 15
    assert torch.equal(y[idx], class_by_class(3, 5))


def test_random_real_follows_its_generator():
    _, y = latents()
    assert torch.equal(random_real(y, 4, gen(1)), random_real(y, 4, gen(1)))
    assert not torch.equal(random_real(y, 4, gen(1)), random_real(y, 4, gen(2)))
    assert len(random_real(y, 40, gen()).unique()) == 120  # m = a whole class


def test_kmeans_centroids_recover_blob_centres():
    g = gen()
    centres = torch.tensor([[0.0, 0.0], [6.0, 0.0],  # class 0: two blobs
                            [0.0, 6.0], [6.0, 6.0]])  # class 1: two blobs
    blob = torch.arange(4).repeat_interleave(50)
    x = centres[blob] + 0.1 * torch.randn(200, 2, generator=g)
    y = blob // 2
    points, labels = kmeans_centroids(x, y, 2, gen(1))
    assert points.shape == (4, 2) and torch.equal(labels, class_by_class(2, 2))
    for k in range(2):
        found = points[2 * k:2 * k + 2]
        found = found[found[:, 0].argsort()]  # the blob at x=0 first
        torch.testing.assert_close(found, centres[2 * k:2 * k + 2], atol=0.05, rtol=0)


def test_medoids_are_real_points_of_their_class_nearest_the_centroids():
    x, y = latents()
    idx = kmeans_medoids(x, y, 4, gen(3))
    points, _ = kmeans_centroids(x, y, 4, gen(3))  # the same draws: the same centroids
    for k in range(3):
        members = (y == k).nonzero().flatten()
        d = torch.cdist(points[4 * k:4 * k + 4], x[members])
        chosen = idx[4 * k:4 * k + 4]
        assert (y[chosen] == k).all()
        if len(d.argmin(1).unique()) == 4:  # no collisions: exactly the nearest members
            assert torch.equal(chosen, members[d.argmin(1)])


def test_medoids_resolve_a_shared_nearest_point():
    # both centroids are nearest to row 0; centroid 0 is closer and keeps it
    d = torch.tensor([[0.1, 0.5], [3.0, 0.9], [4.0, 2.0]])
    assert _distinct_nearest(d).tolist() == [0, 1]
    x = torch.tensor([[0.0], [1.0], [1.1], [5.0], [5.2]])
    y = torch.tensor([0, 0, 0, 1, 1])
    assert y[kmeans_medoids(x, y, 1, gen())].tolist() == [0, 1]
    # m = the whole class: every member, each once, whichever centroids share a nearest point
    assert sorted(kmeans_medoids(x, y, 2, gen())[2:].tolist()) == [3, 4]
    assert len(kmeans_medoids(x, torch.zeros(5, dtype=torch.long), 5, gen()).unique()) == 5


def test_herding_starts_at_the_mean_and_beats_random():
    x, y = latents(n_per=60, d=16)
    m = 6
    idx = herding(x, y, m)
    means = class_means(x, y)
    for k in range(3):
        members = (y == k).nonzero().flatten()
        first = members[(x[members] - means[k]).norm(dim=1).argmin()]
        assert int(idx[k * m]) == int(first)

    def error(sel):
        return float((x[sel].view(3, m, -1).mean(1) - means).norm(dim=1).sum())

    random_errors = [error(random_real(y, m, gen(s))) for s in range(20)]
    assert error(idx) <= min(random_errors)


def test_distribution_matching_lowers_the_random_feature_discrepancy():
    x, y = latents(n_per=50)
    m = 2
    init = x[random_real(y, m, gen(5))]
    points, labels = distribution_matching(x, y, m, gen(1), steps=150, lr=0.01, feature_dim=64,
                                           init=init)
    assert points.shape == (6, 8) and torch.equal(labels, class_by_class(3, m))
    torch.testing.assert_close(init, x[random_real(y, m, gen(5))])  # init left untouched

    def discrepancy(p):  # maps that DM never trained on
        return float(mean_embedding_discrepancy(p, labels, x, y, gen(99), n_features=16,
                                                feature_dim=64))

    assert discrepancy(points) < 0.5 * discrepancy(init)
    assert discrepancy(points) < 0.5 * discrepancy(x[random_real(y, m, gen(6))])
    # the exact-mean variant (real_batch=0) and the default init run too
    points0, _ = distribution_matching(x, y, m, gen(1), steps=5, feature_dim=16, real_batch=0)
    assert points0.shape == (6, 8)


def toy():
    """Class 0: (0,0), (2,0); class 1: (0,4), (0,6). Means (1,0), (0,5); intra distance 2.
    Two class-0 prototypes (1,1) and (2,1)."""
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [0.0, 6.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    points = torch.tensor([[1.0, 1.0], [2.0, 1.0]], dtype=torch.float64)
    return points, torch.tensor([0, 0]), x, y


def test_prototype_losses_by_hand():
    points, labels, x, y = toy()
    assert float(mean_intra_class_distance(x, y)) == pytest.approx(2.0)
    torch.testing.assert_close(class_means(x, y),
                               torch.tensor([[1.0, 0.0], [0.0, 5.0]], dtype=torch.float64))
    t = 10.0
    terms = prototype_losses(points, labels, x, y, class_means(x, y), temperature=t)
    # (1,1): |.-mu0|^2 = 1, |.-mu1|^2 = 17; (2,1): 2 and 20. CE = log(1 + exp(-(d1 - d0)/T))
    class_match = (math.log1p(math.exp(-16 / t)) + math.log1p(math.exp(-18 / t))) / 2
    # nearest class-0 latent: (1,1) is 2 from both; (2,1) is 1 from (2,0)
    real_align = (2 + 1) / 2
    # one same-class pair, squared distance 1, s = 2
    diversity = math.exp(-1 / (2 * 2 ** 2))
    assert set(terms) == {"class_match", "real_align", "diversity"}
    assert all(v.dim() == 0 for v in terms.values())
    assert float(terms["class_match"]) == pytest.approx(class_match, rel=1e-12)
    assert float(terms["real_align"]) == pytest.approx(real_align, rel=1e-12)
    assert float(terms["diversity"]) == pytest.approx(diversity, rel=1e-12)
    # the terms are differentiable in the points
    p = points.clone().requires_grad_(True)
    sum(prototype_losses(p, labels, x, y, class_means(x, y), bandwidth=2.0).values()).backward()
    assert p.grad is not None and torch.isfinite(p.grad).all()


WEIGHTS = {"class_match": 1.0, "real_align": 0.5, "diversity": 0.2}


def weighted(terms: dict[str, float]) -> float:
    return sum(WEIGHTS[k] * v for k, v in terms.items())


def test_prototype_optimizer_lowers_the_weighted_loss():
    x, y = latents()
    init, labels = kmeans_centroids(x, y, 3, gen())
    init = init + 0.3 * torch.randn(init.shape, generator=gen(1))
    opt = PrototypeOptimizer(init, labels, x, y, lr=0.01)
    before = opt.run(0, WEIGHTS)
    assert torch.equal(opt.points, init)
    after = opt.run(40, WEIGHTS)
    assert weighted(after) < weighted(before)
    assert opt.points.shape == init.shape and torch.equal(opt.labels, labels)


def test_prototype_optimizer_keeps_adam_state_across_runs():
    x, y = latents()
    init, labels = kmeans_centroids(x, y, 3, gen())
    one = PrototypeOptimizer(init, labels, x, y, lr=0.02)
    two = PrototypeOptimizer(init, labels, x, y, lr=0.02)
    assert one.run(20, WEIGHTS) == {**two.run(10, WEIGHTS), **two.run(10, WEIGHTS)}
    assert torch.equal(one.points, two.points)
    # a fresh optimiser from the 10-step points (no Adam state) lands elsewhere
    half = PrototypeOptimizer(init, labels, x, y, lr=0.02)
    half.run(10, WEIGHTS)
    restart = PrototypeOptimizer(half.points, labels, x, y, lr=0.02)
    restart.run(10, WEIGHTS)
    assert not torch.allclose(restart.points, one.points)


def test_prototype_optimizer_checks_its_weights():
    x, y = latents()
    init, labels = kmeans_centroids(x, y, 2, gen())
    opt = PrototypeOptimizer(init, labels, x, y)
    with pytest.raises(ValueError, match="unknown loss term 'diverse'; the terms are"):
        opt.run(1, {"diverse": 1.0})
    with pytest.raises(ValueError, match="weight of 'real_align' must be a finite number >= 0"):
        opt.run(1, {"real_align": -1.0})
    with pytest.raises(ValueError, match="steps must be an integer >= 0, got -1"):
        opt.run(-1, {})


@pytest.mark.parametrize("call", [
    lambda x, y, m: random_real(y, m, gen()),
    lambda x, y, m: kmeans_centroids(x, y, m, gen()),
    lambda x, y, m: kmeans_medoids(x, y, m, gen()),
    lambda x, y, m: herding(x, y, m),
    lambda x, y, m: distribution_matching(x, y, m, gen(), steps=1),
])
def test_bad_m_and_inputs_raise(call):
    x, y = latents(n_per=40)
    with pytest.raises(ValueError, match="class 0 has 40 examples, fewer than m=50"):
        call(x, y, 50)
    with pytest.raises(ValueError, match=r"m \(points per class\) must be an integer >= 1, got 0"):
        call(x, y, 0)
    with pytest.raises(ValueError, match="labels must be >= 0, got -1"):
        call(x, torch.cat([y[:-1], torch.tensor([-1])]), 2)
    with pytest.raises(ValueError, match="class 2 has 0 examples, fewer than m=2"):
        call(x, torch.where(y == 2, 3, y), 2)  # class 2 is missing between 0 and 3


@pytest.mark.parametrize("call", [
    lambda x, y: kmeans_centroids(x, y, 2, gen()),
    lambda x, y: herding(x, y, 2),
    lambda x, y: distribution_matching(x, y, 2, gen(), steps=1),
])
def test_mismatched_shapes_raise(call):
    x, y = latents()
    with pytest.raises(ValueError, match="x has 119 rows but y has 120 labels"):
        call(x[:-1], y)
    with pytest.raises(ValueError, match=r"x must be \[N, D\] latents"):
        call(x[None], y)


def test_prototype_loss_input_errors():
    points, labels, x, y = toy()
    means = class_means(x, y)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\)"):
        prototype_losses(points, torch.tensor([0, 2]), x, y, means)
    with pytest.raises(ValueError, match=r"points must be \[M, 2\] like x"):
        prototype_losses(points[:, :1], labels, x, y, means)
    with pytest.raises(ValueError, match=r"class_means must be \[2, 2\]"):
        prototype_losses(points, labels, x, y, means[:1])
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        prototype_losses(points, labels, x, y, means, temperature=0.0)
    with pytest.raises(ValueError, match=r"init must be \[6, 8\]"):
        xl, yl = latents()
        distribution_matching(xl, yl, 2, gen(), steps=1, init=xl[:5])
