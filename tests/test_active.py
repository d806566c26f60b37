"""The active learning study on the offline digits data."""

import json

import pytest
import torch

from thresher.cli import main
from thresher.data import load_splits
from thresher.data.dataset import ArrayDataset
from thresher.data.pipeline import Normalize
from thresher.models import build
from thresher.runs.config import ConfigError, load_config
from thresher.select import STRATEGIES, Context, Oracle
from thresher.studies.active import ActiveConfig, plan


@pytest.fixture(scope="module")
def digits():
    return load_splits("digits")


def test_every_strategy_works_blind_and_only_coreset_queries_labels(digits):
    train, _ = digits
    torch.manual_seed(0)
    model = build("mlp", 10, train.in_shape)
    norm = Normalize.from_dataset(train)
    pool_idx = torch.arange(200, 700)
    hidden = ArrayDataset(train.images[pool_idx], torch.full((500,), -1), train.classes, "pool")
    for name, strategy in STRATEGIES.items():
        oracle = Oracle(train.labels[pool_idx])
        ctx = Context(model, hidden, train.subset(torch.arange(200)), norm, oracle,
                      torch.Generator().manual_seed(0), clusters=12)
        acq = strategy(ctx, 60)
        assert len(acq.indices) == 60 and len(acq.indices.unique()) == 60, name
        assert acq.indices.min() >= 0 and acq.indices.max() < 500, name
        expected = 12 if name == "coreset" else 0
        assert oracle.queried == acq.loss_queries == expected, name
        assert (acq.weights is not None) == (name == "coreset"), name


def test_plan_splits_the_budget_and_rejects_impossible_ones():
    cfg = ActiveConfig(budget=1000, rounds=3)
    assert plan(5000, cfg) == (1000, 200, [267, 267, 266])
    assert plan(700, ActiveConfig())[:2] == (700, 140)  # budget 0: the whole split
    with pytest.raises(ConfigError, match="budget 1000 is larger than the training split"):
        plan(999, cfg)
    with pytest.raises(ConfigError, match="initial_size 50 .* larger than the budget 40"):
        load_config(ActiveConfig, overrides=["budget=40", "initial_size=50"])
    with pytest.raises(ConfigError, match="'kmedoids'"):
        load_config(ActiveConfig, overrides=["methods=[coreset, kmedoids]"])
    with pytest.raises(ConfigError, match="lam must be one of cluster, global"):
        load_config(ActiveConfig, overrides=["lam=huge"])


def test_study_end_to_end_with_rounds_and_seeds(tmp_path, capsys):
    code = main(["-q", "active", "--runs-dir", str(tmp_path), "--name", "al", "--budget", "300",
                 "--methods", "coreset", "margin", "random", "--runs", "2", "--rounds", "2",
                 "--epochs", "10"])
    assert code == 0
    out = capsys.readouterr().out
    assert "coreset" in out and "Δ vs random" in out
    run = tmp_path / "active" / "al"
    results = json.loads((run / "results.json").read_text())["results"]["digits"]
    for method in ("coreset", "margin", "random"):
        curves = results[method]["curves"]
        assert [p["labelled"] for p in curves[0]] == [180, 300]
        assert all(0.3 < p["accuracy"] <= 1 for c in curves for p in c)
    assert results["coreset"]["loss_queries"] > 0 and results["random"]["inferences"] == 0
    # different seeds draw different initial sets: the outcomes differ
    assert len(set(results["random"]["per_seed"])) == 2 or \
        results["random"]["curves"][0] != results["random"]["curves"][1]
    assert (run / "active_learning_results.png").stat().st_size > 1000
    assert (run / "learning_curve.png").stat().st_size > 1000
    assert "± " in (run / "results.txt").read_text()


def test_budget_larger_than_the_data_fails_clearly(tmp_path, capsys):
    code = main(["-q", "active", "--runs-dir", str(tmp_path), "--budget", "5000", "--runs", "1"])
    assert code == 2
    assert "budget 5000 is larger than the training split" in capsys.readouterr().err


def test_dataset_options_reach_every_dataset_loaded(tmp_path):
    """budget 0 means the whole training split: with n=120 synthetic images, 120 get labelled."""
    code = main(["-q", "active", "--runs-dir", str(tmp_path), "--name", "opts", "--datasets",
                 "synthetic", "--methods", "random", "--runs", "1", "--set",
                 "dataset_options={n: 120, num_classes: 4}", "--set", "fit.epochs=1"])
    assert code == 0
    results = json.loads((tmp_path / "active" / "opts" / "results.json").read_text())
    curve = results["results"]["synthetic"]["random"]["curves"][0]
    assert curve[-1]["labelled"] == 120
