"""Evolved selection strategies: compositions of primitive scores found by genetic programming.

Besides the fixed strategies (EL2N, gradient norm, entropy, ...), a study may search for new
ones: an expression tree whose leaves name primitive scores and whose nodes combine two
children (``wsum``, ``product``, ``max``, ``min``). Primitive scores arrive rank-normalised to
[0, 1] (higher = more worth training on) and every node's value is rank-normalised again, so
a subtree means the same thing wherever it sits and a ``wsum`` weight mixes ranks, not the
magnitudes a product happens to shrink to.

Fitness is the caller's (a short proxy training on a validation split): it is the expensive
part, so `evolve` caches it per expression and counts the calls. Expressions are immutable,
hashable and stored in a canonical form (children of commutative nodes ordered by their text;
weights on a 0.01 grid), so ``min(a, b)`` and ``min(b, a)`` are one expression, cost one
fitness call, and ``str(expr)`` identifies it exactly; the variation operators also drop
identities such as ``min(a, a)`` (see `node`). Every random draw comes from
``make_generator(seed, "evolve", ...)``: the same seed gives the same search.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from thresher.registry import unknown_message
from thresher.scoring.ranks import average_ranks
from thresher.seeding import make_generator

OPS = ("wsum", "product", "max", "min")
WEIGHT_DECIMALS = 2  # weights live on a 0.01 grid: str() shows them exactly, the cache hits
COMMUTATIVE = frozenset({"product", "max", "min"})


# --- expressions -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Leaf:
    """A primitive score, by name."""

    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a leaf names a primitive score, got {self.name!r}")

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Node:
    """``op`` of two children; ``weight`` (in [0, 1]) only for ``wsum`` = w*left + (1-w)*right.

    Canonical on construction: the children of commutative ops are ordered by their text, and
    ``wsum(w, b, a)`` with b > a becomes ``wsum(1-w, a, b)``, so equal meanings compare equal.
    """

    op: str
    left: Expr
    right: Expr
    weight: float | None = None
    _text: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(unknown_message("operator", self.op, OPS))
        if not isinstance(self.left, (Leaf, Node)) or not isinstance(self.right, (Leaf, Node)):
            raise ValueError(f"children must be expressions, got {self.left!r}, {self.right!r}")
        weight = self.weight
        if self.op == "wsum":
            if weight is None or not 0.0 <= float(weight) <= 1.0:
                raise ValueError(f"wsum needs a weight in [0, 1], got {weight!r}")
            weight = _grid(float(weight))
        elif weight is not None:
            raise ValueError(f"only wsum takes a weight; {self.op} got {weight!r}")
        left, right = self.left, self.right
        if str(left) > str(right) and (self.op in COMMUTATIVE or self.op == "wsum"):
            left, right = right, left
            if weight is not None:
                weight = _grid(1.0 - weight)
        object.__setattr__(self, "left", left)
        object.__setattr__(self, "right", right)
        object.__setattr__(self, "weight", weight)
        head = f"{self.op}({weight:.{WEIGHT_DECIMALS}f}, " if weight is not None else f"{self.op}("
        object.__setattr__(self, "_text", f"{head}{left}, {right})")

    def __str__(self) -> str:
        return self._text


Expr = Leaf | Node


def node(op: str, left: Expr | str, right: Expr | str, weight: float | None = None) -> Expr:
    """A node with the identities that change nothing applied: ``op(a, a)`` is ``a`` for every
    op (each preserves a's order, and only order matters after rank normalisation) and a
    ``wsum`` of weight 1 or 0 is the child it keeps. The variation operators build through
    this, so they never spend a fitness call on a disguised copy."""
    left, right = _as_expr(left), _as_expr(right)
    if left == right:
        return left
    if op == "wsum" and weight is not None and _grid(float(weight)) in (0.0, 1.0):
        return left if _grid(float(weight)) == 1.0 else right
    return Node(op, left, right, weight)


def _grid(w: float) -> float:
    return round(min(max(w, 0.0), 1.0), WEIGHT_DECIMALS)


def wsum(weight: float, left: Expr | str, right: Expr | str) -> Node:
    """``weight * left + (1 - weight) * right``; strings are leaves (no simplification: see
    `node`)."""
    return Node("wsum", _as_expr(left), _as_expr(right), weight)


def product(left: Expr | str, right: Expr | str) -> Node:
    """``left * right``: high only where both are."""
    return Node("product", _as_expr(left), _as_expr(right))


def maximum(left: Expr | str, right: Expr | str) -> Node:
    """High where either is."""
    return Node("max", _as_expr(left), _as_expr(right))


def minimum(left: Expr | str, right: Expr | str) -> Node:
    """High only where both are, judged by the weaker."""
    return Node("min", _as_expr(left), _as_expr(right))


def _as_expr(x: Expr | str) -> Expr:
    return Leaf(x) if isinstance(x, str) else x


def depth(expr: Expr) -> int:
    """Edges on the longest root-to-leaf path: a leaf has depth 0."""
    if isinstance(expr, Leaf):
        return 0
    return 1 + max(depth(expr.left), depth(expr.right))


def size(expr: Expr) -> int:
    """Number of nodes, leaves included."""
    if isinstance(expr, Leaf):
        return 1
    return 1 + size(expr.left) + size(expr.right)


def leaves(expr: Expr) -> list[str]:
    """The primitive names at the leaves, left to right (with repeats)."""
    if isinstance(expr, Leaf):
        return [expr.name]
    return leaves(expr.left) + leaves(expr.right)


def to_dict(expr: Expr) -> dict[str, Any]:
    """A JSON-ready form: ``{"leaf": name}`` or ``{"op": ..., ["weight": w,] "args": [l, r]}``."""
    if isinstance(expr, Leaf):
        return {"leaf": expr.name}
    out: dict[str, Any] = {"op": expr.op}
    if expr.weight is not None:
        out["weight"] = expr.weight
    out["args"] = [to_dict(expr.left), to_dict(expr.right)]
    return out


def from_dict(data: Mapping[str, Any], primitives: Iterable[str] | None = None) -> Expr:
    """The inverse of `to_dict`. With ``primitives``, a leaf naming anything else is an error
    (a stored strategy whose score no longer exists should fail loudly, not at evaluation)."""
    valid = None if primitives is None else list(primitives)

    def build(d: Any) -> Expr:
        if not isinstance(d, Mapping):
            raise ValueError(f"an expression is a dict, got {d!r}")
        if "leaf" in d:
            name = d["leaf"]
            if valid is not None and name not in valid:
                raise ValueError(unknown_message("primitive", name, valid))
            return Leaf(name)
        op = d.get("op")
        if op not in OPS:
            raise ValueError(unknown_message("operator", op, OPS))
        args = d.get("args")
        if not isinstance(args, (list, tuple)) or len(args) != 2:
            raise ValueError(f"{op} takes two args, got {args!r}")
        return Node(op, build(args[0]), build(args[1]), d.get("weight"))

    return build(data)


# --- evaluation --------------------------------------------------------------------------------

def rank_normalise(x: torch.Tensor) -> torch.Tensor:
    """Average ranks scaled to [0, 1] (ties share their mean rank; a constant vector is 0.5).

    Ranks make compositions comparable whatever their raw scale, and only the order of the
    scores matters to the sampler that consumes them.
    """
    x = x.float()
    n = x.numel()
    if n <= 1:
        return torch.full_like(x, 0.5)
    return (average_ranks(x) / (n - 1)).to(x.dtype)


def _combine(op: str, a: torch.Tensor, b: torch.Tensor, weight: float | None) -> torch.Tensor:
    if op == "wsum":
        return weight * a + (1.0 - weight) * b
    if op == "product":
        return a * b
    if op == "max":
        return torch.maximum(a, b)
    return torch.minimum(a, b)


def evaluate(expr: Expr, scores: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The expression's score of every example, ``[N]`` in [0, 1].

    ``scores`` maps primitive names to rank-normalised ``[N]`` tensors; a leaf returns its
    score as given, every node rank-normalises what it computes.
    """
    missing = sorted(set(leaves(expr)) - set(scores))
    if missing:
        raise ValueError(unknown_message("primitive", missing[0], scores))
    lengths = {name: tuple(scores[name].shape) for name in set(leaves(expr))}
    if len(set(lengths.values())) > 1 or any(len(s) != 1 for s in lengths.values()):
        raise ValueError(f"primitive scores must be [N] tensors of one length, got {lengths}")
    memo: dict[Expr, torch.Tensor] = {}  # a repeated subtree is computed once

    def run(e: Expr) -> torch.Tensor:
        if e not in memo:
            if isinstance(e, Leaf):
                memo[e] = scores[e.name].float()
            else:
                memo[e] = rank_normalise(_combine(e.op, run(e.left), run(e.right), e.weight))
        return memo[e]

    return run(expr)


# --- variation ---------------------------------------------------------------------------------

def _randint(n: int, generator: torch.Generator) -> int:
    return int(torch.randint(n, (1,), generator=generator))


def _rand(generator: torch.Generator) -> float:
    return float(torch.rand((), generator=generator, dtype=torch.float64))


def _choice(items: Sequence[Any], generator: torch.Generator) -> Any:
    return items[_randint(len(items), generator)]


def _check_primitives(primitives: Sequence[str]) -> list[str]:
    if isinstance(primitives, str):
        raise ValueError(f"primitives must be a list of names, got the string {primitives!r}")
    names = list(primitives)
    if not names:
        raise ValueError("primitives must name at least one score")
    if len(set(names)) != len(names):
        raise ValueError(f"primitives must be distinct, got {names}")
    return names


def _check_depth(max_depth: int) -> None:
    if isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 0:
        raise ValueError(f"max_depth must be an integer >= 0, got {max_depth!r}")


def _random_node(op: str, left: Expr, right: Expr, generator: torch.Generator) -> Expr:
    weight = _rand(generator) if op == "wsum" else None
    return node(op, left, right, weight)


def random_expr(primitives: Sequence[str], max_depth: int, generator: torch.Generator, *,
                method: str | None = None) -> Expr:
    """A random expression of depth <= ``max_depth``.

    ``"full"``: every leaf at exactly ``max_depth``; ``"grow"``: the root is an operator (when
    ``max_depth`` >= 1) and below it each node is a leaf with probability
    #primitives / (#primitives + #ops). ``None`` is ramped half-and-half (Koza 1992): a depth
    drawn uniformly from 1..max_depth and either method with equal odds, so a population
    spans shapes and sizes.
    """
    names = _check_primitives(primitives)
    _check_depth(max_depth)
    if method is None:
        target = 1 + _randint(max_depth, generator) if max_depth >= 1 else 0
        method = "grow" if _rand(generator) < 0.5 else "full"
    elif method in ("grow", "full"):
        target = max_depth
    else:
        raise ValueError(unknown_message("method", method, ["grow", "full"]))
    p_leaf = len(names) / (len(names) + len(OPS))

    def build(d: int) -> Expr:
        at_bottom = d == target
        if at_bottom or (method == "grow" and d > 0 and _rand(generator) < p_leaf):
            return Leaf(_choice(names, generator))
        op = _choice(OPS, generator)
        left, right = build(d + 1), build(d + 1)
        return _random_node(op, left, right, generator)

    return build(0)


Path = tuple[int, ...]  # 0 = left, 1 = right, from the root


def _points(expr: Expr, path: Path = ()) -> list[tuple[Path, Expr]]:
    """Every (path, subtree), preorder."""
    out = [(path, expr)]
    if isinstance(expr, Node):
        out += _points(expr.left, path + (0,))
        out += _points(expr.right, path + (1,))
    return out


def _replace(expr: Expr, path: Path, new: Expr) -> Expr:
    if not path:
        return new
    assert isinstance(expr, Node)
    if path[0] == 0:
        return node(expr.op, _replace(expr.left, path[1:], new), expr.right, expr.weight)
    return node(expr.op, expr.left, _replace(expr.right, path[1:], new), expr.weight)


def _check_within(expr: Expr, max_depth: int, what: str) -> None:
    if depth(expr) > max_depth:
        raise ValueError(f"{what} {expr} has depth {depth(expr)} > max_depth {max_depth}")


def crossover(a: Expr, b: Expr, generator: torch.Generator,
              max_depth: int) -> tuple[Expr, Expr]:
    """Subtree crossover: swap a random subtree of ``a`` with one of ``b``.

    The pair of crossover points is drawn uniformly among those that keep both children within
    ``max_depth`` (swapping the two roots, which only exchanges the parents, is excluded when
    anything else is possible).
    """
    _check_depth(max_depth)
    _check_within(a, max_depth, "parent")
    _check_within(b, max_depth, "parent")
    pa, pb = _points(a), _points(b)
    da = {path: depth(sub) for path, sub in pa}
    db = {path: depth(sub) for path, sub in pb}
    pairs = [(i, j) for i, (path_a, _) in enumerate(pa) for j, (path_b, _) in enumerate(pb)
             if (path_a or path_b)
             and len(path_a) + db[path_b] <= max_depth and len(path_b) + da[path_a] <= max_depth]
    if not pairs:
        return a, b
    i, j = _choice(pairs, generator)
    (path_a, sub_a), (path_b, sub_b) = pa[i], pb[j]
    return _replace(a, path_a, sub_b), _replace(b, path_b, sub_a)


def mutate(expr: Expr, primitives: Sequence[str], generator: torch.Generator, max_depth: int,
           *, sigma: float = 0.1, tries: int = 8) -> Expr:
    """One random change: an operator swapped for another, a ``wsum`` weight moved by
    N(0, sigma) and clipped to [0, 1], a leaf renamed, or a subtree replaced by a random one
    that fits in ``max_depth``. The kind is drawn uniformly among those the tree allows; a
    draw that leaves the expression unchanged is retried up to ``tries`` times (an unchanged
    child would only cost a cache lookup, but it wastes a slot in the population).
    """
    names = _check_primitives(primitives)
    _check_depth(max_depth)
    _check_within(expr, max_depth, "expression")
    out = expr
    for _ in range(max(1, tries)):
        out = _mutate_once(expr, names, generator, max_depth, sigma)
        if out != expr:
            break
    return out


def _mutate_once(expr: Expr, names: list[str], generator: torch.Generator, max_depth: int,
                 sigma: float) -> Expr:
    points = _points(expr)
    nodes = [(p, e) for p, e in points if isinstance(e, Node)]
    wsums = [(p, e) for p, e in nodes if e.op == "wsum"]
    kinds = ["subtree"]
    if nodes:
        kinds.append("op")
    if wsums:
        kinds.append("weight")
    if len(names) > 1:
        kinds.append("leaf")
    kind = _choice(kinds, generator)
    if kind == "op":
        path, old = _choice(nodes, generator)
        op = _choice([o for o in OPS if o != old.op], generator)
        return _replace(expr, path, _random_node(op, old.left, old.right, generator))
    if kind == "weight":
        path, old = _choice(wsums, generator)
        step = sigma * float(torch.randn((), generator=generator, dtype=torch.float64))
        new = node("wsum", old.left, old.right, _grid(old.weight + step))
        return _replace(expr, path, new)
    if kind == "leaf":
        path, leaf = _choice([(p, e) for p, e in points if isinstance(e, Leaf)], generator)
        name = _choice([n for n in names if n != leaf.name], generator)
        return _replace(expr, path, Leaf(name))
    path, _ = _choice(points, generator)
    room = max_depth - len(path)
    sub = random_expr(names, room, generator, method="grow") if room > 0 else Leaf(
        _choice(names, generator))
    return _replace(expr, path, sub)


# --- search ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GenerationStats:
    generation: int  # 0 = the initial population
    best: float  # best fitness in this generation's population
    mean: float  # mean of its finite fitnesses (nan when none is finite)
    best_expr: str
    evaluations: int  # fitness calls so far, cumulative


@dataclass
class EvolutionResult:
    best: Expr
    best_fitness: float
    history: list[GenerationStats]
    fitnesses: dict[Expr, float]  # every expression evaluated, in evaluation order
    evaluations: int  # fitness calls made (= len(fitnesses): the cache never calls twice)
    population: list[Expr]  # the final population

    def top(self, k: int) -> list[tuple[Expr, float]]:
        """The ``k`` best distinct expressions evaluated, best first (ties: earliest first) —
        the candidates to add to a policy's action set."""
        ranked = sorted(self.fitnesses.items(), key=lambda item: -item[1])
        return ranked[:k]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe summary (a non-finite fitness becomes None)."""
        def num(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return {
            "best": to_dict(self.best), "best_str": str(self.best),
            "best_fitness": num(self.best_fitness), "evaluations": self.evaluations,
            "history": [{"generation": h.generation, "best": num(h.best), "mean": num(h.mean),
                         "best_expr": h.best_expr, "evaluations": h.evaluations}
                        for h in self.history],
            "evaluated": [{"expr": str(e), "fitness": num(f)} for e, f in self.fitnesses.items()],
        }


class _Cache:
    """Fitness per distinct expression; each miss is one (expensive) call."""

    def __init__(self, fitness: Callable[[Expr], float]) -> None:
        self.fitness = fitness
        self.values: dict[Expr, float] = {}

    def __call__(self, expr: Expr) -> float:
        if expr not in self.values:
            value = float(self.fitness(expr))
            self.values[expr] = value if math.isfinite(value) else -math.inf
        return self.values[expr]


def _check_rate(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value}")


def _tournament(pop: list[Expr], fits: list[float], entrants: int,
                generator: torch.Generator) -> Expr:
    """The fittest of ``entrants`` distinct members drawn at random (ties: the earlier one)."""
    picks = torch.randperm(len(pop), generator=generator)[:entrants].tolist()
    return pop[max(picks, key=lambda k: (fits[k], -k))]


def _stats(generation: int, population: list[Expr], cache: _Cache) -> GenerationStats:
    fits = [cache(e) for e in population]
    i = max(range(len(fits)), key=lambda k: (fits[k], -k))
    finite = [f for f in fits if math.isfinite(f)]
    mean = sum(finite) / len(finite) if finite else math.nan
    return GenerationStats(generation, fits[i], mean, str(population[i]), len(cache.values))


def _result(cache: _Cache, history: list[GenerationStats],
            population: list[Expr]) -> EvolutionResult:
    best, best_fitness = max(cache.values.items(), key=lambda item: item[1])  # first of ties
    return EvolutionResult(best, best_fitness, history, dict(cache.values), len(cache.values),
                           population)


def evolve(primitives: Sequence[str], fitness: Callable[[Expr], float], *, population: int = 16,
           generations: int = 10, tournament: int = 3, elite: int = 2,
           crossover_rate: float = 0.8, mutation_rate: float = 0.3, max_depth: int = 3,
           seed: int = 0) -> EvolutionResult:
    """Genetic programming over score compositions; ``fitness(expr)`` is higher-is-better.

    Generation 0 holds every primitive on its own (up to half the population: the fixed
    strategies are the baseline to beat) and ramped half-and-half random trees. Each of the
    ``generations`` that follow keeps the ``elite`` best distinct expressions unchanged and
    fills the rest with children of tournament-selected parents: subtree crossover with
    probability ``crossover_rate``, then mutation with probability ``mutation_rate``; a child
    already in the new population is mutated instead (a few tries), so the population does not
    collapse onto copies. Fitness is cached per expression and a non-finite value counts as
    -inf. ``history`` has ``generations + 1`` entries.
    """
    names = _check_primitives(primitives)
    _check_depth(max_depth)
    if population < 1:
        raise ValueError(f"population must be >= 1, got {population}")
    if generations < 0:
        raise ValueError(f"generations must be >= 0, got {generations}")
    if not 0 <= elite < population:
        raise ValueError(f"elite must lie in [0, population={population}), got {elite}")
    if not 1 <= tournament <= population:
        raise ValueError(f"tournament must lie in [1, population={population}], got {tournament}")
    _check_rate("crossover_rate", crossover_rate)
    _check_rate("mutation_rate", mutation_rate)

    cache = _Cache(fitness)
    g = make_generator(seed, "evolve", "init")
    order = torch.randperm(len(names), generator=g).tolist()
    pop: list[Expr] = [Leaf(names[i]) for i in order[: max(1, population // 2)]]
    for _ in range(20 * population):  # distinct random trees, while the space allows
        if len(pop) >= population:
            break
        candidate = random_expr(names, max_depth, g)
        if candidate not in pop:
            pop.append(candidate)
    while len(pop) < population:
        pop.append(random_expr(names, max_depth, g))
    history = [_stats(0, pop, cache)]

    for gen in range(1, generations + 1):
        g = make_generator(seed, "evolve", "generation", gen)
        fits = [cache(e) for e in pop]
        ranked = sorted(range(len(pop)), key=lambda k: -fits[k])  # stable: ties by position
        nxt: list[Expr] = []
        for k in ranked:
            if len(nxt) >= elite:
                break
            if pop[k] not in nxt:
                nxt.append(pop[k])

        while len(nxt) < population:
            first = _tournament(pop, fits, tournament, g)
            if _rand(g) < crossover_rate:
                second = _tournament(pop, fits, tournament, g)
                children = list(crossover(first, second, g, max_depth))
            else:
                children = [first]
            for child in children:
                if len(nxt) >= population:
                    break
                if _rand(g) < mutation_rate:
                    child = mutate(child, names, g, max_depth)
                for _ in range(4):
                    if child not in nxt:
                        break
                    child = mutate(child, names, g, max_depth)
                nxt.append(child)
        pop = nxt
        history.append(_stats(gen, pop, cache))

    return _result(cache, history, pop)


def random_search(primitives: Sequence[str], fitness: Callable[[Expr], float], *,
                  evaluations: int, max_depth: int = 3, seed: int = 0) -> EvolutionResult:
    """The baseline `evolve` must beat: ``evaluations`` distinct ramped half-and-half trees,
    each scored once (fewer when the space of trees runs out). ``history`` has one entry per
    evaluation, ``best`` being the running best."""
    names = _check_primitives(primitives)
    _check_depth(max_depth)
    if evaluations < 1:
        raise ValueError(f"evaluations must be >= 1, got {evaluations}")
    cache = _Cache(fitness)
    g = make_generator(seed, "evolve", "random_search")
    history: list[GenerationStats] = []
    best: tuple[float, str] = (-math.inf, "")
    for _ in range(50 * evaluations):
        if len(cache.values) >= evaluations:
            break
        expr = random_expr(names, max_depth, g)
        if expr in cache.values:
            continue
        value = cache(expr)
        if not history or value > best[0]:
            best = (value, str(expr))
        finite = [f for f in cache.values.values() if math.isfinite(f)]
        history.append(GenerationStats(len(history), best[0],
                                       sum(finite) / len(finite) if finite else math.nan,
                                       best[1], len(cache.values)))
    return _result(cache, history, list(cache.values))
