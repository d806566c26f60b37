"""Per-epoch data selection: which rows of the training set the model trains on this epoch.

An RL-guided selection study trains on an adaptively chosen subset every epoch and lets an
agent choose *which strategy* picks it, so every strategy here has one signature,
``fn(stats, budget, generator, state) -> Selection``, and is looked up by name in
`EPOCH_STRATEGIES`:

- ``stats`` (`EpochStats`): per-example tensors from at most one batched inference pass over
  the training set (`collect_stats`), plus the records the training pass keeps for free
  (`LossRecord`, `ForgettingCounter`). Strategies that read only the records cost no pass.
- ``budget``: rows to return (``full`` and ``infobatch`` ignore it).
- ``generator``: every random draw, so a seeded run is reproducible; it also breaks ties.
- ``state``: a dict carried across epochs: options (``sampling``, ``power``, ``balance``,
  ``weights``, ``clusters``, ``prune_ratio``, ``delta``, ``loss_source``), the epoch index
  and the total epochs (``epoch``, ``epochs``; InfoBatch needs them), and strategy memory
  (RS2's queue).

The simple baselines are strong and implemented as their papers do: RS2 (Okanovic et al.
2024, a fresh random subset each epoch, without replacement across epochs) and InfoBatch
(Qin et al. 2024, loss-based random pruning with an unbiased rescaling). `score_matrix` gives
the rank-normalised primitive scores that ``hybrid`` and a search over combinations weigh.
`EpochSelector` wires a strategy into `fit` and counts every forward and backward pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from thresher.data.dataset import ArrayDataset
from thresher.data.pipeline import Batch, Normalize
from thresher.registry import Registry, unknown_message
from thresher.scoring.forgetting import ForgettingCounter, LossRecord
from thresher.scoring.ranks import average_ranks
from thresher.scoring.uncertainty import el2n, entropy, grad_norm, least_confidence, margin
from thresher.seeding import make_generator
from thresher.select.evolve import evaluate, from_dict, leaves
from thresher.select.kmeans import kmeans
from thresher.select.samplers import check_budget, kcenter_greedy, random_sample
from thresher.train.engine import LossFn, Step, Switch, cross_entropy
from thresher.train.predict import predict

# InfoBatch (Qin et al., ICLR 2024, arXiv 2303.04947; official code NUS-HPC-AI-Lab/InfoBatch):
# prune each below-mean-loss example with probability r = 0.5, weight the kept ones 1/(1-r),
# and stop pruning after the first delta = 0.875 of the epochs (the last 12.5% "anneal").
INFOBATCH_PRUNE_RATIO = 0.5
INFOBATCH_DELTA = 0.875
KMEANS_CLUSTERS = 50  # default clusters for the coverage strategy (capped at the budget)
KMEANS_ITERS = 20
SAMPLINGS = ("top", "proportional")
LOSS_SOURCES = ("pass", "record")


# --- what strategies read ----------------------------------------------------------------


@dataclass
class EpochStats:
    """Per-example tensors a strategy may read, row i belonging to training row i.

    The prediction fields come from one `predict` pass (None without one); ``record`` and
    ``forgetting`` are kept by the training pass. ``forward_passes`` counts the example
    forward passes spent collecting these stats (0 when only the records are used).
    """

    n: int
    labels: torch.Tensor | None = None  # [N]
    probs: torch.Tensor | None = None  # [N, K]
    losses: torch.Tensor | None = None  # [N] cross-entropy of the pass
    embeddings: torch.Tensor | None = None  # [N, D] penultimate features
    grad_embeddings: torch.Tensor | None = None  # [N, K * D], when requested
    record: LossRecord | None = None
    forgetting: ForgettingCounter | None = None
    forward_passes: int = 0
    head_bias: bool = True  # whether the model's head has a bias (grad_norm's closed form)

    @property
    def device(self) -> torch.device:
        for t in (self.probs, self.embeddings, self.losses):
            if t is not None:
                return t.device
        for r in (self.record, self.forgetting):
            if r is not None:
                return r.device
        return torch.device("cpu")


def collect_stats(model: nn.Module, data: ArrayDataset, normalize: Normalize | None,
                  device: torch.device | None = None, *, record: LossRecord | None = None,
                  forgetting: ForgettingCounter | None = None, batch_size: int = 1024,
                  grad_embed: bool = False, amp: Switch = "auto") -> EpochStats:
    """One batched inference pass over ``data`` (``len(data)`` forward passes, no backward):
    probabilities, losses, embeddings and optionally gradient embeddings, with the records."""
    out = predict(model, data, normalize=normalize, batch_size=batch_size, device=device,
                  grad_embed=grad_embed, amp=amp)
    return EpochStats(len(data), out.labels, out.probs, out.losses, out.embeddings,
                      out.grad_embeddings, record, forgetting, forward_passes=len(data),
                      head_bias=out.head_bias)


def record_stats(n: int, record: LossRecord | None = None,
                 forgetting: ForgettingCounter | None = None) -> EpochStats:
    """Stats without an inference pass: only what the training pass recorded (free)."""
    return EpochStats(n, record=record, forgetting=forgetting)


@dataclass
class Selection:
    """One epoch's rows, their loss weights (aligned with ``indices``; None = all 1) and the
    example forward passes spent deciding."""

    indices: torch.Tensor  # int64 [M], distinct rows of the training set
    weights: torch.Tensor | None = None  # float [M]
    forward_passes: int = 0


# --- primitive scores: higher = more worth training on -------------------------------------


def _need(stats: EpochStats, who: str, *fields: str) -> None:
    missing = [f for f in fields if getattr(stats, f) is None]
    if missing:
        raise ValueError(f"{who!r} needs {', '.join(missing)} from an inference pass over the "
                         "training set (collect_stats); these stats carry none")


def _el2n(stats: EpochStats) -> torch.Tensor:
    """Error L2 norm ||p - onehot(y)|| (Paul et al. 2021)."""
    _need(stats, "el2n", "probs", "labels")
    return el2n(stats.probs, stats.labels)


def _grad_norm(stats: EpochStats) -> torch.Tensor:
    """Closed-form norm of the loss gradient w.r.t. the head (no per-example backward)."""
    _need(stats, "grad_norm", "probs", "embeddings", "labels")
    return grad_norm(stats.probs, stats.embeddings, stats.labels, stats.head_bias)


def _entropy(stats: EpochStats) -> torch.Tensor:
    """Predictive entropy."""
    _need(stats, "entropy", "probs")
    return entropy(stats.probs)


def _margin(stats: EpochStats) -> torch.Tensor:
    """Negative gap between the two largest probabilities."""
    _need(stats, "margin", "probs")
    return margin(stats.probs)


def _least_confidence(stats: EpochStats) -> torch.Tensor:
    """One minus the largest probability."""
    _need(stats, "least_confidence", "probs")
    return least_confidence(stats.probs)


def _loss(stats: EpochStats) -> torch.Tensor:
    """The pass's loss when the stats carry a pass, else the last training loss (+inf for an
    example never trained on, so unseen rows come first)."""
    if stats.losses is not None:
        return stats.losses
    if stats.record is None:
        raise ValueError("'loss' needs losses from an inference pass (collect_stats) or a "
                         "LossRecord of the training pass; these stats carry neither")
    inf = torch.tensor(float("inf"), device=stats.record.device)
    return torch.where(stats.record.seen, stats.record.values, inf)


def _forgetting(stats: EpochStats) -> torch.Tensor:
    """Forgetting events (Toneva et al. 2019); never-learned examples score +inf."""
    if stats.forgetting is None:
        raise ValueError("'forgetting' needs the ForgettingCounter of the training pass; "
                         "these stats carry none")
    return stats.forgetting.scores()


ScoreFn = Callable[[EpochStats], torch.Tensor]
EPOCH_SCORES: Registry[ScoreFn] = Registry("epoch score")
for _name, _fn in (("el2n", _el2n), ("grad_norm", _grad_norm), ("entropy", _entropy),
                   ("margin", _margin), ("least_confidence", _least_confidence),
                   ("loss", _loss), ("forgetting", _forgetting)):
    EPOCH_SCORES.register(_name, _fn)
RECORD_SCORES = frozenset({"forgetting"})  # never need a pass ("loss" can go either way)


def rank_normalize(scores: torch.Tensor) -> torch.Tensor:
    """Scores mapped to [0, 1] by rank (ties share a value): scale-free, so losses, counts
    with +inf and probabilities can be summed with weights."""
    n = scores.shape[0]
    if n == 1:
        return torch.ones(1, dtype=torch.float64, device=scores.device)
    return average_ranks(scores) / (n - 1)


def percentiles(scores: torch.Tensor) -> torch.Tensor:
    """Mid-rank percentiles ``(rank + 0.5) / N`` in (0, 1): no example gets probability 0."""
    return (average_ranks(scores) + 0.5) / scores.shape[0]


def score_matrix(stats: EpochStats, names: list[str] | tuple[str, ...] | None = None
                 ) -> dict[str, torch.Tensor]:
    """Rank-normalised primitive scores (float64 in [0, 1], higher = more worth training on)
    by name; None takes every score these stats can provide."""
    if names is None:
        has_pass = stats.probs is not None
        names = [n for n in EPOCH_SCORES
                 if (n == "forgetting" and stats.forgetting is not None)
                 or (n == "loss" and (stats.losses is not None or stats.record is not None))
                 or (n not in ("forgetting", "loss") and has_pass)]
    return {name: rank_normalize(EPOCH_SCORES[name](stats)) for name in names}


# --- drawing rows from scores --------------------------------------------------------------


def top_budget(scores: torch.Tensor, budget: int, generator: torch.Generator) -> torch.Tensor:
    """The ``budget`` highest scores, ties broken at random by ``generator``."""
    n = scores.shape[0]
    check_budget(budget, n)
    perm = torch.randperm(n, generator=generator).to(scores.device)
    order = torch.argsort(scores[perm], descending=True, stable=True)
    return perm[order[:budget]]


def weighted_sample(weights: torch.Tensor, budget: int,
                    generator: torch.Generator) -> torch.Tensor:
    """``budget`` distinct rows drawn one after another with probability proportional to
    ``weights`` among those left (Efraimidis & Spirakis 2006: the top keys log(u) / w)."""
    check_budget(budget, weights.shape[0])
    w = weights.double()
    if bool((w < 0).any()) or not bool(torch.isfinite(w).all()) or float(w.sum()) <= 0:
        raise ValueError("sampling weights must be finite, >= 0 and not all zero")
    u = torch.rand(w.shape[0], generator=generator, dtype=torch.float64).to(w.device)
    return top_budget(u.clamp_min(1e-300).log() / w, budget, generator)


def quotas(sizes: torch.Tensor, budget: int, generator: torch.Generator) -> torch.Tensor:
    """``budget`` split over groups in proportion to their ``sizes`` (largest remainders,
    ties at random); a group never gets more than its size."""
    n = int(sizes.sum())
    quota, remainder = (budget * sizes) // n, (budget * sizes) % n
    short = budget - int(quota.sum())
    if short:  # fewer than the groups; only those with a positive remainder can be picked
        quota[top_budget(remainder.double(), short, generator)] += 1
    return quota


def pick(scores: torch.Tensor, budget: int, generator: torch.Generator,
         sampling: str = "top", power: float = 1.0,
         labels: torch.Tensor | None = None) -> torch.Tensor:
    """``top``: the highest ``budget`` scores; ``proportional``: a draw without replacement
    with probability proportional to percentile(score) ** power (by rank, so heavy-tailed
    losses and infinite forgetting counts cannot swamp it).

    With ``labels`` the pick is class-balanced: each class gets the budget's share of its own
    rows (`quotas`) and the rule runs within it. A global top-k of hardness scores can drop a
    whole class (every row of the class the model currently over-predicts scores low), and
    training then swings from class to class."""
    if labels is not None:
        labels = labels.to(scores.device)
        sizes = torch.bincount(labels.cpu())
        share = quotas(sizes, budget, generator)
        parts = []
        for c in torch.nonzero(share).flatten().tolist():
            rows = torch.nonzero(labels == c).flatten()
            parts.append(rows[pick(scores[rows], int(share[c]), generator, sampling, power)])
        return torch.cat(parts)
    if sampling == "top":
        return top_budget(scores, budget, generator)
    if sampling == "proportional":
        if power < 0:
            raise ValueError(f"sampling power must be >= 0, got {power}")
        return weighted_sample(percentiles(scores) ** power, budget, generator)
    raise ValueError(unknown_message("sampling", sampling, SAMPLINGS))


# --- strategies ---------------------------------------------------------------------------


EpochStrategy = Callable[[EpochStats, int, torch.Generator, dict[str, Any]], Selection]
EPOCH_STRATEGIES: Registry[EpochStrategy] = Registry("epoch strategy")
_INFERENCE: dict[str, bool] = {}  # whether a strategy reads an inference pass


def register_epoch_strategy(name: str, *, inference: bool
                            ) -> Callable[[EpochStrategy], EpochStrategy]:
    """Register ``fn(stats, budget, generator, state) -> Selection``; ``inference`` says
    whether it needs `collect_stats` (a pass) or only the training records."""
    def add(fn: EpochStrategy) -> EpochStrategy:
        EPOCH_STRATEGIES.register(name, fn)
        _INFERENCE[name] = inference
        return fn
    return add


def needs_inference(name: str, state: dict[str, Any] | None = None) -> bool:
    """Whether strategy ``name`` (with these options) reads an inference pass this epoch."""
    name = EPOCH_STRATEGIES.resolve(name)
    state = state or {}
    if name == "hybrid":
        return any(_score_needs_pass(s, state) for s in _hybrid_weights(state))
    if name == "expression" and "expression" in state:  # record scores alone cost no pass
        return any(_score_needs_pass(s, state) for s in leaves(from_dict(state["expression"])))
    if name == "loss":
        return _score_needs_pass("loss", state)
    return _INFERENCE[name]


def _score_needs_pass(name: str, state: dict[str, Any]) -> bool:
    name = EPOCH_SCORES.resolve(name)
    if name == "loss":
        source = state.get("loss_source", "pass")
        if source not in LOSS_SOURCES:
            raise ValueError(unknown_message("loss_source", source, LOSS_SOURCES))
        return source == "pass"
    return name not in RECORD_SCORES


def resolve_budget(budget: int | float, n: int) -> int:
    """A row count from an int or a fraction of ``n`` in (0, 1]."""
    if isinstance(budget, float):
        if not 0 < budget <= 1:
            raise ValueError(f"a fractional budget must lie in (0, 1], got {budget}")
        budget = max(1, round(budget * n))
    check_budget(int(budget), n)
    return int(budget)


def _rows(n: int, device: torch.device) -> torch.Tensor:
    return torch.arange(n, device=device)


@register_epoch_strategy("full", inference=False)
def _full(stats: EpochStats, budget: int, generator: torch.Generator,
          state: dict[str, Any]) -> Selection:
    """Every row (the budget does not apply): the full-data reference."""
    return Selection(_rows(stats.n, stats.device))


@register_epoch_strategy("random", inference=False)
def _random(stats: EpochStats, budget: int, generator: torch.Generator,
            state: dict[str, Any]) -> Selection:
    """A uniform subset drawn afresh (independently of earlier epochs) every epoch."""
    return Selection(random_sample(stats.n, budget, generator).to(stats.device))


@register_epoch_strategy("rs2", inference=False)
def _rs2(stats: EpochStats, budget: int, generator: torch.Generator,
         state: dict[str, Any]) -> Selection:
    """RS2 without replacement (Okanovic et al. 2024): walk a random permutation ``budget``
    rows at a time, so every row is trained once per ceil(N / budget) epochs.

    When fewer than ``budget`` rows are left, the epoch takes them and tops up with the first
    rows of the next permutation that it does not already hold; those rows count as used in
    the next cycle, so each cycle still covers every row exactly once and an epoch never
    repeats a row. (The reference code wraps around the same permutation instead.)
    """
    check_budget(budget, stats.n)
    queue = state.get("rs2_queue")
    if queue is None or queue.numel() == 0:
        queue = torch.randperm(stats.n, generator=generator)
    if queue.numel() >= budget:
        take, queue = queue[:budget], queue[budget:]
    else:
        fresh = torch.randperm(stats.n, generator=generator)
        extra = fresh[~torch.isin(fresh, queue)][:budget - queue.numel()]
        take, queue = torch.cat([queue, extra]), fresh[~torch.isin(fresh, extra)]
    state["rs2_queue"] = queue
    return Selection(take.to(stats.device))


def _balance(stats: EpochStats, state: dict[str, Any]) -> torch.Tensor | None:
    """The labels a class-balanced pick needs, when ``state['balance']`` asks for one."""
    if not state.get("balance", False):
        return None
    if stats.labels is None:
        raise ValueError("a class-balanced pick (state['balance']) needs the stats' labels")
    return stats.labels


def _score_strategy(name: str, default_sampling: str = "top") -> EpochStrategy:
    def strategy(stats: EpochStats, budget: int, generator: torch.Generator,
                 state: dict[str, Any]) -> Selection:
        scores = EPOCH_SCORES[name](stats)
        sampling = state.get("sampling", default_sampling)
        power = state.get("power", 1.0)
        chosen = pick(scores, budget, generator, sampling, power, _balance(stats, state))
        cost = 0 if name in RECORD_SCORES else stats.forward_passes
        return Selection(chosen.to(stats.device), None, cost)
    strategy.__doc__ = (f"The top-`budget` rows by {name} (state['sampling'] = 'proportional' "
                        "draws in proportion to its percentile ** state['power']; "
                        "state['balance'] picks within each class).")
    return strategy


for _name in ("el2n", "grad_norm", "entropy", "margin", "forgetting"):
    register_epoch_strategy(_name, inference=_name not in RECORD_SCORES)(_score_strategy(_name))


@register_epoch_strategy("loss", inference=True)
def _loss_strategy(stats: EpochStats, budget: int, generator: torch.Generator,
                   state: dict[str, Any]) -> Selection:
    """Selective-backprop style (Jiang et al. 2019): keep each row with probability
    proportional to its loss percentile ** beta, drawn without replacement to the budget.

    ``state['beta']`` defaults to N / budget - 1, the exponent for which keeping each row with
    probability percentile ** beta keeps the budget's fraction on average (as MosaicML
    Composer's ``select_using_loss`` sets it from ``keep``). Losses come from a fresh pass
    (``loss_source='pass'``, SB's forward over every candidate) or, free but stale, from the
    training record (``'record'``).
    """
    check_budget(budget, stats.n)
    beta = state.get("beta", stats.n / budget - 1)
    chosen = pick(_loss(stats), budget, generator, "proportional", beta,
                  _balance(stats, state))
    return Selection(chosen.to(stats.device), None, stats.forward_passes)


@register_epoch_strategy("kcenter", inference=True)
def _kcenter(stats: EpochStats, budget: int, generator: torch.Generator,
             state: dict[str, Any]) -> Selection:
    """Greedy k-center coverage of the embedding space (Sener & Savarese 2018); the first
    centre is random. Costs budget x N distance rows."""
    _need(stats, "kcenter", "embeddings")
    chosen = kcenter_greedy(stats.embeddings, budget, None, generator)
    return Selection(chosen, None, stats.forward_passes)


@register_epoch_strategy("kmeans", inference=True)
def _kmeans(stats: EpochStats, budget: int, generator: torch.Generator,
            state: dict[str, Any]) -> Selection:
    """Coverage by clusters: k-means on the embeddings (``state['clusters']``, default
    min(50, budget)), then a uniform draw inside every cluster with the budget split in
    proportion to cluster sizes (largest remainders, ties at random)."""
    _need(stats, "kmeans", "embeddings")
    n = stats.n
    check_budget(budget, n)
    k = min(int(state.get("clusters", KMEANS_CLUSTERS)), budget)
    if k <= 0:
        raise ValueError(f"kmeans needs clusters >= 1, got {state.get('clusters')}")
    result = kmeans(stats.embeddings, k, generator, iters=int(state.get("kmeans_iters",
                                                                       KMEANS_ITERS)))
    assign = result.assign.cpu()
    sizes = torch.bincount(assign, minlength=k)
    quota = quotas(sizes, budget, generator)
    perm = torch.randperm(n, generator=generator)
    order = perm[torch.argsort(assign[perm], stable=True)]  # grouped by cluster, random within
    grouped = assign[order]
    within = torch.arange(n) - (torch.cumsum(sizes, 0) - sizes)[grouped]
    chosen = order[within < quota[grouped]]
    return Selection(chosen.to(stats.device), None, stats.forward_passes)


@register_epoch_strategy("infobatch", inference=False)
def _infobatch(stats: EpochStats, budget: int, generator: torch.Generator,
               state: dict[str, Any]) -> Selection:
    """InfoBatch (Qin et al. 2024): each row whose last training loss is below the mean is
    pruned with probability ``r`` (``state['prune_ratio']``, 0.5) and, if kept, weighted
    1 / (1 - r) so the expected gradient is that of the full data; other rows are all kept with
    weight 1. The kept count is data-dependent: the budget does not apply.

    Needs ``state['epoch']`` (1-based, as `fit` counts) and ``state['epochs']``: epochs past
    ``delta * epochs`` (``state['delta']``, 0.875) train on everything unweighted (annealing).
    Losses come from the training pass (`LossRecord`, no extra pass); rows never trained on
    are never pruned and stay out of the mean, so the first epoch is full. The official code
    keeps exactly floor((1 - r) m) of the m low-loss rows; here each is an independent draw,
    which makes 1 / (1 - r) exactly unbiased.
    """
    for key in ("epoch", "epochs"):
        if key not in state:
            raise ValueError(f"infobatch needs state[{key!r}] (the 1-based epoch and the total "
                             "epochs) to stop pruning for the final annealing epochs")
    r = float(state.get("prune_ratio", INFOBATCH_PRUNE_RATIO))
    delta = float(state.get("delta", INFOBATCH_DELTA))
    if not 0 <= r < 1:
        raise ValueError(f"infobatch prune_ratio must lie in [0, 1), got {r}")
    if not 0 <= delta <= 1:
        raise ValueError(f"infobatch delta must lie in [0, 1], got {delta}")
    record = stats.record
    if record is None:
        raise ValueError("infobatch needs the LossRecord of the training pass; these stats "
                         "carry none")
    rows = _rows(stats.n, record.device)
    if state["epoch"] > delta * state["epochs"] or not bool(record.seen.any()):
        return Selection(rows)
    mean = record.values[record.seen].mean()
    low = record.seen & (record.values < mean)
    u = torch.rand(stats.n, generator=generator).to(record.device)
    kept = ~(low & (u < r))
    indices = rows[kept]
    weights = torch.where(low[kept], 1.0 / (1.0 - r), 1.0).float()
    return Selection(indices, weights)


def _hybrid_weights(state: dict[str, Any]) -> dict[str, float]:
    weights = state.get("weights")
    if not weights:
        raise ValueError("hybrid needs state['weights'], a {score: weight} dict over "
                         f"{', '.join(EPOCH_SCORES)}")
    for name in weights:
        EPOCH_SCORES.resolve(name)
    if sum(abs(float(w)) for w in weights.values()) == 0:
        raise ValueError(f"hybrid weights must not all be zero, got {weights}")
    return dict(weights)


@register_epoch_strategy("hybrid", inference=True)
def _hybrid(stats: EpochStats, budget: int, generator: torch.Generator,
            state: dict[str, Any]) -> Selection:
    """A weighted sum of rank-normalised scores (``state['weights']``, by score name), taken
    like any score (``sampling``, ``power``); one weight reproduces that score's strategy."""
    weights = _hybrid_weights(state)
    scores = score_matrix(stats, list(weights))
    total = sum(abs(float(w)) for w in weights.values())
    combined = sum(float(w) / total * scores[name] for name, w in weights.items())
    chosen = pick(combined, budget, generator, state.get("sampling", "top"),
                  state.get("power", 1.0), _balance(stats, state))
    cost = stats.forward_passes if any(n not in RECORD_SCORES for n in weights) else 0
    return Selection(chosen.to(stats.device), None, cost)


# --- wiring into fit ----------------------------------------------------------------------


@register_epoch_strategy("expression", inference=True)
def _expression(stats: EpochStats, budget: int, generator: torch.Generator,
                state: dict[str, Any]) -> Selection:
    """The top-``budget`` rows by a composition of rank-normalised primitive scores found by
    `thresher.select.evolve` (``state['expression']``, its ``to_dict`` form), so a discovered
    strategy runs as an option of one registered strategy and no registry grows at run time."""
    if "expression" not in state:
        raise ValueError("the 'expression' strategy needs state['expression'], an evolved "
                         "expression in thresher.select.evolve.to_dict form")
    expr = from_dict(state["expression"])
    scores = score_matrix(stats, sorted(set(leaves(expr))))
    chosen = pick(evaluate(expr, scores), budget, generator, state.get("sampling", "top"),
                  state.get("power", 1.0), _balance(stats, state))
    return Selection(chosen.to(stats.device), None, stats.forward_passes)


class EpochSelector:
    """Runs an epoch strategy inside `fit`: ``fit(model, train, cfg, **selector.hooks())``.

    - ``before_epoch(epoch)`` chooses the strategy (``choose(epoch)`` when given, else
      ``strategy``), runs an inference pass only if it needs one, and returns its rows.
    - ``loss_fn`` multiplies the base per-example losses by this epoch's row weights
      (InfoBatch's 1 / (1 - r)): `fit`'s own ``weights`` are fixed per dataset row for the whole
      run, so per-epoch weights go through this seam as ``losses * weight[batch.index]``.
    - ``after_step`` updates the loss record (the unweighted training losses) and the
      forgetting counter from the training forward pass, so InfoBatch and forgetting need no
      extra pass.

    ``cost`` counts example passes: ``select_forward`` (inference passes spent selecting),
    ``train_forward`` and ``train_backward``. ``history`` has one row per epoch. Pass the
    ``normalize`` given to `fit` (default: the training set's statistics, as `fit` computes)
    and, with label smoothing, ``base_loss=cross_entropy(cfg.label_smoothing)``. `fit`
    trains every selected row (in near-equal batches).
    """

    def __init__(self, strategy: str, train: ArrayDataset, *, budget: int | float,
                 epochs: int, model: nn.Module | None = None,
                 normalize: Normalize | None = None, device: torch.device | None = None,
                 seed: int = 0, options: dict[str, Any] | None = None,
                 choose: Callable[[int], str] | None = None, base_loss: LossFn | None = None,
                 batch_size: int = 1024, amp: Switch = "auto") -> None:
        self.strategy = strategy  # an unknown name fails first, listing the choices
        if epochs <= 0:
            raise ValueError(f"epochs must be positive, got {epochs}")
        self.train = train
        self.n = len(train)
        self.budget = resolve_budget(budget, self.n)
        self.model = model
        self.normalize = normalize if normalize is not None or train.is_features \
            else Normalize.from_dataset(train)
        self.device = device
        self.choose = choose
        self.base_loss = base_loss or cross_entropy(0.0)
        self.batch_size = batch_size
        self.amp = amp
        self.state: dict[str, Any] = dict(options or {})
        self.state["epochs"] = epochs
        self.generator = make_generator(seed, "epoch-select")
        self.record = LossRecord(self.n, device)
        self.forgetting = ForgettingCounter(self.n, device)
        self.cost = {"select_forward": 0, "train_forward": 0, "train_backward": 0}
        self.history: list[dict[str, Any]] = []
        self.last_stats: EpochStats | None = None
        self.last_selection: Selection | None = None
        self._row_weight: torch.Tensor | None = None
        self._stash: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def strategy(self) -> str:
        return self._strategy

    @strategy.setter
    def strategy(self, name: str) -> None:
        self._strategy = EPOCH_STRATEGIES.resolve(name)

    def hooks(self) -> dict[str, Callable]:
        """The keyword arguments that plug this selector into `fit`."""
        return {"before_epoch": self.before_epoch, "loss_fn": self.loss_fn,
                "after_step": self.after_step}

    def stats(self, name: str) -> EpochStats:
        """What strategy ``name`` reads this epoch: a pass only when it needs one."""
        if not needs_inference(name, self.state):
            stats = record_stats(self.n, self.record, self.forgetting)
            stats.labels = self.train.labels.to(self.record.device)
            return stats
        if self.model is None:
            raise ValueError(f"epoch strategy {name!r} scores the training set with the model: "
                             "give EpochSelector(model=...)")
        return collect_stats(self.model, self.train, self.normalize, self.device,
                             record=self.record, forgetting=self.forgetting,
                             batch_size=self.batch_size, amp=self.amp)

    def select(self, epoch: int) -> Selection:
        """This epoch's selection (what `before_epoch` trains on)."""
        name = EPOCH_STRATEGIES.resolve(self.choose(epoch)) if self.choose else self.strategy
        self.state["epoch"] = epoch
        stats = self.stats(name)
        selection = EPOCH_STRATEGIES[name](stats, self.budget, self.generator, self.state)
        self.cost["select_forward"] += selection.forward_passes
        self._row_weight = None
        if selection.weights is not None:
            self._row_weight = torch.ones(self.n, device=selection.indices.device)
            self._row_weight[selection.indices] = selection.weights.to(self._row_weight)
        self.last_stats, self.last_selection = stats, selection
        self.history.append({"epoch": epoch, "strategy": name,
                             "selected": len(selection.indices),
                             "select_forward": selection.forward_passes,
                             "weighted": selection.weights is not None})
        return selection

    def before_epoch(self, epoch: int) -> torch.Tensor:
        return self.select(epoch).indices

    def loss_fn(self, output: torch.Tensor, batch: Batch) -> torch.Tensor:
        losses = self.base_loss(output, batch)
        self._stash = (batch.index, losses.detach())
        self.cost["train_forward"] += len(batch.index)
        self.cost["train_backward"] += len(batch.index)
        if self._row_weight is None:
            return losses
        if self._row_weight.device != batch.index.device:
            self._row_weight = self._row_weight.to(batch.index.device)
        return losses * self._row_weight[batch.index]

    def after_step(self, step: Step) -> None:
        index = step.batch.index
        if self._stash is not None and self._stash[0] is index:
            raw = self._stash[1]
        else:  # loss_fn not wired: the step's losses are the base ones
            if self._row_weight is not None:
                raise RuntimeError("this epoch's selection carries loss weights, which reach "
                                   "the loss only through fit(loss_fn=selector.loss_fn); use "
                                   "fit(..., **selector.hooks())")
            raw = step.losses
            self.cost["train_forward"] += len(index)
            self.cost["train_backward"] += len(index)
        self._stash = None
        if self.record.device != index.device:
            self.record.to(index.device)
            self.forgetting.to(index.device)
        self.record.update(index, raw)
        self.forgetting.update(index, step.output.argmax(1) == step.batch.y)

    @property
    def total_forward(self) -> int:
        return self.cost["select_forward"] + self.cost["train_forward"]

    def state_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "state": dict(self.state),
                "generator": self.generator.get_state(), "record": self.record.state_dict(),
                "forgetting": self.forgetting.state_dict(), "cost": dict(self.cost),
                "history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.strategy = state["strategy"]
        self.state = dict(state["state"])
        self.generator.set_state(state["generator"])
        self.record.load_state_dict(state["record"])
        self.forgetting.load_state_dict(state["forgetting"])
        self.cost = dict(state["cost"])
        self.history = list(state["history"])


__all__ = [
    "EPOCH_SCORES", "EPOCH_STRATEGIES", "INFOBATCH_DELTA", "INFOBATCH_PRUNE_RATIO",
    "EpochSelector", "EpochStats", "Selection", "average_ranks", "collect_stats",
    "needs_inference", "percentiles", "pick", "rank_normalize", "record_stats",
    "register_epoch_strategy", "resolve_budget", "score_matrix", "top_budget",
    "weighted_sample",
]
