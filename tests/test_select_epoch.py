"""Per-epoch selection strategies, the training-pass records and the `fit` wiring."""

import math

import pytest
import torch
import torch.nn.functional as F

from thresher.data import load_splits
from thresher.models import build
from thresher.scoring.forgetting import ForgettingCounter, LossRecord
from thresher.seeding import make_generator
from thresher.select.epoch import (
    EPOCH_STRATEGIES,
    EpochSelector,
    EpochStats,
    needs_inference,
    pick,
    quotas,
    rank_normalize,
    record_stats,
    score_matrix,
)
from thresher.train import FitConfig, fit

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


def random_stats(n: int = 60, k: int = 4, d: int = 5, seed: int = 0) -> EpochStats:
    """Stats as one pass plus a few training steps would leave them."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g) * 2
    labels = torch.randint(k, (n,), generator=g)
    record = LossRecord(n)
    record.update(torch.arange(0, n, 2), torch.rand(n // 2, generator=g))
    forgetting = ForgettingCounter(n)
    for _ in range(3):
        forgetting.update(torch.arange(n), torch.rand(n, generator=g) < 0.5)
    return EpochStats(n, labels, logits.softmax(1),
                      F.cross_entropy(logits, labels, reduction="none"),
                      torch.randn(n, d, generator=g), None, record, forgetting, forward_passes=n)


OPTIONS = {"hybrid": {"weights": {"el2n": 1.0, "forgetting": 0.5}},
           "infobatch": {"epoch": 2, "epochs": 10},
           "expression": {"expression": {"op": "max", "args": [{"leaf": "el2n"},
                                                                {"leaf": "entropy"}]}}}
NO_BUDGET = {"full", "infobatch"}
SEED_BREAKS_TIES_ONLY = {"el2n", "grad_norm", "entropy", "margin", "hybrid", "expression"}


def run(name: str, stats: EpochStats, budget: int, seed: int, **state):
    return EPOCH_STRATEGIES[name](stats, budget, make_generator(seed),
                                  dict(OPTIONS.get(name, {}), **state))


@pytest.mark.parametrize("name", EPOCH_STRATEGIES.names())
def test_every_strategy_returns_distinct_rows_reproducibly(name):
    stats = random_stats()
    a, again, other = (run(name, stats, 15, s) for s in (0, 0, 1))
    assert torch.equal(a.indices, again.indices)
    assert len(a.indices.unique()) == len(a.indices)
    assert int(a.indices.min()) >= 0 and int(a.indices.max()) < 60
    if name not in NO_BUDGET:
        assert len(a.indices) == 15 and a.weights is None
    if name == "full":
        assert a.indices.tolist() == list(range(60))
    elif name in SEED_BREAKS_TIES_ONLY:  # top-k of distinct scores: the seed cannot matter
        assert torch.equal(a.indices.sort().values, other.indices.sort().values)
    else:
        assert not torch.equal(a.indices.sort().values, other.indices.sort().values)
    # what it costs: a pass only for strategies that read one
    assert a.forward_passes == (60 if needs_inference(name, OPTIONS.get(name)) else 0)


@pytest.mark.parametrize("name", sorted(SEED_BREAKS_TIES_ONLY - {"hybrid"}) + ["forgetting"])
def test_score_proportional_sampling_is_seeded(name):
    stats = random_stats()
    a, again, other = (run(name, stats, 15, s, sampling="proportional") for s in (0, 0, 1))
    assert torch.equal(a.indices, again.indices) and len(a.indices.unique()) == 15
    assert not torch.equal(a.indices.sort().values, other.indices.sort().values)


def test_ties_are_broken_by_the_generator():
    flat = torch.zeros(40)
    picks = {tuple(pick(flat, 5, make_generator(s)).sort().values.tolist()) for s in range(6)}
    assert len(picks) == 6
    assert torch.equal(pick(flat, 5, make_generator(3)), pick(flat, 5, make_generator(3)))


def test_rs2_covers_every_row_once_per_cycle_before_repeating():
    stats = record_stats(12)
    state: dict = {}
    gen = make_generator(0)
    epochs = [EPOCH_STRATEGIES["rs2"](stats, 3, gen, state).indices for _ in range(8)]
    first, second = torch.cat(epochs[:4]), torch.cat(epochs[4:])
    assert first.sort().values.tolist() == list(range(12))  # ceil(12/3) = 4 epochs, once each
    assert second.sort().values.tolist() == list(range(12))
    assert not torch.equal(first, second)  # a fresh permutation per cycle

    # N = 10, budget 3: 3 disjoint epochs, the 4th finishes the cycle and starts the next
    stats, state, gen = record_stats(10), {}, make_generator(1)
    epochs = [EPOCH_STRATEGIES["rs2"](stats, 3, gen, state).indices for _ in range(10)]
    assert all(len(e.unique()) == 3 for e in epochs)
    assert len(torch.cat(epochs[:3]).unique()) == 9
    assert len(torch.cat(epochs[:math.ceil(10 / 3)]).unique()) == 10
    # 30 draws = 3 whole cycles: every row exactly 3 times
    assert torch.bincount(torch.cat(epochs), minlength=10).tolist() == [3] * 10


def hand_stats() -> EpochStats:
    """Four examples of class 0 whose difficulty is known by hand."""
    probs = torch.tensor([[0.98, 0.01, 0.01],  # 0: confident and right: easy
                          [0.10, 0.80, 0.10],  # 1: confident and wrong: el2n = 1.208
                          [1 / 3, 1 / 3, 1 / 3],  # 2: undecided: entropy log 3, margin gap 0
                          [0.60, 0.30, 0.10]])  # 3: el2n 0.51, gap 0.3
    emb = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 0.0], [10.0, 0.0]])
    return EpochStats(4, torch.zeros(4, dtype=torch.long), probs, None, emb, forward_passes=4)


@pytest.mark.parametrize("name, top1, top2", [
    ("el2n", 1, {1, 2}),  # 1.208 > 0.816 > 0.510 > 0.024
    ("entropy", 2, {2, 3}),
    ("margin", 2, {2, 3}),  # gaps 0 < 0.3 < 0.7 < 0.97
    # el2n * sqrt(|e|^2 + 1): 0.510 * sqrt(101) = 5.13 > 1.208 > 0.816 * sqrt(2) = 1.15
    ("grad_norm", 3, {3, 1}),
])
def test_top_k_scores_pick_the_hand_known_hardest_rows(name, top1, top2):
    stats = hand_stats()
    assert run(name, stats, 1, 0).indices.tolist() == [top1]
    assert set(run(name, stats, 2, 0).indices.tolist()) == top2


def test_forgetting_counts_a_hand_written_sequence():
    counter = ForgettingCounter(4)
    T, F_ = True, False
    for rows, correct in (([0, 1, 2, 3], [T, F_, T, F_]),
                          ([0, 1], [F_, T]),  # 0 forgets
                          ([0, 1, 2, 3], [T, F_, F_, F_]),  # 1 and 2 forget
                          ([0], [F_]),  # 0 forgets again
                          ([0, 2], [F_, F_])):  # wrong twice in a row: no new event
        counter.update(torch.tensor(rows), torch.tensor(correct))
    assert counter.counts.tolist() == [2, 1, 1, 0]
    assert counter.last_correct.tolist() == [F_, F_, F_, F_]
    assert counter.never_learned.tolist() == [F_, F_, F_, T]
    assert counter.presentations.tolist() == [5, 3, 3, 2]
    assert counter.scores().tolist() == [2.0, 1.0, 1.0, math.inf]
    # never learned first, then the most forgotten
    stats = record_stats(4, forgetting=counter)
    assert run("forgetting", stats, 2, 0).indices.tolist() == [3, 0]
    restored = ForgettingCounter(4)
    restored.load_state_dict(counter.state_dict())
    assert torch.equal(restored.counts, counter.counts)


def test_loss_record_keeps_the_last_loss():
    record = LossRecord(3)
    record.update(torch.tensor([0, 1]), torch.tensor([2.0, 4.0]))
    record.update(torch.tensor([1]), torch.tensor([1.0]))
    assert record.values.tolist() == [2.0, 1.0, 0.0] and record.seen.tolist() == [1, 1, 0]
    assert record.mean() == 1.5


def infobatch(record: LossRecord, epoch: int, epochs: int, seed: int = 0, **options):
    return EPOCH_STRATEGIES["infobatch"](record_stats(record.n, record), 1, make_generator(seed),
                                         {"epoch": epoch, "epochs": epochs, **options})


def test_infobatch_prunes_half_the_below_mean_rows_and_reweights_the_rest():
    n = 4000
    values = torch.where(torch.arange(n) % 2 == 0, 1.0, 3.0)  # mean 2: the even rows are low
    record = LossRecord(n)
    record.update(torch.arange(n), values)
    sel = infobatch(record, epoch=1, epochs=8)
    low = values[sel.indices] < 2
    pruned = n - len(sel.indices)
    assert pruned == 2000 - int(low.sum())  # only low rows are pruned, every high row is kept
    assert abs(pruned - 1000) <= 4 * math.sqrt(2000 * 0.5 * 0.5)  # Binomial(2000, 0.5)
    assert sel.weights[low].eq(2.0).all() and sel.weights[~low].eq(1.0).all()
    assert torch.equal(sel.indices, infobatch(record, 1, 8).indices)  # exact for a seed
    assert not torch.equal(sel.indices, infobatch(record, 1, 8, seed=1).indices)
    assert len(sel.indices.unique()) == len(sel.indices)
    # r = 0.3: about 30% pruned, kept low rows weighted 1 / 0.7
    sel = infobatch(record, 1, 8, prune_ratio=0.3)
    assert abs(n - len(sel.indices) - 600) <= 4 * math.sqrt(2000 * 0.3 * 0.7)
    assert torch.allclose(sel.weights[values[sel.indices] < 2], torch.tensor(1 / 0.7))


def test_infobatch_anneals_for_the_last_eighth_and_never_prunes_unseen_rows():
    record = LossRecord(800)
    record.update(torch.arange(800), torch.arange(800.0))
    for epochs, last_pruned in ((8, 7), (16, 14)):
        assert len(infobatch(record, last_pruned, epochs).indices) < 800
        for epoch in range(last_pruned + 1, epochs + 1):
            sel = infobatch(record, epoch, epochs)
            assert sel.indices.tolist() == list(range(800)) and sel.weights is None
    fresh = LossRecord(800)
    assert len(infobatch(fresh, 1, 8).indices) == 800  # nothing recorded yet: keep all
    fresh.update(torch.arange(400, 800), torch.arange(400.0))  # rows 0..399 never trained on
    sel = infobatch(fresh, 2, 8)
    assert set(range(400)) <= set(sel.indices.tolist())
    # the mean is over the 400 seen rows (199.5): about half of the 200 below it are pruned
    assert abs(800 - len(sel.indices) - 100) <= 4 * math.sqrt(200 * 0.25)
    with pytest.raises(ValueError, match=r"infobatch needs state\['epoch'\]"):
        EPOCH_STRATEGIES["infobatch"](record_stats(800, record), 1, make_generator(0), {})


def test_kcenter_takes_the_farthest_points_on_a_line():
    x = torch.tensor([0.0, 0.1, 0.2, 100.0, -100.0, 0.15])[:, None]
    stats = EpochStats(6, embeddings=x)
    for seed in range(5):
        chosen = run("kcenter", stats, 3, seed).indices.tolist()
        assert {3, 4} <= set(chosen) and len(set(chosen)) == 3


def test_kmeans_splits_the_budget_across_clusters_by_size():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0]])
    sizes = (50, 30, 20)
    x = torch.cat([c + torch.randn(s, 2, generator=g) for c, s in zip(centres, sizes)])
    cluster = torch.repeat_interleave(torch.arange(3), torch.tensor(sizes))
    stats = EpochStats(100, embeddings=x)
    for budget, quota in ((10, [5, 3, 2]), (7, [4, 2, 1])):  # 3.5, 2.1, 1.4 -> largest rest
        chosen = run("kmeans", stats, budget, 0, clusters=3).indices
        assert len(chosen.unique()) == budget
        assert torch.bincount(cluster[chosen], minlength=3).tolist() == quota


def test_loss_strategy_favours_high_losses():
    n = 100
    record = LossRecord(n)
    record.update(torch.arange(n), torch.arange(n, dtype=torch.float32))
    stats = record_stats(n, record)
    counts = torch.zeros(n)
    for seed in range(100):
        counts[run("loss", stats, 10, seed, loss_source="record").indices] += 1
    assert counts[-10:].sum() > 4 * counts[:10].sum()  # beta = 100/10 - 1 = 9
    assert needs_inference("loss") and not needs_inference("loss", {"loss_source": "record"})
    # an evolved expression pays for a pass only when a leaf needs one
    only_records = {"expression": {"op": "min", "args": [{"leaf": "forgetting"},
                                                          {"leaf": "loss"}]}}
    assert needs_inference("expression", OPTIONS["expression"])
    assert needs_inference("expression", only_records)
    assert not needs_inference("expression", {**only_records, "loss_source": "record"})
    assert not needs_inference("expression", {"expression": {"leaf": "forgetting"}})


@pytest.mark.parametrize("name", ["el2n", "grad_norm", "entropy", "margin", "forgetting"])
def test_hybrid_with_one_weight_is_that_strategy(name):
    stats = random_stats(seed=3)
    for weight in (1.0, 2.5):
        hybrid = run("hybrid", stats, 20, 7, weights={name: weight})
        assert torch.equal(hybrid.indices, run(name, stats, 20, 7).indices)
    # loss: the same percentile-proportional draw
    beta = 60 / 20 - 1
    same = run("hybrid", stats, 20, 7, weights={"loss": 1.0}, sampling="proportional",
               power=beta)
    assert torch.equal(same.indices, run("loss", stats, 20, 7).indices)


def test_score_matrix_is_rank_normalised_and_ties_share_a_value():
    scores = score_matrix(hand_stats(), ["el2n", "margin"])
    assert scores["el2n"].tolist() == pytest.approx([0.0, 1.0, 2 / 3, 1 / 3])
    assert scores["margin"].tolist() == pytest.approx([0.0, 1 / 3, 1.0, 2 / 3])
    assert rank_normalize(torch.tensor([5.0, 1.0, 5.0, math.inf])).tolist() == \
        pytest.approx([0.5, 0.0, 0.5, 1.0])
    assert set(score_matrix(random_stats())) == {"el2n", "grad_norm", "entropy", "margin",
                                                 "least_confidence", "loss", "forgetting"}
    assert set(score_matrix(record_stats(4, LossRecord(4)))) == {"loss"}


def test_unknown_names_list_the_choices():
    with pytest.raises(ValueError, match=r"unknown epoch strategy 'rs3'; did you mean 'rs2'\? "
                                         r"choose one of: full, random, rs2, el2n"):
        EPOCH_STRATEGIES["rs3"]
    with pytest.raises(ValueError, match="did you mean 'infobatch'"):
        EpochSelector("infobtach", record_stats(3), budget=1, epochs=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown epoch score 'el2m'"):
        score_matrix(random_stats(), ["el2m"])
    with pytest.raises(ValueError, match="unknown sampling 'topk'; did you mean 'top'"):
        run("el2n", random_stats(), 5, 0, sampling="topk")
    with pytest.raises(ValueError, match="needs probs, labels from an inference pass"):
        run("el2n", record_stats(5), 2, 0)


# --- a real run on the bundled digits --------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return load_splits("digits")[0]


def selected_run(train, strategy: str):
    """Three epochs through `EpochSelector`, recording the rows and the weighted losses."""
    torch.manual_seed(0)
    model = build("mlp", 10, (1, 8, 8))
    selector = EpochSelector(strategy, train, budget=0.3, epochs=3, model=model, seed=0)
    picked, trained, checks = {}, {}, []

    def before_epoch(epoch):
        picked[epoch] = selector.before_epoch(epoch).clone()
        return picked[epoch]

    def after_step(step):
        selector.after_step(step)
        trained.setdefault(step.epoch, []).append(step.batch.index)
        sel = selector.last_selection
        weight = torch.ones(len(train))
        if sel.weights is not None:
            weight[sel.indices] = sel.weights
        # the minimised losses are the recorded (unweighted) ones times this epoch's weights
        raw = selector.record.values[step.batch.index]
        checks.append(torch.allclose(step.losses, raw * weight[step.batch.index]))

    # one batch holds the whole set, so no selected row is dropped as a partial last batch
    cfg = FitConfig(epochs=3, batch_size=2048, lr=0.05, progress=False)
    result = fit(model, train, cfg, device=CPU, before_epoch=before_epoch,
                 loss_fn=selector.loss_fn, after_step=after_step)
    return selector, result, picked, trained, checks


def test_fit_trains_on_exactly_the_selected_rows(digits):
    n, budget = len(digits), round(0.3 * len(digits))
    selector, result, picked, trained, checks = selected_run(digits, "el2n")
    assert [row["examples"] for row in result.history] == [budget] * 3
    for epoch in (1, 2, 3):
        assert torch.equal(torch.cat(trained[epoch]).sort().values, picked[epoch].sort().values)
    assert all(checks)
    assert selector.cost == {"select_forward": 3 * n, "train_forward": 3 * budget,
                             "train_backward": 3 * budget}
    assert int(selector.record.seen.sum()) == len(torch.cat(list(picked.values())).unique())
    assert [h["strategy"] for h in selector.history] == ["el2n"] * 3


def test_fit_with_infobatch_weights_reach_the_loss(digits):
    n = len(digits)
    selector, result, picked, trained, checks = selected_run(digits, "infobatch")
    examples = [row["examples"] for row in result.history]
    assert examples[0] == n  # nothing recorded yet
    assert examples[1] < n - 100  # pruned on the losses of epoch 1's training pass
    assert examples[2] == n  # 3 > 0.875 * 3: annealing
    assert all(checks) and len(checks) == 3
    assert [h["weighted"] for h in selector.history] == [False, True, False]
    assert selector.cost["select_forward"] == 0  # the records came from training itself
    assert selector.cost["train_forward"] == sum(examples)


def test_an_agent_switches_strategies_per_epoch_and_weights_need_the_loss_seam(digits):
    torch.manual_seed(0)
    model = build("mlp", 10, (1, 8, 8))
    plan = {1: "rs2", 2: "el2n", 3: "infobatch"}
    selector = EpochSelector("full", digits, budget=0.3, epochs=4, model=model,
                             choose=plan.get)
    cfg = FitConfig(epochs=3, batch_size=2048, lr=0.05, progress=False)
    fit(model, digits, cfg, device=CPU, **selector.hooks())
    assert [h["strategy"] for h in selector.history] == ["rs2", "el2n", "infobatch"]
    assert [h["select_forward"] for h in selector.history] == [0, len(digits), 0]
    # InfoBatch's weights reach the loss only through selector.loss_fn: leaving it out fails
    selector = EpochSelector("infobatch", digits, budget=0.3, epochs=8, model=model)
    with pytest.raises(RuntimeError, match="fit\\(loss_fn=selector.loss_fn\\)"):
        fit(model, digits, cfg, device=CPU, before_epoch=selector.before_epoch,
            after_step=selector.after_step)


def test_class_balanced_pick_by_hand():
    labels = torch.tensor([0] * 10 + [1] * 6 + [2] * 4)
    scores = torch.cat([100 + torch.arange(10.0), torch.arange(6.0), torch.arange(4.0)])
    g = torch.Generator().manual_seed(0)
    assert quotas(torch.tensor([10, 6, 4]), 10, g).tolist() == [5, 3, 2]
    assert quotas(torch.tensor([10, 6, 4]), 7, g).tolist() == [4, 2, 1]  # 3.5 2.1 1.4: +1 to .5
    assert set(pick(scores, 10, g).tolist()) == set(range(10))  # global top-k: class 0 only
    chosen = pick(scores, 10, g, labels=labels)
    assert sorted(chosen.tolist()) == [5, 6, 7, 8, 9, 13, 14, 15, 18, 19]  # each class's top
    drawn = pick(scores, 10, g, "proportional", 1.0, labels)
    assert torch.bincount(labels[drawn], minlength=3).tolist() == [5, 3, 2]
    assert len(set(drawn.tolist())) == 10
    # the strategies take it from the state, record-only ones (forgetting) included
    counter = ForgettingCounter(20)
    stats = EpochStats(20, labels=labels, forgetting=counter)
    sel = EPOCH_STRATEGIES["forgetting"](stats, 10, g, {"balance": True})
    assert torch.bincount(labels[sel.indices], minlength=3).tolist() == [5, 3, 2]
    with pytest.raises(ValueError, match="needs the stats' labels"):
        EPOCH_STRATEGIES["forgetting"](EpochStats(20, forgetting=counter), 10, g,
                                       {"balance": True})
