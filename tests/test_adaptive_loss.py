"""`thresher adaptive-loss`: the policies' rules against hand-computed values, and the study end
to end on the bundled digits (errors before any run, seeds that matter, the meta-state that
carries from one run to the next, the VAE setting, `analyze`)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from thresher.cli import main
from thresher.runs.config import ConfigError
from thresher.studies.adaptive_loss.config import ControllerConfig, KLControlConfig
from thresher.studies.adaptive_loss.policies import (
    MetaController,
    MetaState,
    Monitor,
    PIControl,
    cyclical,
    linear_anneal,
)
from thresher.train.losses import ExecutorConfig, LossExecutor

pytestmark = pytest.mark.usefixtures("one_thread")


def test_kl_schedules_hand_values():
    cfg = KLControlConfig(warmup_fraction=0.5, cycles=4, ratio=0.5)
    lin = linear_anneal(cfg)
    assert [lin(t)[0] for t in (0.0, 0.25, 0.5, 0.9)] == [0.0, 0.5, 1.0, 1.0]
    cyc = cyclical(cfg)  # cycles of length 0.25: rising over the first 0.125, then 1
    assert [cyc(t)[0] for t in (0.0, 0.0625, 0.125, 0.2, 0.25, 0.3125)] == \
        pytest.approx([0.0, 0.5, 1.0, 1.0, 0.0, 0.5])


def _vae_executor() -> LossExecutor:
    return LossExecutor("recon", ("kl",), ExecutorConfig(0.0, 2.0, normalize=False), [1.0])


def _feed_kl(ex: LossExecutor, kl: float) -> None:
    out = torch.tensor([[10.0, kl], [10.0, kl]])
    ex.loss_fn(out, SimpleNamespace(y=None))


def test_pi_controller_raises_beta_above_target_and_stops_integrating_when_saturated():
    cfg = KLControlConfig(kl_target=10.0, kp=0.5, ki=0.01, beta_min=0.0, beta_max=1.0)
    ex = _vae_executor()
    pi = PIControl(cfg)
    pi.begin(ex, 100, 10)
    _feed_kl(ex, 14.0)  # error -4: P = 0.5 / (1 + e^-4), I = +0.04
    pi.step(SimpleNamespace(step=0))
    assert ex.weights[0] == pytest.approx(0.5 / (1 + math.exp(-4)) + 0.04)
    assert pi.integral == -4.0
    _feed_kl(ex, 2.0)  # error +8: P ~ 0.00017, I = -(0.01 * (-4 + 8)) < 0 -> clipped to 0
    pi.step(SimpleNamespace(step=1))
    assert ex.weights[0] == 0.0
    assert pi.integral == -4.0  # saturated: the integral did not wind up


def test_meta_controller_mirrored_pairs_move_the_prior_with_rprop_steps():
    cfg = ControllerConfig(step=0.3, grow=1.2, shrink=0.5, step_min=0.01, step_max=2.0)
    start = [math.log(0.1), math.log(0.2)]
    state = MetaState(list(start), [0.3, 0.3], [0.0, 0.0])
    mc = MetaController(cfg, state, torch.Generator().manual_seed(0))
    mc.prev_val = 2.0

    def epoch(val: float) -> list[float]:
        w = mc.epoch_weights()
        for _ in range(3):
            mc.observe_weights(w)
        mc.epoch_end(val)
        return w

    assert epoch(1.8) == pytest.approx([0.1, 0.2])  # the first epoch trains at the prior
    plus = epoch(1.6)  # gain 0.2/1.8
    signs = [round(math.log(w) - m, 6) / 0.3 for w, m in zip(plus, start)]
    assert sorted(set(abs(x) for x in signs)) == [1.0]  # +-step on each weight
    minus = epoch(1.5)  # gain 0.1/1.6: the + side did better
    assert minus == pytest.approx([math.exp(m - 0.3 * e) for m, e in zip(start, signs)])
    assert state.prior == pytest.approx([m + 0.3 * e for m, e in zip(start, signs)])
    assert state.step == [0.3, 0.3] and state.last_sign == signs and state.pairs == 1
    moved = list(state.prior)
    plus2 = epoch(1.45)  # gain 0.05/1.5
    signs2 = [round((math.log(w) - m) / 0.3) for w, m in zip(plus2, moved)]
    epoch(1.3)  # gain 0.15/1.45: now the - side did better
    for i in range(2):
        direction = -signs2[i]
        step = 0.3 * (1.2 if direction == signs[i] else 0.5)
        assert state.step[i] == pytest.approx(step)
        assert state.prior[i] == pytest.approx(moved[i] + direction * step)
    assert mc.finish()["runs"] == 1


class _Scripted:
    """An agent that plays a fixed list of actions and records what it observed."""

    def __init__(self, actions: list[int]) -> None:
        self.actions, self.seen = list(actions), []

    def act(self, state, explore=True):
        return torch.tensor(self.actions.pop(0))

    def observe(self, transition):
        self.seen.append(transition)

    def update(self):
        return {"td_loss": 0.0, "epsilon": 0.0}

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        return None


def test_monitor_actions_rewards_and_states():
    ex = LossExecutor("ce", ("uniform", "confidence"), ExecutorConfig(w_min=0.01, w_max=1.0),
                      [0.1, 0.1])
    vals = iter([2.0, 1.8, 1.8, 1.9, 1.805])  # begin, one per decision, the end
    agent = _Scripted([1, 4, 0])
    mon = Monitor([0.1, 0.1], agent, lambda: next(vals), interval=2, scale=2.0)
    mon.begin(ex, total_steps=8, per_epoch=4)
    logits = torch.randn(4, 5)
    batch = SimpleNamespace(y=torch.arange(4))
    for step in range(7):
        ex.loss_fn(logits, batch)
        ex.guard(SimpleNamespace(model=torch.nn.Linear(1, 1)))
        mon.step(SimpleNamespace(step=step))
    assert [e["weights"] for e in mon.log] == [[0.1, 0.1], [0.2, 0.1], [0.2, 0.05],
                                               [0.2, 0.05]]
    assert mon.log[1]["reward"] == pytest.approx(10.0)  # 10% drop, at the clip
    # 1.8 -> 1.8, then 1.8 -> 1.9
    assert [t.reward for t in agent.seen] == pytest.approx([0.0, -100 * 0.1 / 1.8])
    assert not any(t.done for t in agent.seen)
    out = mon.finish()  # the last transition ends the episode: 1.9 -> 1.805, a 5% drop
    assert agent.seen[-1].done and agent.seen[-1].reward == pytest.approx(5.0)
    assert out["action_counts"] == [1, 1, 0, 0, 1] and out["decisions"] == 3
    assert agent.seen[0].state.shape == (Monitor.state_dim(2),)


def _cli(tmp_path: Path, *args: str) -> int:
    return main(["adaptive-loss", "--dataset", "digits", "--runs-dir", str(tmp_path / "runs"),
                 "--set", "val_size=300", "--set", "monitor.val_examples=100", *args])


@pytest.mark.parametrize("args,message", [
    (["--modes", "baseline", "monitr_only"], "did you mean 'monitor_only'"),
    (["--controls", "cyclical"], "controls must be one of 'tuned_cosine'"),
    (["--task", "gan"], "task must be one of 'classify', 'vae'"),
    (["--set", "monitor.val_examples=500"], "monitor.val_examples=500 exceeds val_size=300"),
    (["--set", "monitor.action_scale=1.0"], "monitor.action_scale must be > 1"),
    (["--train-size", "2000"], "exceeds the 1437 training images"),
])
def test_bad_input_fails_before_any_run_exists(tmp_path, capsys, args, message):
    with pytest.raises((SystemExit, ConfigError)):
        if _cli(tmp_path, *args):
            raise SystemExit(2)
    assert message in capsys.readouterr().err
    assert not list((tmp_path / "runs").glob("adaptive-loss/*"))


def test_a_meta_state_of_another_task_is_refused_before_the_run(tmp_path, capsys):
    path = tmp_path / "meta.pt"
    torch.save({"task": "vae", "controller": {"prior": [0.0], "step": [0.3],
                                              "last_sign": [0.0]}}, path)
    with pytest.raises(SystemExit):
        if _cli(tmp_path, "--train-size", "600", "--meta-state", str(path)):
            raise SystemExit(2)
    assert "saved by task='vae' with 1 weights" in capsys.readouterr().err
    assert not list((tmp_path / "runs").glob("adaptive-loss/*"))


def _units(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "per_seed.json").read_text())


def test_classification_end_to_end_seeds_differ_and_the_meta_state_carries(tmp_path, capsys):
    meta = tmp_path / "meta.pt"
    common = ["--train-size", "600", "--epochs", "8", "--set", "fit.batch_size=32",
              "--set", "monitor.interval=8", "--controls", "random_schedule",
              "--meta-state", str(meta)]
    assert _cli(tmp_path, "--modes", "baseline", "full", "--runs", "2", "--name", "one",
                *common) == 0
    first = tmp_path / "runs" / "adaptive-loss" / "one"
    units = _units(first)
    base = [u for u in units if u["method"] == "baseline"]
    assert base[0]["test_acc"] > 0.5  # it learns
    assert base[0]["history"] != base[1]["history"]  # the seeds change the outcome
    assert (first / "epochs-full-seed0.csv").read_text().startswith("epoch,")
    assert (first / "weights-full.png").stat().st_size > 0
    saved = torch.load(meta, weights_only=False)
    full = [u for u in units if u["method"] == "full"]
    assert saved["controller"]["prior"] == pytest.approx(
        [sum(u["policy"]["controller"]["prior"][i] for u in full) / 2 for i in range(3)])
    steps_after_one = saved["dqn"]["steps"]
    assert steps_after_one == full[0]["decisions"]

    assert _cli(tmp_path, "--modes", "full", "--runs", "1", "--name", "two", *common) == 0
    second = _units(tmp_path / "runs" / "adaptive-loss" / "two")[0]
    prior = saved["controller"]["prior"]
    assert second["weights_log"][0]["weights"] == pytest.approx([math.exp(m) for m in prior])
    assert torch.load(meta, weights_only=False)["dqn"]["steps"] == 2 * steps_after_one
    diag = second["policy"]["diagnostics"]
    assert diag[0]["epsilon"] < 1.0  # exploration carried on from the first run

    capsys.readouterr()
    assert main(["adaptive-loss", "analyze", str(first)]) == 0
    out = capsys.readouterr().out
    assert "against the baseline" in out and "random policy" in out and "full" in out


def test_vae_end_to_end_with_its_kl_controls(tmp_path):
    assert _cli(tmp_path, "--task", "vae", "--train-size", "600", "--epochs", "2",
                "--modes", "baseline", "--controls", "linear_anneal", "pi_control",
                "--name", "vae") == 0
    run_dir = tmp_path / "runs" / "adaptive-loss" / "vae"
    units = {u["method"]: u for u in _units(run_dir)}
    base = units["baseline"]
    assert len(base["history"]) == 2  # --epochs sets the VAE's recipe too
    assert base["test_neg_elbo"] > 0
    assert base["test_neg_elbo"] == pytest.approx(base["test_recon"] + base["test_kl"])
    assert base["test_bits_per_dim"] == pytest.approx(base["test_neg_elbo"] / (64 * math.log(2)))
    betas = [e["weights"][0] for e in units["linear_anneal"]["weights_log"]]
    assert betas[0] < 0.2 and betas[-1] == 1.0 and betas == sorted(betas)
    assert "bits/dim" in (run_dir / "results.txt").read_text()
