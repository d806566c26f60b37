"""Evolved selection strategies: hand-computed evaluation, canonical form, serialisation, depth
limits of the variation operators, reproducibility, elitism, the fitness cache, and a synthetic
search where evolution must beat the best primitive and random search at equal budget."""

import json
import math
from collections import Counter

import pytest
import torch

from thresher.select.evolve import (
    Leaf,
    Node,
    crossover,
    depth,
    evaluate,
    evolve,
    from_dict,
    leaves,
    maximum,
    minimum,
    mutate,
    node,
    product,
    random_expr,
    random_search,
    rank_normalise,
    size,
    to_dict,
    wsum,
)

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ["el2n", "entropy", "forgetting", "margin", "loss"]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# Dyadic values, so every sum and product below is exact and ties are real ties.
A = torch.tensor([0.0, 0.25, 0.5, 1.0])
B = torch.tensor([1.0, 0.0, 0.5, 0.25])
SCORES = {"a": A, "b": B}


def test_rank_normalise_averages_ties_and_scales_to_unit_interval():
    x = torch.tensor([3.0, 1.0, 2.0, 2.0, 7.0])
    # ranks 0..4: 1 -> 0, the two 2s share 1.5, 3 -> 3, 7 -> 4; divided by n - 1 = 4
    assert torch.allclose(rank_normalise(x), torch.tensor([0.75, 0.0, 0.375, 0.375, 1.0]))
    assert torch.equal(rank_normalise(torch.full((3,), 5.0)), torch.full((3,), 0.5))
    assert torch.equal(rank_normalise(torch.tensor([9.0])), torch.tensor([0.5]))


@pytest.mark.parametrize("expr, expected", [
    # a*b = [0, 0, .25, .25]: the two 0s share rank 0.5, the two .25s share 2.5; / 3
    (product("a", "b"), [1 / 6, 1 / 6, 5 / 6, 5 / 6]),
    # max = [1, .25, .5, 1]: .25 -> 0, .5 -> 1, the 1s share 2.5
    (maximum("a", "b"), [5 / 6, 0.0, 1 / 3, 5 / 6]),
    # min = [0, 0, .5, .25]: the 0s share 0.5, .25 -> 2, .5 -> 3
    (minimum("a", "b"), [1 / 6, 1 / 6, 1.0, 2 / 3]),
    # .75a + .25b = [.25, .1875, .5, .8125]: ranks 1, 0, 2, 3
    (wsum(0.75, "a", "b"), [1 / 3, 0.0, 2 / 3, 1.0]),
    # .25a + .75b = [.75, .0625, .5, .4375]: ranks 3, 0, 2, 1
    (wsum(0.25, "a", "b"), [1.0, 0.0, 2 / 3, 1 / 3]),
])
def test_evaluate_each_op_by_hand(expr, expected):
    assert torch.allclose(evaluate(expr, SCORES), torch.tensor(expected))


def test_evaluate_renormalises_every_node_and_leaves_pass_through():
    assert torch.equal(evaluate(Leaf("a"), SCORES), A)
    # inner max(a, b) -> [5/6, 0, 1/3, 5/6] (not the raw [1, .25, .5, 1]); times a =
    # [0, 0, 1/6, 5/6] -> ranks 0.5, 0.5, 2, 3. With the raw max the product would be
    # [0, .0625, .25, 1] -> ranks 0, 1, 2, 3: the test tells the two apart.
    expr = product(maximum("a", "b"), "a")
    assert torch.allclose(evaluate(expr, SCORES), torch.tensor([1 / 6, 1 / 6, 2 / 3, 1.0]))


def test_evaluate_names_the_missing_primitive_and_checks_shapes():
    with pytest.raises(ValueError, match=r"unknown primitive 'c'.*choose one of: a, b"):
        evaluate(minimum("a", "c"), SCORES)
    with pytest.raises(ValueError, match="one length"):
        evaluate(minimum("a", "b"), {"a": A, "b": torch.zeros(3)})


