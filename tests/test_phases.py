"""Phase-transition detection: real runs (a learning-rate drop fires, a flat schedule stays
quiet), hand-made signal sequences, hand-computed signals, resuming, config errors."""

import io
import math

import pytest
import torch

from thresher.data import load_splits
from thresher.models import build
from thresher.train import FitConfig, fit, set_seed
from thresher.train.phases import SIGNALS, PhaseConfig, PhaseDetector, curvature, hooks

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")
EPOCHS, BATCH = 16, 32


@pytest.fixture(scope="module")
def digits():
    return load_splits("digits")[0]


def train(digits, schedule: str, seed: int) -> PhaseDetector:
    """An MLP on digits with the detector's hook: SGD at a rate high enough that the loss
    is still noisy and falling at mid-training, where ``step`` divides the rate by 10."""
    set_seed(seed)
    model = build("mlp", 10, (1, 8, 8))
    detector = PhaseDetector()
    cfg = FitConfig(epochs=EPOCHS, batch_size=BATCH, lr=0.5, label_smoothing=0.1,
                    schedule=schedule, progress=False)
    fit(model, digits, cfg, seed=seed, device=CPU, **hooks(detector))
    return detector


@pytest.mark.parametrize("seed", [0, 1])
def test_a_learning_rate_drop_fires_and_a_flat_schedule_stays_quiet(digits, seed):
    """The central requirement, on real training: the same seed with the ``step`` schedule
    (x0.1 at 50%) and with ``constant`` is the same run up to the drop. The step schedule must
    fire within one epoch after the drop (and not before), the flat one never."""
    per_epoch = len(digits) // BATCH  # fit drops the last partial batch
    drop = per_epoch * EPOCHS // 2  # the first step at a tenth of the rate
    stepped, flat = train(digits, "step", seed), train(digits, "constant", seed)
    assert stepped.observations == flat.observations == per_epoch * EPOCHS
    assert stepped.warmup < drop  # calibrated before the drop
    steps = stepped.summary()["steps"]
    assert steps and drop <= steps[0] < drop + per_epoch, (drop, steps)
    assert stepped.events[0]["trigger"] == "alignment"
    assert stepped.events[0]["z"]["alignment"] > 0  # gradients stop bouncing: they align
    assert flat.summary()["transitions"] == 0, flat.summary()


def feed(detector: PhaseDetector, losses, norms=None, grads=None) -> list[dict]:
    norms = torch.ones(len(losses)) if norms is None else norms
    return [detector.observe(i, float(losses[i]), float(norms[i]),
                             grad=None if grads is None else grads[i])
            for i in range(len(losses))]


def test_a_step_in_the_loss_level_fires_once_per_step_despite_a_long_excursion():
    g = torch.Generator().manual_seed(0)
    cfg = PhaseConfig(votes=("curvature",))
    level = torch.ones(1200)
    level[400:] = 0.5
    level[900:] = 1.0
    losses = level * (1 + 0.01 * torch.randn(1200, generator=g))
    results = feed(PhaseDetector(cfg), losses, 1 + 0.01 * torch.randn(1200, generator=g))
    events = [r["step"] for r in results if r["transition"]]
    assert len(events) == 2  # one per step, nothing in between
    assert 400 <= events[0] < 400 + cfg.lag and 900 <= events[1] < 900 + cfg.lag
    # the evidence stayed above the threshold well past the refractory period: only the
    # refractory period and re-arming kept the same excursion from firing twice
    above = [r["evidence"] > cfg.threshold for r in results[events[0]:900]]
    assert above[:cfg.persistence + cfg.refractory + 1] == [True] * (cfg.persistence
                                                                     + cfg.refractory + 1)


def test_pure_noise_of_constant_variance_does_not_fire_in_500_observations():
    g = torch.Generator().manual_seed(0)
    for votes in (PhaseConfig().votes, SIGNALS):
        detector = PhaseDetector(PhaseConfig(votes=votes))
        n = detector.warmup + 500
        losses = 1 + 0.1 * torch.randn(n, generator=g)
        norms = torch.exp(0.3 * torch.randn(n, generator=g))
        grads = torch.randn(n, 64, generator=g) + 0.5  # a constant mean direction plus noise
        results = feed(detector, losses, norms, grads)
        assert detector.events == [], votes
        assert all(r["z"]["alignment"] is not None for r in results[detector.warmup:])
        assert max(r["evidence"] for r in results[detector.warmup:]) < detector.cfg.threshold


