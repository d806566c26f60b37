"""Samplers, k-means and sensitivity sampling: hand-checked cases, invariants, statistics."""

import pytest
import torch
from sklearn.cluster import KMeans

from thresher.select import (
    badge,
    estimate_lambda,
    kcenter_greedy,
    kmeans,
    kmeans_pp,
    medoid_centers,
    random_sample,
    sensitivity_sample,
    systematic_pps,
    top_k,
)
from thresher.select.kmeans import euclidean_sq_dist_to
from thresher.train import last_layer_grad_embeddings


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def blobs(n_per: int = 100, k: int = 4, spread: float = 0.1, seed: int = 0):
    g = gen(seed)
    means = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 5.0]])[:k]
    x = means.repeat_interleave(n_per, 0) + spread * torch.randn(n_per * k, 2, generator=g)
    return x, torch.arange(k).repeat_interleave(n_per)


def test_kmeans_recovers_separated_blobs_and_matches_sklearn_cost():
    x, truth = blobs()
    result = kmeans(x, 4, gen(1))
    for c in range(4):  # every true blob lands in a single cluster
        assert len(result.assign[truth == c].unique()) == 1
    ref = KMeans(4, n_init=10, random_state=0).fit(x.numpy())
    assert result.cost <= ref.inertia_ * 1.01


def test_kmeans_pp_seeds_are_distinct_even_with_duplicate_points():
    x = torch.zeros(10, 3)
    x[0] = 1.0
    seeds = kmeans_pp(10, 5, euclidean_sq_dist_to(x), gen())
    assert len(seeds.unique()) == 5
    with pytest.raises(ValueError, match="cannot choose 11 seeds from 10 points"):
        kmeans_pp(10, 11, euclidean_sq_dist_to(x), gen())


def test_medoids_are_the_members_nearest_their_centre():
    x = torch.tensor([[0.0], [1.0], [3.0], [10.0], [11.0]])
    result = kmeans(x, 2, gen())
    medoids = medoid_centers(x, result)
    # clusters {0, 1, 3} (mean 1.33 -> nearest member 1) and {10, 11} (mean 10.5 -> tie, 10)
    assert sorted(x[medoids].flatten().tolist()) == [1.0, 10.0]


def test_top_k_random_and_budget_errors():
    scores = torch.tensor([0.1, 0.9, 0.5, 0.9])
    assert top_k(scores, 2).tolist() == [1, 3]
    assert len(random_sample(50, 20, gen()).unique()) == 20
    with pytest.raises(ValueError, match="budget 5 is larger than the pool of 4"):
        top_k(scores, 5)
    with pytest.raises(ValueError, match="budget must be positive"):
        random_sample(4, 0, gen())


def test_kcenter_takes_the_farthest_point_each_time():
    x = torch.tensor([[1.0], [2.0], [10.0], [6.0]])
    labelled = torch.tensor([[0.0]])
    # farthest from 0 is 10; then distances to {0, 10}: 1 -> 1, 2 -> 2, 6 -> 4
    assert kcenter_greedy(x, 3, labelled).tolist() == [2, 3, 1]


def test_badge_factorised_distances_equal_explicit_gradient_embeddings():
    g = gen(3)
    probs = torch.softmax(torch.randn(30, 4, generator=g), 1)
    emb = torch.randn(30, 6, generator=g)
    explicit = last_layer_grad_embeddings(probs, emb, probs.argmax(1))
    chosen = badge(probs, emb, 8, gen(5))
    again = kmeans_pp(30, 8, euclidean_sq_dist_to(explicit), gen(5))
    assert torch.equal(chosen, again)  # same seeds from the same draws: distances agree
    assert len(chosen.unique()) == 8


def test_systematic_pps_has_exact_size_and_inclusion_probabilities():
    p = torch.tensor([0.4, 0.2, 0.1, 0.1, 0.1, 0.05, 0.05])
    budget, draws = 3, 4000
    counts = torch.zeros(7)
    g = gen(0)
    for _ in range(draws):
        idx, pi = systematic_pps(p, budget, g)
        assert len(idx) == budget and len(idx.unique()) == budget
        counts[idx] += 1
    # 3 * 0.4 > 1: unit 0 is certain; the other 2 draws spread over the rest by p
    expected = torch.cat([torch.ones(1), 2 * p[1:] / p[1:].sum()])
    assert counts[0] == draws
    assert torch.allclose(counts / draws, expected, atol=0.03)
    assert torch.allclose(pi, expected[idx].float(), atol=1e-6)


def test_lambda_estimate_by_hand():
    centres = torch.tensor([[0.0], [2.0], [5.0]])
    losses = torch.tensor([1.0, 3.0, 3.3])
    # nearest other centre: 0->2 (|3-1|/4), 2->0 (same), 5->2 (|3.3-3|/9)
    ratio = estimate_lambda(centres, losses, 2.0, "cluster")
    assert torch.allclose(ratio, torch.tensor([0.5, 0.5, 0.3 / 9]))
    assert torch.allclose(estimate_lambda(centres, losses, 2.0, "global"), torch.full((3,), 0.5))
    with pytest.raises(ValueError, match="unknown lambda estimate 'median'"):
        estimate_lambda(centres, losses, 2.0, "median")


def test_sensitivity_probabilities_and_weights_on_a_hand_built_clustering():
    # two tight groups; each centre rounds onto the middle point of its group
    x = torch.tensor([[0.0], [-1.0], [1.0], [100.0], [98.0], [102.0]])
    losses = {0: 0.5, 3: 2.0}
    asked = []

    def oracle(idx):
        asked.extend(idx.tolist())
        return torch.tensor([losses[int(i)] for i in idx])

    out = sensitivity_sample(x, 4, oracle, 2, gen(), z=2.0, lam=0.25)
    assert sorted(asked) == [0, 3] and sorted(out.centers.tolist()) == [0, 3]
    s = torch.tensor([0.5, 0.5 + 0.25, 0.5 + 0.25, 2.0, 2.0 + 1.0, 2.0 + 1.0])
    assert torch.allclose(out.probs, s / s.sum())
    # centres first with weight 1; 2 more from {1, 2, 4, 5} with pi = 2 * s / sum(s over them)
    assert out.indices[:2].tolist() == out.centers.tolist()
    assert torch.equal(out.weights[:2], torch.ones(2))
    rest = s[[1, 2, 4, 5]]
    pi = dict(zip([1, 2, 4, 5], (2 * rest / rest.sum()).tolist()))
    for i, w in zip(out.indices[2:].tolist(), out.weights[2:].tolist()):
        assert w == pytest.approx(1 / pi[i], rel=1e-5)


def test_weighted_loss_estimator_is_unbiased():
    x, _ = blobs(n_per=60, spread=1.0, seed=4)
    loss = 1.0 + torch.sin(x[:, 0]) + 0.1 * x[:, 1].abs()  # smooth in the embedding
    total = float(loss.sum())
    estimates = []
    for r in range(300):
        out = sensitivity_sample(x, 30, lambda idx: loss[idx], 8, gen(r), lam="global")
        estimates.append(float((out.weights * loss[out.indices]).sum()))
    est = torch.tensor(estimates)
    stderr = est.std() / len(est) ** 0.5
    assert abs(est.mean() - total) < 4 * stderr
    assert est.std() > 0  # the test could fail: the estimate really varies


def test_sensitivity_rejects_bad_cluster_counts():
    x, _ = blobs(n_per=5)
    with pytest.raises(ValueError, match="clusters must be in"):
        sensitivity_sample(x, 4, lambda i: torch.ones(len(i)), 5, gen())