def test_str_depth_size_and_canonical_equality():
    expr = wsum(0.7, "el2n", minimum("forgetting", "entropy"))
    assert str(expr) == "wsum(0.70, el2n, min(entropy, forgetting))"
    assert depth(expr) == 2 and size(expr) == 5 and depth(Leaf("x")) == 0
    assert leaves(expr) == ["el2n", "entropy", "forgetting"]
    # commutative ops order their children; wsum swaps with 1 - w; weights on a 0.01 grid
    assert minimum("b", "a") == minimum("a", "b")
    assert hash(product("b", "a")) == hash(product("a", "b"))
    assert wsum(0.3, "b", "a") == wsum(0.7, "a", "b")
    assert str(wsum(0.3, "b", "a")) == "wsum(0.70, a, b)"
    assert wsum(0.7004, "a", "b") == wsum(0.7, "a", "b")
    assert minimum("a", "b") != maximum("a", "b")
    assert wsum(0.7, "a", "b") != wsum(0.6, "a", "b")
    assert len({minimum("a", "b"), minimum("b", "a"), wsum(0.3, "b", "a"),
                wsum(0.7, "a", "b")}) == 2


def test_node_drops_identities_that_change_no_ranking():
    assert node("min", "a", "a") == Leaf("a")
    assert node("product", minimum("a", "b"), minimum("b", "a")) == minimum("a", "b")
    assert node("wsum", "a", "b", 1.0) == Leaf("a")
    assert node("wsum", "a", "b", 0.001) == Leaf("b")
    assert node("wsum", "a", "b", 0.5) == wsum(0.5, "a", "b")


def test_node_rejects_bad_ops_and_weights():
    with pytest.raises(ValueError, match="unknown operator 'mean'"):
        Node("mean", Leaf("a"), Leaf("b"))
    with pytest.raises(ValueError, match="weight in"):
        wsum(1.5, "a", "b")
    with pytest.raises(ValueError, match="weight in"):
        Node("wsum", Leaf("a"), Leaf("b"))
    with pytest.raises(ValueError, match="only wsum"):
        Node("min", Leaf("a"), Leaf("b"), 0.5)


def test_to_dict_from_dict_round_trip_through_json():
    g = gen(3)
    exprs = [random_expr(NAMES, 3, g) for _ in range(50)]
    exprs.append(wsum(0.7, "el2n", minimum("entropy", "forgetting")))
    for expr in exprs:
        data = json.loads(json.dumps(to_dict(expr)))
        back = from_dict(data, NAMES)
        assert back == expr and str(back) == str(expr) and hash(back) == hash(expr)
    assert to_dict(wsum(0.25, "a", "b")) == {
        "op": "wsum", "weight": 0.25, "args": [{"leaf": "a"}, {"leaf": "b"}]}


def test_from_dict_errors_name_the_valid_choices():
    bad = {"op": "min", "args": [{"leaf": "el2m"}, {"leaf": "entropy"}]}
    with pytest.raises(ValueError, match=r"'el2m'; did you mean 'el2n'\? choose one of: el2n"):
        from_dict(bad, NAMES)
    assert from_dict(bad) == minimum("el2m", "entropy")  # without primitives, any name
    with pytest.raises(ValueError, match="unknown operator 'avg'"):
        from_dict({"op": "avg", "args": [{"leaf": "a"}, {"leaf": "b"}]})
    with pytest.raises(ValueError, match="two args"):
        from_dict({"op": "min", "args": [{"leaf": "a"}]})


@pytest.mark.parametrize("max_depth", [0, 1, 2, 3])
def test_random_expr_respects_depth_and_ramps(max_depth):
    g = gen(max_depth)
    exprs = [random_expr(NAMES, max_depth, g) for _ in range(300)]
    depths = Counter(depth(e) for e in exprs)
    assert max(depths) <= max_depth
    if max_depth >= 1:  # ramped half-and-half reaches every depth from 1 to max_depth
        assert set(range(1, max_depth + 1)) <= set(depths)
    assert {name for e in exprs for name in leaves(e)} == set(NAMES)
    full = [random_expr(NAMES, max_depth, g, method="full") for _ in range(100)]
    assert max(depth(e) for e in full) == max_depth and all(depth(e) <= max_depth for e in full)


