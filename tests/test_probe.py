"""Batched linear probes: separable data, independence of batched problems, an autograd
reference, config errors, shapes."""

import pytest
import torch
import torch.nn.functional as F

from thresher.train import ProbeConfig, Probes, fit_probes

pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def separable(n_per: int = 20, classes: int = 3, d: int = 8, seed: int = 0):
    g = gen(seed)
    means = 4 * torch.eye(classes, d)
    y = torch.arange(classes).repeat_interleave(n_per)
    return means[y] + 0.3 * torch.randn(len(y), d, generator=g), y


def reference(x, y, classes, config: ProbeConfig, sample_weight=None):
    """The textbook loop: autograd, F.cross_entropy, torch's Adam, decay on W only."""
    w = torch.zeros(classes, x.shape[1], dtype=x.dtype, requires_grad=True)
    b = torch.zeros(classes, dtype=x.dtype, requires_grad=True)
    opt = torch.optim.Adam([{"params": [w], "weight_decay": config.weight_decay},
                            {"params": [b], "weight_decay": 0.0}], lr=config.lr)
    for _ in range(config.steps):
        losses = F.cross_entropy(x @ w.T + b, y, reduction="none",
                                 label_smoothing=config.label_smoothing)
        loss = (losses * sample_weight).mean() if sample_weight is not None else losses.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return w.detach(), b.detach()


def test_probe_separates_linearly_separable_data():
    x, y = separable()
    probes = fit_probes(x, y, 3)
    assert probes.weight.shape == (1, 3, 8) and probes.bias.shape == (1, 3)
    assert probes.accuracy(x, y).tolist() == [1.0]


def test_batched_problems_equal_problems_trained_alone():
    problems = [separable(n_per=10, seed=s) for s in range(5)]
    x = torch.stack([p[0] for p in problems])
    y = torch.stack([p[1][torch.randperm(30, generator=gen(s))] for s, p in enumerate(problems)])
    config = ProbeConfig(steps=50)
    batched = fit_probes(x, y, 3, config)
    for p in range(5):
        alone = fit_probes(x[p], y[p], 3, config)
        torch.testing.assert_close(batched.weight[p], alone.weight[0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(batched.bias[p], alone.bias[0], atol=1e-5, rtol=1e-4)
    # minibatches too: every problem walks its rows in the same seeded order
    mini = ProbeConfig(steps=12, batch_size=7)
    batched = fit_probes(x, y, 3, mini, generator=gen(3))
    for p in (0, 4):
        alone = fit_probes(x[p], y[p], 3, mini, generator=gen(3))
        torch.testing.assert_close(batched.weight[p], alone.weight[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("smoothing,weighted", [(0.0, False), (0.1, True)])
def test_probe_matches_a_plain_autograd_logistic_regression(smoothing, weighted):
    g = gen(1)
    x = torch.randn(16, 3, generator=g, dtype=torch.float64)
    y = (x[:, 0] + 0.5 * torch.randn(16, generator=g, dtype=torch.float64) > 0).long()
    w = torch.rand(16, generator=g, dtype=torch.float64) * 2 if weighted else None
    config = ProbeConfig(steps=40, lr=0.05, weight_decay=1e-2, label_smoothing=smoothing)
    probes = fit_probes(x, y, 2, config, sample_weight=w)
    ref_w, ref_b = reference(x, y, 2, config, sample_weight=w)
    torch.testing.assert_close(probes.weight[0], ref_w, atol=1e-10, rtol=1e-9)
    torch.testing.assert_close(probes.bias[0], ref_b, atol=1e-10, rtol=1e-9)
    assert probes.weight.dtype == torch.float64


@pytest.mark.parametrize("field,value,message", [
    ("steps", 0, r"probe.steps must be an integer >= 1, got 0"),
    ("steps", 2.5, r"probe.steps must be an integer >= 1, got 2.5"),
    ("lr", 0.0, r"probe.lr must be a finite number > 0, got 0.0"),
    ("lr", float("nan"), r"probe.lr must be a finite number > 0"),
    ("weight_decay", -1.0, r"probe.weight_decay must be a finite number >= 0, got -1.0"),
    ("batch_size", -1, r"probe.batch_size must be an integer >= 0, got -1"),
    ("label_smoothing", 1.0, r"probe.label_smoothing must be in \[0, 1\), got 1.0"),
])
def test_bad_config_values_raise(field, value, message):
    x, y = separable()
    with pytest.raises(ValueError, match=message):
        fit_probes(x, y, 3, ProbeConfig(**{field: value}))


def test_bad_inputs_raise():
    x, y = separable()
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\), got values in \[0, 2\]"):
        fit_probes(x, y, 2)
    with pytest.raises(ValueError, match=r"y must be \[1, 60\]"):
        fit_probes(x, y[:-1], 3)
    with pytest.raises(ValueError, match="integer class indices"):
        fit_probes(x, y.float(), 3)
    with pytest.raises(ValueError, match="num_classes must be an integer >= 1, got 0"):
        fit_probes(x, y, 0)
    with pytest.raises(ValueError, match="pass a torch.Generator"):
        fit_probes(x, y, 3, ProbeConfig(batch_size=8))


def test_logits_and_accuracy_shapes():
    x, y = separable()
    xs, ys = torch.stack([x, x.flip(0)]), torch.stack([y, y.flip(0)])
    probes = fit_probes(xs, ys, 3, ProbeConfig(steps=20))
    assert isinstance(probes, Probes) and probes.num_problems == 2
    assert probes.logits(x).shape == (2, 60, 3)  # one test set shared by both probes
    assert probes.logits(xs).shape == (2, 60, 3)  # a test set per probe
    torch.testing.assert_close(probes.logits(x), probes.logits(torch.stack([x, x])))
    assert probes.accuracy(x, y).shape == (2,)
    assert probes.accuracy(xs, ys).shape == (2,)
    with pytest.raises(ValueError, match=r"x must be \[n, 8\] or \[2, n, 8\], got \[60, 7\]"):
        probes.logits(x[:, :7])
    with pytest.raises(ValueError, match=r"y must be \[60\] or \[2, 60\]"):
        probes.accuracy(x, y[:10])


def test_minibatch_probe_learns():
    x, y = separable(n_per=100)
    probes = fit_probes(x, y, 3, ProbeConfig(steps=60, batch_size=32), generator=gen())
    assert float(probes.accuracy(x, y)[0]) == 1.0