def test_curvature_is_the_second_difference_of_the_smoothed_loss():
    """alpha=0.5: the warm-started EMA weighs a new value max(1/2, 1/n), so the smoothed
    losses of 4, 2, 1, 3 are 4, 3, 2, 2.5."""
    detector = PhaseDetector(PhaseConfig(alpha=0.5, lag=1, calibration=3))
    results = feed(detector, [4.0, 2.0, 1.0, 3.0])
    assert [r["signals"]["loss"] for r in results] == [4.0, 3.0, 2.0, 2.5]
    assert results[1]["signals"]["curvature"] == 0.0  # undefined before 2 lag + 1 values
    assert results[2]["signals"]["curvature"] == pytest.approx((2 - 2 * 3 + 4) / 2)
    assert results[3]["signals"]["curvature"] == pytest.approx((2.5 - 2 * 2 + 3) / 2.5)
    assert results[3]["signals"]["loss_change"] == pytest.approx((2.5 - 3) / 3)
    assert curvature(2.5, 2.0, 3.0) == pytest.approx(0.6)


def test_alignment_of_identical_gradients_is_one_and_of_opposite_ones_minus_one():
    g = torch.randn(10, generator=torch.Generator().manual_seed(0))
    detector = PhaseDetector()
    first = detector.observe(0, 1.0, 1.0, grad=g)
    assert first["signals"]["alignment"] == 0.0  # no mean gradient yet
    assert detector.observe(1, 1.0, 1.0, grad=g)["signals"]["alignment"] == pytest.approx(1)
    assert detector.observe(2, 1.0, 1.0, grad=3 * g)["signals"]["alignment"] \
        == pytest.approx(1)  # the scale does not matter
    assert detector.observe(3, 1.0, 1.0, grad=-g)["signals"]["alignment"] == pytest.approx(-1)
    with pytest.raises(ValueError, match="grad has 5 entries but the earlier ones had 10"):
        detector.observe(4, 1.0, 1.0, grad=g[:5])


def test_state_dict_round_trip_continues_identically():
    g = torch.Generator().manual_seed(1)
    cfg = PhaseConfig(lag=5, calibration=30, votes=("alignment", "curvature"), adapt=0.01)
    n = 300
    t = torch.arange(n)
    losses = torch.where(t < 120, 1.0, 0.4) * (1 + 0.02 * torch.randn(n, generator=g))
    norms = torch.exp(0.2 * torch.randn(n, generator=g))
    grads = torch.randn(n, 16, generator=g) + torch.where(t < 200, 0.0, 5.0)[:, None]
    whole = PhaseDetector(cfg)
    first = feed(whole, losses[:150], norms[:150], grads[:150])
    buffer = io.BytesIO()
    torch.save(whole.state_dict(), buffer)
    buffer.seek(0)
    resumed = PhaseDetector(cfg)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.summary() == whole.summary()
    for i in range(150, n):
        a, b = (detector.observe(i, float(losses[i]), float(norms[i]), grad=grads[i])
                for detector in (whole, resumed))
        assert a == b
    assert whole.summary() == resumed.summary() and whole.events == resumed.events
    assert whole.summary()["transitions"] >= 2 and first  # the run had something to carry
    with pytest.raises(ValueError, match=r"saved with other settings: lag=5 \(now 6\)"):
        PhaseDetector(PhaseConfig(**{**vars(cfg), "lag": 6})).load_state_dict(
            whole.state_dict())


def test_utility_trend_is_fed_per_selection_and_can_vote():
    cfg = PhaseConfig(lag=2, calibration=10, votes=("utility",))
    detector = PhaseDetector(cfg)
    g = torch.Generator().manual_seed(0)
    epochs, per_epoch = 20, 10
    utilities = (1 + 0.01 * torch.randn(epochs, generator=g)).tolist()
    utilities[14:] = [0.3] * (epochs - 14)  # the selected subset stops paying
    step = 0
    for epoch in range(epochs):
        detector.note_utility(utilities[epoch])
        for _ in range(per_epoch):
            out = detector.observe(step, 1.0, 1.0)
            step += 1
        if epoch == 1:  # smoothed 1st and 2nd utility (weight max(1/2, 1/2)), relative trend
            smooth = (utilities[0] + utilities[1]) / 2
            assert out["signals"]["utility"] == pytest.approx(smooth)
            assert out["signals"]["utility_trend"] == pytest.approx(
                (smooth - utilities[0]) / utilities[0])
    assert [e["trigger"] for e in detector.events] == ["utility"]
    assert 14 * per_epoch <= detector.events[0]["step"] < 15 * per_epoch