def test_crossover_and_mutate_never_exceed_max_depth():
    g = gen(7)
    for max_depth in (1, 2, 3):
        pool = [random_expr(NAMES, max_depth, g) for _ in range(40)]
        changed = 0
        for i in range(300):
            a, b = pool[i % 40], pool[(7 * i + 3) % 40]
            c, d = crossover(a, b, g, max_depth)
            m = mutate(a, NAMES, g, max_depth)
            assert max(depth(c), depth(d), depth(m)) <= max_depth
            changed += m != a
            pool[i % 40] = c if i % 2 else m  # let the operators feed on their own output
        assert changed > 250  # mutation changes the expression (retrying a no-op draw)


def test_crossover_swaps_subtrees_and_conserves_leaves():
    g = gen(1)
    for _ in range(100):  # disjoint primitives, so no child can simplify anything away
        a = random_expr(["a1", "a2", "a3"], 3, g, method="full")
        b = random_expr(["b1", "b2", "b3"], 2, g)
        c, d = crossover(a, b, g, 3)
        assert Counter(leaves(c)) + Counter(leaves(d)) == Counter(leaves(a)) + Counter(leaves(b))
        assert {c, d} != {a, b}
    with pytest.raises(ValueError, match="max_depth"):
        crossover(random_expr(NAMES, 3, g, method="full"), Leaf("el2n"), g, 2)


def test_mutate_weight_stays_in_unit_interval():
    g = gen(2)
    expr = wsum(0.99, "el2n", wsum(0.01, "entropy", "loss"))
    for _ in range(300):
        expr = mutate(expr, ["el2n", "entropy", "loss"], g, 2)
        for sub in _subtrees(expr):
            if isinstance(sub, Node) and sub.op == "wsum":
                assert 0.0 <= sub.weight <= 1.0


def _subtrees(expr):
    yield expr
    if isinstance(expr, Node):
        yield from _subtrees(expr.left)
        yield from _subtrees(expr.right)


# --- search ------------------------------------------------------------------------------------

def synthetic(n: int = 500, n_primitives: int = 10, seed: int = 0):
    """Primitives = independent random rankings; fitness = Spearman correlation (Pearson on
    the rank-normalised scores) with a hidden composition of three of them."""
    g = gen(seed)
    names = [f"p{i}" for i in range(1, n_primitives + 1)]
    scores = {name: rank_normalise(torch.rand(n, generator=g)) for name in names}
    target = evaluate(minimum("p1", wsum(0.5, "p2", "p3")), scores)
    t = target - target.mean()

    def spearman(expr) -> float:
        s = evaluate(expr, scores)
        s = s - s.mean()
        return float((s * t).sum() / (s.norm() * t.norm() + 1e-12))

    return names, spearman


def counting(fitness):
    calls: list = []

    def wrapped(expr):
        calls.append(expr)
        return fitness(expr)

    return wrapped, calls


def test_evolve_is_reproducible_from_the_seed():
    names, fitness = synthetic(n=200)
    kw = dict(population=10, generations=5)
    r1, r2 = evolve(names, fitness, seed=4, **kw), evolve(names, fitness, seed=4, **kw)
    assert r1.history == r2.history
    assert list(r1.fitnesses.items()) == list(r2.fitnesses.items())
    assert r1.best == r2.best and r1.population == r2.population
    r3 = evolve(names, fitness, seed=5, **kw)
    assert list(r3.fitnesses) != list(r1.fitnesses) and r3.history != r1.history
    s1 = random_search(names, fitness, evaluations=30, seed=4)
    assert list(s1.fitnesses) == list(random_search(names, fitness, evaluations=30,
                                                     seed=4).fitnesses)


