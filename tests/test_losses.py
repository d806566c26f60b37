"""The loss executor: its terms against reference formulas, the weights' safety rules, the
guard inside the real `fit` loop, and uncertainty weighting."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from thresher.data import ArrayDataset
from thresher.data.pipeline import Batch
from thresher.models import build
from thresher.train import FitConfig, fit
from thresher.train.losses import (
    ExecutorConfig,
    LossExecutor,
    UncertaintyWeights,
    WithLossParameters,
    term_values,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(n: int = 6, c: int = 4, seed: int = 0) -> tuple[torch.Tensor, Batch]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g) * 2
    y = torch.randint(c, (n,), generator=g)
    return logits, Batch(torch.zeros(n, 1, 2, 2), y, torch.arange(n), None)


def test_uniform_term_weighted_under_normalisation_is_label_smoothing():
    logits, batch = _batch()
    for eps in (0.1, 0.3):
        ex = LossExecutor("ce", ("uniform",), ExecutorConfig(w_max=5.0), [eps / (1 - eps)])
        expected = F.cross_entropy(logits, batch.y, reduction="none", label_smoothing=eps)
        torch.testing.assert_close(ex.loss_fn(logits, batch), expected)


def test_confidence_and_consistency_terms_match_their_formulas():
    logits, batch = _batch()
    view = torch.randn_like(logits)
    terms = term_values(("confidence", "consistency"), logits, batch, view)
    p = logits.softmax(1)
    torch.testing.assert_close(terms[:, 0], math.log(4) + (p * p.log()).sum(1))  # log K - H
    assert (terms[:, 0] >= 0).all()
    expected = F.kl_div(logits.log_softmax(1), view.log_softmax(1), reduction="none",
                        log_target=True).sum(1)  # KL(p(view) || p(x))
    torch.testing.assert_close(terms[:, 1], expected)
    same = term_values(("consistency",), logits, batch, logits)
    assert same.abs().max() < 1e-6


def test_weights_are_clipped_and_normalised():
    ex = LossExecutor("ce", ("uniform", "confidence"), ExecutorConfig(w_min=0.01, w_max=1.0),
                      [5.0, -3.0])
    assert ex.weights == [1.0, 0.01]
    eff = ex.effective()
    assert math.isclose(sum(eff), 1.0, rel_tol=1e-6)
    assert eff == pytest.approx([1 / 2.01, 1 / 2.01, 0.01 / 2.01])
    raw = LossExecutor("recon", ("kl",), ExecutorConfig(0.0, 2.0, normalize=False), [0.5])
    assert raw.effective() == [1.0, 0.5]


def test_unknown_terms_and_mismatched_weights_fail_early():
    with pytest.raises(ValueError, match="unknown loss term 'smoothing'.*uniform"):
        LossExecutor("ce", ("smoothing",), ExecutorConfig(), [0.1])
    with pytest.raises(ValueError, match="2 weights for 1 auxiliary terms"):
        LossExecutor("ce", ("uniform",), ExecutorConfig(), [0.1, 0.2])
    with pytest.raises(ValueError, match="consistency term needs a second view"):
        LossExecutor("ce", ("consistency",), ExecutorConfig(), [0.1])
    with pytest.raises(ValueError, match="w_min < w_max"):
        LossExecutor("ce", (), ExecutorConfig(w_min=1.0, w_max=0.5), [])


def _data(n: int = 64) -> ArrayDataset:
    g = torch.Generator().manual_seed(3)
    y = torch.arange(n) % 4
    images = (torch.rand(n, 1, 8, 8, generator=g) * 60 + y[:, None, None, None] * 40).byte()
    return ArrayDataset(images, y, [str(c) for c in range(4)], "toy")


def test_guard_skips_a_non_finite_step_inside_fit_and_counts_it():
    data = _data()
    torch.manual_seed(0)
    model = build("simple_cnn", 4, (1, 8, 8), channels=(8,), hidden=16)
    ex = LossExecutor("ce", (), ExecutorConfig(), [])
    calls = []

    def poisoned(output, batch):
        calls.append(1)
        losses = ex.loss_fn(output, batch)
        return losses * float("nan") if len(calls) == 2 else losses  # the second step only

    snapshots = []

    def after_step(step):
        snapshots.append((step.step, [p.detach().clone() for p in model.parameters()]))

    cfg = FitConfig(epochs=1, batch_size=16, lr=0.05, progress=False, eval_every=0)
    result = fit(model, data, cfg, loss_fn=poisoned, after_backward=ex.guard,
                 after_step=after_step, device=torch.device("cpu"))
    assert ex.skipped == 1 and ex.steps == 4
    assert result.history[0]["skipped"] == 1
    assert math.isfinite(result.history[0]["train_loss"])
    assert [s for s, _ in snapshots] == [0, 2, 3]  # step 1 never reached the optimiser
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_guard_clips_the_gradient_norm():
    model = nn.Linear(5, 3)
    (model(torch.ones(2, 5)) * 1000).sum().backward()
    ex = LossExecutor("ce", (), ExecutorConfig(max_grad_norm=0.5), [])

    class _Step:
        pass

    step = _Step()
    step.model = model
    before = torch.cat([p.grad.flatten() for p in model.parameters()]).norm()
    assert ex.guard(step) is True and before > 0.5
    after = torch.cat([p.grad.flatten() for p in model.parameters()]).norm()
    assert after == pytest.approx(0.5, rel=1e-5)
    assert ex.read()["grad_norm"] == pytest.approx(float(before), rel=1e-5)


def test_read_returns_means_since_the_last_read():
    logits, batch = _batch()
    ex = LossExecutor("ce", ("uniform",), ExecutorConfig(), [0.1])
    ex.loss_fn(logits, batch)
    ex.loss_fn(logits * 0, batch)
    ce = F.cross_entropy(logits, batch.y)
    stats = ex.read()
    assert stats["term_ce"] == pytest.approx((float(ce) + math.log(4)) / 2, rel=1e-5)
    assert stats["term_uniform"] == pytest.approx(
        (float(-logits.log_softmax(1).mean()) + math.log(4)) / 2, rel=1e-5)
    assert ex.read()["term_ce"] == 0.0


def test_uncertainty_weighting_matches_kendall_and_trains_its_log_variances():
    uw = UncertaintyWeights(2)
    with torch.no_grad():
        uw.log_vars.copy_(torch.tensor([0.5, -1.0]))
    terms = torch.tensor([[2.0, 3.0], [1.0, 0.0]])
    expected = torch.tensor([2 * math.exp(-0.5) + 3 * math.exp(1.0) - 0.5,
                             1 * math.exp(-0.5) - 0.5])
    torch.testing.assert_close(uw.combine(terms), expected)
    uw.combine(terms).mean().backward()
    # d/ds_k of mean_b(exp(-s_k) L_bk + s_k) = 1 - exp(-s_k) mean_b L_bk
    torch.testing.assert_close(uw.log_vars.grad, torch.tensor(
        [1 - math.exp(-0.5) * 1.5, 1 - math.exp(1.0) * 1.5]))
    bounded = UncertaintyWeights(2, w_min=0.1, w_max=1.0)
    with torch.no_grad():
        bounded.log_vars.copy_(torch.tensor([-3.0, 5.0]))  # weights e^3 and e^-5, out of range
    assert bounded.weights() == pytest.approx([1.0, 0.1])
    bounded.combine(terms).sum().backward()
    assert bounded.log_vars.grad.abs().max() == 0  # held at the bounds: no pull further out
    model = WithLossParameters(nn.Linear(3, 2), uw)
    assert any(p is uw.log_vars for p in model.parameters())  # one optimiser trains both