def test_labels_follow_the_documented_rules():
    cfg = PhaseConfig(lag=5, calibration=20)
    g = torch.Generator().manual_seed(0)

    def labels(losses, norms=None):
        results = feed(PhaseDetector(cfg), losses, norms)
        return [r["label"] for r in results]

    n = 200
    warm = cfg.burn_in + 2 * cfg.lag + cfg.calibration
    noise = 1 + 0.002 * torch.randn(n, generator=g)
    flat = labels(noise)
    assert set(flat[:warm]) == {"warmup"} and set(flat[warm:]) == {"plateau"}
    decaying = labels(0.97 ** torch.arange(n) * noise)  # -26% over 2 lag observations
    assert set(decaying[warm:]) == {"fast"}
    assert set(labels(0.995 ** torch.arange(n) * noise)[warm:]) == {"slow"}  # -4.9%
    assert set(labels(1.01 ** torch.arange(n) * noise)[warm:]) == {"rising"}
    norms = torch.ones(n)
    norms[120::2] = 10.0  # the gradient norm starts jumping by 10x every other step
    assert labels(noise, norms)[-1] == "unstable"


def test_a_non_finite_observation_is_not_folded_in():
    detector = PhaseDetector()
    feed(detector, [1.0, 1.0])
    out = detector.observe(2, math.nan, 1.0)
    assert out["label"] == "unstable" and not out["transition"]
    out = detector.observe(3, 1.0, 1.0, grad=torch.tensor([math.inf, 1.0]))
    assert out["label"] == "unstable" and detector.observations == 2
    assert detector.observe(4, 1.0, 1.0)["signals"]["loss"] == 1.0


def test_the_hook_feeds_every_kth_step_and_leaves_training_unchanged(digits):
    small = digits.subset(torch.arange(320))
    cfg = FitConfig(epochs=2, batch_size=32, lr=0.1, progress=False)

    def run(**kw):
        set_seed(0)
        model = build("mlp", 10, (1, 8, 8))
        fit(model, small, cfg, device=CPU, **kw)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    detector = PhaseDetector()
    hook = hooks(detector, every=3)
    assert torch.equal(run(), run(**hook))  # it reads gradients only and returns None
    assert detector.observations == math.ceil(20 / 3)  # steps 0, 3, ..., 18
    assert detector.signals["grad_norm"] > 0 and detector.signals["alignment"] != 0
    with pytest.raises(ValueError, match="every must be an integer >= 1, got 0"):
        hooks(detector, every=0)


@pytest.mark.parametrize("field, value, match", [
    ("alpha", 0.0, r"phases.alpha must be in \(0, 1\], got 0.0"),
    ("grad_beta", 1.0, r"phases.grad_beta must be in \[0, 1\), got 1.0"),
    ("adapt", -0.1, r"phases.adapt must be in \[0, 1\)"),
    ("lag", 0, "phases.lag must be an integer >= 1, got 0"),
    ("calibration", 2.5, "phases.calibration must be an integer >= 3, got 2.5"),
    ("persistence", 0, "phases.persistence must be an integer >= 1"),
    ("refractory", -1, "phases.refractory must be an integer >= 0"),
    ("threshold", math.inf, "phases.threshold must be a finite number > 0, got inf"),
    ("plateau", 0.5, r"phases.plateau \(0.5\) must be below phases.fast \(0.1\)"),
    ("unstable", 1.0, "phases.unstable must be a finite number > 1"),
    ("votes", (), "phases.votes must be a non-empty list of signals from grad_norm, "),
    ("votes", "alignment", "phases.votes must be a non-empty list"),
    ("votes", ("alignmnt",), "phases.votes: unknown signal 'alignmnt'; did you mean "
                             "'alignment'\\? choose from grad_norm, curvature, alignment"),
])
def test_bad_config_values_are_rejected_naming_the_field(field, value, match):
    with pytest.raises(ValueError, match=match):
        PhaseDetector(PhaseConfig(**{field: value}))