def test_elitism_keeps_the_best_fitness_non_decreasing():
    names, fitness = synthetic(n=200)
    for seed in range(4):
        result = evolve(names, fitness, population=8, generations=12, elite=1,
                        crossover_rate=0.0, mutation_rate=1.0, seed=seed)
        best = [h.best for h in result.history]
        assert all(b1 >= b0 for b0, b1 in zip(best, best[1:])), best
        assert best[-1] == result.best_fitness
    # the check has teeth: without elitism the same search loses its best at some point
    dropped = 0
    for seed in range(4):
        result = evolve(names, fitness, population=8, generations=12, elite=0,
                        crossover_rate=0.0, mutation_rate=1.0, seed=seed)
        best = [h.best for h in result.history]
        dropped += any(b1 < b0 for b0, b1 in zip(best, best[1:]))
    assert dropped >= 1


def test_fitness_is_called_once_per_distinct_expression():
    names, fitness = synthetic(n=200)
    wrapped, calls = counting(fitness)
    population, generations = 12, 8
    result = evolve(names, wrapped, population=population, generations=generations, seed=0)
    assert len(calls) == len(set(calls)) == result.evaluations == len(result.fitnesses)
    assert set(calls) == set(result.fitnesses)
    assert result.evaluations < population * (generations + 1)  # elites alone hit the cache
    assert [h.evaluations for h in result.history][-1] == result.evaluations
    assert len(result.history) == generations + 1
    wrapped, calls = counting(fitness)
    searched = random_search(names, wrapped, evaluations=40, seed=0)
    assert len(calls) == len(set(calls)) == searched.evaluations == 40


def test_non_finite_fitness_counts_as_minus_infinity():
    names, fitness = synthetic(n=200)

    def flaky(expr):
        return math.nan if "p1" in leaves(expr) else fitness(expr)

    result = evolve(names, flaky, population=10, generations=4, seed=0)
    bad = [e for e in result.fitnesses if "p1" in leaves(e)]
    assert bad and all(result.fitnesses[e] == -math.inf for e in bad)
    assert math.isfinite(result.best_fitness) and "p1" not in leaves(result.best)
    assert all(math.isfinite(h.mean) for h in result.history)
    summary = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert summary["best_str"] == str(result.best)
    top = result.top(3)
    assert top[0] == (result.best, result.best_fitness)
    assert top[0][1] >= top[1][1] >= top[2][1]


@pytest.mark.parametrize("kwargs, message", [
    (dict(primitives=[]), "at least one"),
    (dict(primitives=["a", "a"]), "distinct"),
    (dict(elite=4), "elite"),
    (dict(elite=5), "elite"),
    (dict(tournament=5), "tournament"),
    (dict(tournament=0), "tournament"),
    (dict(crossover_rate=1.1), "crossover_rate"),
    (dict(mutation_rate=-0.1), "mutation_rate"),
    (dict(max_depth=-1), "max_depth"),
    (dict(population=0), "population"),
])
def test_evolve_rejects_bad_arguments(kwargs, message):
    args = dict(primitives=["a", "b"], population=4)
    args.update(kwargs)
    primitives = args.pop("primitives")
    with pytest.raises(ValueError, match=message):
        evolve(primitives, lambda e: 0.0, **args)


def test_evolution_beats_best_primitive_and_random_search_at_equal_budget():
    names, fitness = synthetic()
    best_primitive = max(fitness(Leaf(name)) for name in names)
    evolved, searched = [], []
    for seed in (1, 2, 3):
        result = evolve(names, fitness, population=16, generations=12, seed=seed)
        baseline = random_search(names, fitness, evaluations=result.evaluations, seed=seed)
        assert baseline.evaluations == result.evaluations
        evolved.append(result.best_fitness)
        searched.append(baseline.best_fitness)
    # measured: best primitive 0.63; evolution 0.96, 0.95, 0.96; random search 0.76, 0.67, 0.79
    assert all(e > best_primitive + 0.2 for e in evolved), (best_primitive, evolved)
    assert all(e > s + 0.08 for e, s in zip(evolved, searched)), (evolved, searched)
    assert sum(evolved) / 3 > sum(searched) / 3 + 0.12
