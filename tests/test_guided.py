"""`thresher guided`: RL-guided data selection end to end on the bundled digits (errors before
any run, counted compute, full_equal's epochs, seeds, the policy's record, resume, the
actor-critic policy, GaLore's optimiser bytes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from thresher.cli import main
from thresher.runs.config import ConfigError
from thresher.select.epoch import EPOCH_STRATEGIES, EpochStats, rank_normalize, score_matrix
from thresher.select.evolve import to_dict, wsum
from thresher.studies.guided.agent import make_state, state_dim

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--threads", "1", "--set", "val_size=300", "--train-size", "600", "--epochs", "4",
        "--set", "fit.batch_size=32", "--set", "evolve.population=4",
        "--set", "evolve.generations=1", "--set", "evolve.proxy_train_size=200",
        "--set", "evolve.proxy_epochs=2",
        "--set", "phases={lag: 3, calibration: 10, refractory: 5}"]


def _cli(tmp_path: Path, *args: str) -> int:
    return main(["guided", "--dataset", "digits", "--runs-dir", str(tmp_path / "runs"), *TINY,
                 *args])


def _results(tmp_path: Path, name: str) -> dict:
    return json.loads((tmp_path / "runs" / "guided" / name / "digits_results.json").read_text())


@pytest.mark.parametrize("args,message", [
    (["--methods", "rs2", "polcy"], "did you mean 'policy'"),
    (["--policy", "bandits"], "did you mean 'bandit'"),
    (["--policy", "fixed:el2m"], "did you mean 'el2n'"),
    (["--budget", "1.5"], "budget must be a fraction in (0, 1]"),
    (["--budget", "5000"], "budget=5000"),
    (["--set", "val_size=1400"], "exceeds the 1437 training images"),
    (["--experiment", "cifar100", "--set", "dataset=null", "--set", "model=mlp",
      "--data-dir", "NODATA"], "only where its files are present"),
])
def test_bad_input_fails_before_any_run_exists(tmp_path, capsys, args, message):
    args = [str(tmp_path / "nodata") if a == "NODATA" else a for a in args]
    with pytest.raises((SystemExit, ConfigError)):
        if _cli(tmp_path, *args):
            raise SystemExit(2)
    assert message in capsys.readouterr().err
    assert not list((tmp_path / "runs").glob("guided/*"))


def test_expression_strategy_reads_the_expression_from_state():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(20, 3, generator=g), 1)
    labels = torch.randint(3, (20,), generator=g)
    stats = EpochStats(20, labels, probs, -probs.gather(1, labels[:, None])[:, 0].log(),
                       torch.randn(20, 4, generator=g), forward_passes=20)
    expr = wsum(0.5, "el2n", "margin")
    sel = EPOCH_STRATEGIES["expression"](stats, 5, torch.Generator().manual_seed(1),
                                         {"expression": to_dict(expr)})
    scores = score_matrix(stats, ["el2n", "margin"])
    combined = rank_normalize(0.5 * scores["el2n"] + 0.5 * scores["margin"])
    assert set(sel.indices.tolist()) == set(torch.topk(combined, 5).indices.tolist()) \
        or combined.sort(descending=True).values[4] == combined.sort(descending=True).values[5]
    assert sel.forward_passes == 20
    state = make_state({"z": {"alignment": float("inf"), "grad_norm": 9.0, "utility": None},
                        "signals": {"loss_change": -3.0}}, 2, 4, 0.5)
    assert state.shape == (state_dim(4),) and bool(torch.isfinite(state).all())
    assert state[:5].tolist() == [5.0, 0.0, 0.0, 0.0, -1.0] and state[5 + 2] == 1.0


def test_end_to_end_on_digits_counts_compute_and_resumes(tmp_path, capsys):
    methods = ["policy", "rs2", "infobatch", "full", "full_equal", "full_equal_select",
               "rs2_equal", "discovered"]
    assert _cli(tmp_path, "--methods", *methods, "--runs", "2", "--name", "one") == 0
    out = _results(tmp_path, "one")
    units = out["units"]
    assert {u["method"] for u in units} == set(methods) and len(units) == 16
    n, epochs = 600, 4
    for u in units:
        for key in ("test_acc", "best_val_acc", "final_val_acc", "seconds", "passes",
                    "strategy_usage", "phases", "optimizer"):
            assert key in u
        assert len(u["val_curve"]) == u["epochs"]
        assert "steps" in u["phases"] and "transitions" in u["phases"]
    rs2 = [u for u in units if u["method"] == "rs2"]
    for u in rs2:  # budget x N rows each epoch, the last partial batch (180 = 5 x 32 + 20) kept
        assert u["cost"]["train_backward"] == 180 * epochs
        assert u["cost"]["select_forward"] == 0
    disc = [u for u in units if u["method"] == "discovered"][0]
    assert disc["cost"]["select_forward"] == epochs * n  # one scoring pass per epoch
    assert disc["passes"]["train_backward"] == pytest.approx(rs2[0]["passes"]["train_backward"])
    full = [u for u in units if u["method"] == "full"][0]
    assert full["passes"]["train_backward"] > 3.5
    # equal compute, by hand: RS2 costs 0.3 x 4 = 1.2 epochs -> full_equal trains 1; a scoring
    # strategy adds 4 selection passes of 1/3 epoch: 2.53 -> full_equal_select trains 3, and
    # rs2_equal trains 2.53 / 4 = 63.3% of the rows (380 of 600) every epoch
    for u in units:
        want = {"full_equal": 1, "full_equal_select": 3}.get(u["method"], epochs)
        assert u["epochs"] == want
        if u["method"] in ("full_equal", "full_equal_select"):
            assert u["passes"]["compute"] == pytest.approx(want)
    req = next(u for u in units if u["method"] == "rs2_equal")
    assert req["cost"]["train_backward"] == 380 * epochs
    assert req["passes"]["compute"] == pytest.approx(disc["passes"]["compute"], rel=0.01)
    assert rs2[0]["val_curve"] != rs2[1]["val_curve"]  # the seeds change the outcome
    policy = [u for u in units if u["method"] == "policy"]
    for u in policy:
        log = u["epochs_log"]
        assert all(e["strategy"] in u["actions"] for e in log)
        assert log[0]["reward"] is None and all(e["reward"] is not None for e in log[1:])
        assert "final_reward" in log[-1] and all("phase" in e for e in log)
        assert any(a.startswith("discovered:") for a in u["actions"])
    assert out["evolution"]["search"]["evaluations"] >= 4
    run_dir = tmp_path / "runs" / "guided" / "one"
    text = (run_dir / "results.txt").read_text()
    assert "against rs2" in text and "against infobatch" in text
    assert "the policy" in text and "preferences per phase" in text
    for fig in ("accuracy", "validation", "phases", "strategies"):
        assert (run_dir / f"digits_{fig}.png").stat().st_size > 0

    stamps = {p.name: (p.stat().st_mtime_ns, p.read_text())
              for p in (run_dir / "units").iterdir()}
    assert _cli(tmp_path, "--methods", *methods, "--runs", "2", "--name", "one") == 0
    assert {p.name: (p.stat().st_mtime_ns, p.read_text())
            for p in (run_dir / "units").iterdir()} == stamps  # nothing recomputed


def test_actor_critic_and_galore(tmp_path):
    assert _cli(tmp_path, "--methods", "policy", "rs2", "--policy", "actor_critic",
                "--optimizer", "galore", "--set", "evolve.top_k=1", "--name", "ac") == 0
    units = _results(tmp_path, "ac")["units"]
    policy = next(u for u in units if u["method"] == "policy")
    assert len(policy["actions"]) == 8 and policy["agent_diagnostics"]
    for u in units:
        opt = u["optimizer"]
        assert opt["state_bytes"] < opt["adamw_state_bytes"]


def test_fixed_policy_uses_its_strategy(tmp_path):
    assert _cli(tmp_path, "--methods", "policy", "--policy", "fixed:rs2", "--select-every", "2",
                "--set", "evolve.top_k=1", "--name", "fx") == 0
    policy = _results(tmp_path, "fx")["units"][0]
    assert policy["strategy_usage"] == {"rs2": 4}
    log = policy["epochs_log"]
    assert [e["new_selection"] for e in log] == [True, False, True, False]
    assert log[2]["reward"] is not None and log[3]["reward"] is None
    assert policy["passes"]["train_backward"] <= 0.3 * 4
