"""Training engine: fit, evaluate, predict, schedules."""

import logging
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from thresher.data.dataset import ArrayDataset
from thresher.data.pipeline import Normalize
from thresher.train import (
    Diverged,
    FitConfig,
    LossSpikeScheduler,
    build_optimizer,
    build_schedule,
    evaluate,
    fit,
    last_layer_grad_embeddings,
    optimizer_options,
    param_groups,
    predict,
    set_seed,
    set_threads,
)


class TinyNet(nn.Module):
    """Smallest model with the seam: embed() and a linear head."""

    def __init__(self, d_in: int = 16, hidden: int = 12, classes: int = 3):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(d_in, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, classes)

    def embed(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.embed(x))


def blobs(n: int = 300, seed: int = 0) -> ArrayDataset:
    """Three classes whose images are bright in different quadrants: learnable, not trivial."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    images = torch.randint(0, 120, (n, 1, 4, 4), generator=g)
    rows = torch.tensor([0, 0, 2])[labels]
    cols = torch.tensor([0, 2, 0])[labels]
    for dr in (0, 1):
        for dc in (0, 1):
            images[torch.arange(n), 0, rows + dr, cols + dc] += 120
    return ArrayDataset(images.to(torch.uint8), labels, ["a", "b", "c"], "blobs")


def quick(**kw) -> FitConfig:
    base = dict(epochs=8, batch_size=32, lr=0.1, progress=False, weight_decay=0.0)
    base.update(kw)
    return FitConfig(**base)


def test_fit_learns_and_evaluate_agrees_with_manual_accuracy():
    set_seed(0)
    train, test = blobs(300, 0), blobs(150, 1)
    model = TinyNet()
    result = fit(model, train, quick(), val=test, device=torch.device("cpu"))
    scores = evaluate(model, test, normalize=result.normalize)
    assert scores["accuracy"] >= 0.95
    assert result.history[-1]["val_acc"] == scores["accuracy"]
    out = predict(model, test, normalize=result.normalize)
    assert (out.preds == test.labels).float().mean().item() == pytest.approx(scores["accuracy"])
    assert out.losses.mean().item() == pytest.approx(scores["loss"], rel=1e-5)


def test_fit_is_bit_reproducible_on_cpu_and_seed_matters():
    def train(seed):
        set_seed(seed)
        model = TinyNet()
        fit(model, blobs(), quick(epochs=2, augment="none"), seed=seed,
            device=torch.device("cpu"))
        return torch.cat([p.flatten() for p in model.parameters()])

    assert torch.equal(train(1), train(1))
    assert not torch.equal(train(1), train(2))


def test_unit_weights_match_unweighted_training():
    def train(weights):
        set_seed(0)
        model = TinyNet()
        fit(model, blobs(), quick(epochs=2), weights=weights, device=torch.device("cpu"))
        return torch.cat([p.flatten() for p in model.parameters()])

    assert torch.allclose(train(None), train(torch.full((300,), 7.0)), atol=1e-5)


def test_zero_weight_examples_do_not_move_the_model():
    data = blobs(64)
    set_seed(0)
    model = TinyNet()
    before = [p.detach().clone() for p in model.parameters()]
    weights = torch.zeros(64)
    weights[0] = 1.0  # only example 0 counts; with batch 64 each step sees it
    fit(model, data, quick(epochs=1, batch_size=64, momentum=0.0), weights=weights,
        device=torch.device("cpu"))
    # same step computed by hand on example 0 alone
    set_seed(0)
    ref = TinyNet()
    norm = Normalize.from_dataset(data)
    x = norm(data.images[:1].float() / 255)
    # weights rescale to mean 1 (w0 = 64), so the batch loss mean(w * l) is exactly l0
    F.cross_entropy(ref(x), data.labels[:1]).backward()
    with torch.no_grad():
        for p, p0 in zip(ref.parameters(), before):
            assert torch.equal(p, p0)
            p -= 0.1 * p.grad  # cosine factor at step 0 is 1
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


def test_bad_weights_and_early_stopping_without_validation_are_rejected():
    with pytest.raises(ValueError, match="weights must be finite"):
        fit(TinyNet(), blobs(30), quick(), weights=-torch.ones(30))
    with pytest.raises(ValueError, match="early_stopping needs validation"):
        fit(TinyNet(), blobs(30), quick(early_stopping=2))
    with pytest.raises(ValueError, match="fit.optimizer: unknown optimizer 'sgdd'; did you "
                                         "mean 'sgd'"):
        quick(optimizer="sgdd").validate()
    with pytest.raises(ValueError, match="fit.epochs must be positive"):
        quick(epochs=0).validate()


def test_early_stopping_restores_the_best_epoch():
    set_seed(0)
    model = TinyNet()
    val = blobs(90, 5)
    result = fit(model, blobs(), quick(epochs=30, lr=0.5, early_stopping=3), val=val,
                 device=torch.device("cpu"))
    best = max(row["val_acc"] for row in result.history)
    assert len(result.history) <= 30
    assert evaluate(model, val, normalize=result.normalize)["accuracy"] == best


def test_closed_form_gradient_embedding_equals_autograd():
    set_seed(0)
    model = TinyNet()
    data = blobs(6)
    norm = Normalize.from_dataset(data)
    out = predict(model, data, normalize=norm, grad_embed=True)
    x = norm(data.images.float() / 255)
    for i in range(6):
        model.zero_grad()
        F.cross_entropy(model(x[i:i + 1]), data.labels[i:i + 1]).backward()
        assert torch.allclose(out.grad_embeddings[i], model.head.weight.grad.flatten(),
                              atol=1e-6)


def test_predict_without_labels_never_reads_them():
    set_seed(0)
    model = TinyNet()
    data = blobs(20)
    norm = Normalize.from_dataset(data)
    hidden = ArrayDataset(data.images, torch.full((20,), -1), data.classes, "pool")
    with_labels = predict(model, data, normalize=norm)
    blind = predict(model, hidden, normalize=norm, use_labels=False, grad_embed=True)
    assert blind.labels is None and blind.losses is None
    assert torch.equal(blind.probs, with_labels.probs)
    assert torch.equal(blind.embeddings, with_labels.embeddings)
    expected = last_layer_grad_embeddings(blind.probs, blind.embeddings, blind.preds)
    assert torch.equal(blind.grad_embeddings, expected)


def test_schedules_follow_their_formulas():
    opt = build_optimizer("sgd", [nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_schedule("cosine", opt, total_steps=10, warmup_steps=2)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)
    assert lrs[2] == pytest.approx(1.0)
    assert lrs[6] == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)))
    with pytest.raises(ValueError, match="unknown schedule 'cosin'.*did you mean 'cosine'"):
        build_schedule("cosin", opt, 10)


def test_loss_spike_scheduler_decays_on_plateau_and_resets_on_spike():
    sched = LossSpikeScheduler(0.1, factor=0.5, patience=2, spike=1.0)
    lrs = [sched.step(loss) for loss in [1.0, 1.0, 1.0, 1.0]]
    assert lrs == [0.1, 0.1, 0.1, 0.05]  # 3 batches without improvement > patience 2
    lrs = [sched.step(loss) for loss in [5.0, 5.0, 5.0]]
    assert lrs[-1] == 0.1 and sched.best == 5.0  # a sustained spike restores the first rate


# --- step hooks, parameter groups, optimiser options, features ------------------------------


def params_of(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_custom_loss_fn_replaces_the_default_and_sees_the_batch():
    """A loss_fn that is the default cross-entropy reproduces default training exactly; one
    that ignores half the classes trains a different model."""
    def train(loss_fn):
        set_seed(0)
        model = TinyNet()
        fit(model, blobs(), quick(epochs=2), loss_fn=loss_fn, device=torch.device("cpu"))
        return params_of(model)

    default = train(None)
    same = train(lambda logits, batch: F.cross_entropy(logits, batch.y, reduction="none"))
    masked = train(lambda logits, batch: F.cross_entropy(logits, batch.y, reduction="none")
                   * (batch.y != 2))
    assert torch.equal(default, same)
    assert not torch.allclose(default, masked)


def test_before_epoch_trains_on_the_rows_it_returns_and_the_schedule_keeps_pace():
    data = blobs(300)
    seen: list[torch.Tensor] = []
    lrs: list[float] = []
    set_seed(0)
    result = fit(TinyNet(), data, quick(epochs=4, batch_size=10),
                 before_epoch=lambda epoch: torch.arange(50) if epoch % 2 else None,
                 after_step=lambda step: seen.append(step.batch.index),
                 on_epoch=lambda row: lrs.append(row["lr"]), device=torch.device("cpu"))
    rows = [r.get("examples") for r in result.history]
    assert rows == [50, None, 50, None]  # 5 batches of 10 on odd epochs, all 300 on even ones
    assert len(seen) == 5 + 30 + 5 + 30
    assert torch.cat(seen[:5]).sort().values.tolist() == list(range(50))
    # the cosine schedule spans 4 full epochs whatever the subset sizes: after epoch 2 it is
    # at its midpoint, exactly as in full-data training
    assert lrs[1] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 60 / 120)))
    with pytest.raises(ValueError, match="epoch rows must lie in"):
        fit(TinyNet(), data, quick(epochs=1), before_epoch=lambda e: torch.tensor([0, 300]),
            device=torch.device("cpu"))


def test_after_backward_can_rewrite_gradients_and_after_step_sees_per_example_losses():
    set_seed(0)
    model = TinyNet()
    before = params_of(model)

    def freeze_body(step):
        for p in step.model.body.parameters():
            p.grad.zero_()

    losses = []
    fit(model, blobs(), quick(epochs=1, batch_size=50, momentum=0.0, weight_decay=0.0),
        after_backward=freeze_body,
        after_step=lambda step: losses.append((step.losses, step.loss, step.step)),
        device=torch.device("cpu"))
    body = sum(p.numel() for p in model.body.parameters())
    assert torch.equal(params_of(model)[:body], before[:body])  # gradient surgery held
    assert not torch.equal(params_of(model)[body:], before[body:])  # the head still learned
    assert [s for _, _, s in losses] == list(range(6))
    for per_example, mean, _ in losses:
        assert per_example.shape == (50,) and not per_example.requires_grad
        assert per_example.mean().item() == pytest.approx(mean.item())


def test_weight_decay_skips_biases_unless_asked():
    """With a zero loss only decay moves parameters: weights shrink, biases do not."""
    def decayed(decay_1d):
        set_seed(0)
        model = TinyNet()
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        fit(model, blobs(), quick(epochs=1, momentum=0.0, weight_decay=0.1, schedule="constant",
                                  decay_1d=decay_1d),
            loss_fn=lambda logits, batch: 0.0 * logits.sum(1), device=torch.device("cpu"))
        return {n: not torch.equal(p, before[n]) for n, p in model.named_parameters()}

    assert decayed(False) == {"body.1.weight": True, "body.1.bias": False,
                              "head.weight": True, "head.bias": False}
    assert all(decayed(True).values())
    groups = param_groups(TinyNet(), 0.1)
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert len(param_groups(TinyNet(), 0.0)) == 1  # nothing to split: one fused update


def test_optimizer_options_reach_the_optimizer_and_unknown_ones_are_refused():
    opt = build_optimizer("adam", TinyNet(), lr=1e-3, options={"betas": [0.5, 0.6], "eps": 1e-6})
    assert opt.param_groups[0]["betas"] == (0.5, 0.6) and opt.param_groups[0]["eps"] == 1e-6
    assert optimizer_options("sgd") == {"dampening": 0.0}
    with pytest.raises(ValueError, match="'adam' has no option 'beta'.*did you mean 'betas'"):
        quick(optimizer="adam", optimizer_options={"beta": 0.9}).validate()


def test_float_features_train_through_the_same_loop_untouched():
    """A linear probe on float features: the pipeline passes them through (no normalisation,
    no augmentation), so one step of plain SGD matches the hand-computed update."""
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(64, 5, generator=g)
    labels = (feats[:, 0] > 0).long()
    data = ArrayDataset(feats, labels, ["neg", "pos"], "latents")
    assert data.is_features and data.in_shape == (5,)
    probe = nn.Linear(5, 2)
    ref = nn.Linear(5, 2)
    ref.load_state_dict(probe.state_dict())
    fit(probe, data, quick(epochs=1, batch_size=64, momentum=0.0, weight_decay=0.0),
        device=torch.device("cpu"))
    F.cross_entropy(ref(feats), labels).backward()
    with torch.no_grad():
        for p in ref.parameters():
            p -= 0.1 * p.grad
    assert torch.allclose(probe.weight, ref.weight, atol=1e-6)
    trained = fit(probe, data, quick(epochs=30, batch_size=16), device=torch.device("cpu"))
    assert trained.normalize is None
    assert evaluate(probe, data, normalize=None)["accuracy"] > 0.9
    with pytest.raises(ValueError, match="holds float features: use augment 'none'"):
        fit(probe, data, quick(augment="standard"), device=torch.device("cpu"))


class BlowsUpInEval(TinyNet):
    """Finite logits while training, infinite ones in eval mode: only validation diverges."""

    def forward(self, x):
        out = super().forward(x)
        return out if self.training else out * math.inf


def test_a_diverging_fit_stops_naming_the_epoch_the_loss_and_the_fix():
    set_seed(0)
    epochs_seen = []
    with pytest.raises(Diverged, match=r"epoch 1: train_loss=nan \(fit.lr=1e\+06\); lower "
                                       r"fit.lr or set fit.nonfinite=warn"):
        fit(TinyNet(), blobs(), quick(lr=1e6, epochs=3), on_epoch=epochs_seen.append)
    assert epochs_seen == []  # no row of a diverged epoch reaches the hooks
    assert issubclass(Diverged, RuntimeError)
    set_seed(0)
    with pytest.raises(Diverged, match="epoch 2: val_loss=nan"):
        fit(BlowsUpInEval(), blobs(), quick(epochs=3, eval_every=2), val=blobs(60, 1))


def test_nonfinite_warn_carries_on_and_warns_once_and_a_sane_fit_does_neither(caplog):
    set_seed(0)
    with caplog.at_level(logging.WARNING, logger="thresher.train.engine"):
        result = fit(TinyNet(), blobs(), quick(lr=1e6, epochs=3, nonfinite="warn"),
                     val=blobs(60, 1))
    assert len(result.history) == 3 and all(math.isnan(r["train_loss"]) for r in result.history)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "diverged at epoch 1: train_loss=nan" in warnings[0].message
    caplog.clear()
    set_seed(0)
    with caplog.at_level(logging.WARNING, logger="thresher.train.engine"):
        result = fit(TinyNet(), blobs(), quick(), val=blobs(60, 1))
    assert caplog.records == [] and len(result.history) == 8
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"])
               for r in result.history)
    with pytest.raises(ValueError, match="fit.nonfinite must be one of 'stop', 'warn', got "
                                         "'wran'; did you mean 'warn'"):
        quick(nonfinite="wran").validate()


def test_set_threads_sets_the_count_and_zero_means_one_per_usable_core():
    before = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        assert set_threads(1) == 1 == torch.get_num_threads()
        assert set_threads(0) == cores == torch.get_num_threads()
        with pytest.raises(ValueError, match="threads must be >= 0"):
            set_threads(-1)
    finally:
        torch.set_num_threads(before)


def wait_policy_in_fresh_python(env_policy: str | None) -> str:
    """What `set_wait_policy` reports in a fresh interpreter, and that it loaded no torch."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if env_policy is not None:
        env["OMP_WAIT_POLICY"] = env_policy
    code = ("import os, sys; from thresher.threads import set_wait_policy; "
            "p = set_wait_policy(); assert 'torch' not in sys.modules, 'torch loaded'; "
            "print(p, os.environ['OMP_WAIT_POLICY'])")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, check=True).stdout.strip()


def test_wait_policy_is_set_before_torch_loads_unless_the_user_chose_one(monkeypatch):
    from thresher.threads import set_wait_policy

    assert wait_policy_in_fresh_python(None) == "PASSIVE PASSIVE"
    assert wait_policy_in_fresh_python("ACTIVE") == "ACTIVE ACTIVE"
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert set_wait_policy() is None  # torch is loaded here: too late for this process
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"  # still inherited by subprocesses
