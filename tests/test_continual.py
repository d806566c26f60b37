"""`thresher continual`: learners, the stream loop, metrics and the CLI."""

import json
import math

import pytest
import torch
from torch import nn

from thresher.cli import main
from thresher.data.dataset import ArrayDataset
from thresher.data.memory import TaskRingBuffer
from thresher.data.pipeline import Normalize
from thresher.models import build
from thresher.runs.config import load_config
from thresher.studies.continual.config import ContinualConfig, OnlineFitConfig
from thresher.studies.continual.learners import AGEM, TaskAgnosticAGEM, build_learner
from thresher.studies.continual.loop import train_stream
from thresher.studies.continual.metrics import (
    average_accuracy,
    average_incremental_accuracy,
    backward_transfer,
    forgetting,
)

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def keep_thread_count():
    """The study sets torch's CPU thread count for its process; give it back after each test."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_closed_form_and_autograd_agem_take_the_same_steps():
    """A-GEM on an MLP (closed-form gradients written into the buffer rows) and on the same MLP
    with autograd forced end with the same weights after steps that project."""
    torch.manual_seed(0)
    x, y = torch.randn(40, 1, 8, 8), torch.randint(0, 4, (40,))
    ends = []
    for closed_form in (True, False):
        model = build("mlp", 4, (1, 8, 8), widths=[16])
        with torch.no_grad():
            for i, p in enumerate(model.parameters()):
                p.copy_(torch.linspace(-0.5, 0.5, p.numel()).reshape(p.shape).roll(i))
        learner = AGEM(model, torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9),
                       TaskRingBuffer(10, (1, 8, 8), torch.device("cpu"),
                                      torch.Generator().manual_seed(0)), 8)
        learner.closed_form = closed_form
        for start in range(0, 40, 5):
            learner.step(x[start:start + 5], (y[start:start + 5] + start // 20) % 4)
            if start == 15:
                learner.end_task()
        assert learner.grads.intact()
        ends.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(ends[0], ends[1], atol=1e-5)


# --- learners and the loop -----------------------------------------------------------------


def tiny_stream(tasks=2, n=60, seed=0):
    """Tasks whose labels depend on a different pixel each: learnable, and they interfere."""
    rng = gen(seed)
    data = []
    for t in range(tasks):
        images = torch.randint(0, 256, (n, 1, 4, 4), dtype=torch.uint8, generator=rng)
        labels = (images[:, 0, t, 0] > 127).long()
        data.append(ArrayDataset(images, labels, ["lo", "hi"], f"task{t}"))
    return data


def test_ta_agem_learns_with_no_boundaries_while_agem_keeps_each_finished_task():
    """TA-A-GEM has no way to be told a task ended (the loop would call ``end_task``, which it
    lacks); it still fills its clustering memory from the bare stream. A-GEM's memory holds the
    samples of every finished task."""
    assert not hasattr(TaskAgnosticAGEM, "end_task") and not TaskAgnosticAGEM.task_aware
    data = tiny_stream(3)
    cfg = ContinualConfig()
    normalize = Normalize((0.5,), (0.25,))
    fit = OnlineFitConfig(batch_size=10, testing_interval=4)
    ta = build_learner("ta-agem", nn.Sequential(nn.Flatten(), nn.Linear(16, 2)), cfg, 2,
                       (1, 4, 4), CPU, 0)
    result = train_stream(ta, data, data, fit, normalize, seed=0)
    assert len(result["R"]) == 3 and 0 < len(ta.memory) <= ta.memory.capacity
    assert set(ta.memory.pool_of) == {0, 1}  # one pool per label, whatever the task

    agem = build_learner("agem", nn.Sequential(nn.Flatten(), nn.Linear(16, 2)), cfg, 2,
                         (1, 4, 4), CPU, 0)
    assert isinstance(agem, AGEM) and agem.task_aware
    train_stream(agem, data, data, fit, normalize, seed=0)
    assert len(agem.memory.past_y) == 3 * 60  # per_task 250 >= 60: all of each finished task


@pytest.mark.parametrize("name", ["naive", "er", "agem", "ta-agem"])
def test_every_learner_learns_the_first_task(name):
    data = tiny_stream(1, n=200)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    fit = OnlineFitConfig(batch_size=10, lr=0.5, epochs=3, testing_interval=20)
    learner = build_learner(name, model, ContinualConfig(fit=fit), 2, (1, 4, 4), CPU, 0)
    result = train_stream(learner, data, data, fit, Normalize((0.5,), (0.25,)), seed=0)
    assert result["R"][0][0] > 0.85
    assert [p["batch"] for p in result["curve"]] == list(range(20, 61, 20))


# --- metrics -------------------------------------------------------------------------------


def test_metrics_by_hand():
    R = [[0.9, 0.1, 0.1],
         [0.7, 0.8, 0.1],
         [0.5, 0.6, 0.9]]
    assert average_accuracy(R) == pytest.approx(2.0 / 3)
    assert forgetting(R) == pytest.approx(((0.9 - 0.5) + (0.8 - 0.6)) / 2)
    assert backward_transfer(R) == pytest.approx(((0.5 - 0.9) + (0.6 - 0.8)) / 2)
    # seen-task accuracy after each phase: 0.9, (0.7 + 0.8) / 2, (0.5 + 0.6 + 0.9) / 3
    assert average_incremental_accuracy(R) == pytest.approx((0.9 + 0.75 + 2.0 / 3) / 3)
    assert math.isnan(forgetting([[0.9, 0.8]])) and math.isnan(backward_transfer([[0.9]]))
    assert math.isnan(average_incremental_accuracy([[0.9, 0.8]]))


# --- config, CLI, tracking -----------------------------------------------------------------


@pytest.mark.parametrize("overrides, message", [
    (["learners=[naive, ta_agem]"], "did you mean 'ta-agem'"),
    (["memory.removal=newest"], "memory.removal must be one of 'oldest', 'mean', 'random'"),
    (["stream.kind=class_split", "stream.tasks=3"], "3 tasks do not divide them"),
    (["memory.clusters=0"], "memory.clusters must be > 0"),
    (["fit.optimizer=lbfgs"], "fit.optimizer must be one of"),
])
def test_bad_config_is_refused_with_the_choices(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(ContinualConfig, overrides=overrides)


def test_mlflow_without_the_package_fails_before_any_work(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ValueError, match=r"pip install 'thresher\[mlflow\]'"):
        load_config(ContinualConfig, overrides=["track=mlflow"])


def continual(tmp_path, *extra: str) -> int:
    return main(["-q", "continual", "--runs-dir", str(tmp_path), "--lite",
                 "--set", "fit.testing_interval=5", "--set", "fit.lr=0.05", *extra])


def test_cli_run_writes_metrics_curves_and_compare_stats_read_them(tmp_path, capsys):
    assert continual(tmp_path, "--name", "a", "--runs", "2",
                     "--learners", "naive", "joint", "ta-agem") == 0
    out = capsys.readouterr().out
    assert "average accuracy (%)" in out and "Δ vs naive" in out and "forgetting (%)" in out
    run_dir = tmp_path / "continual" / "a"
    summary = json.loads((run_dir / "summary.json").read_text())
    metrics = summary["metrics"]
    assert "table" not in metrics and (run_dir / "results.txt").read_text() in out
    assert metrics["tasks"] == 2 and set(metrics["learners"]) == {"naive", "joint", "ta-agem"}
    ta = [r for r in metrics["runs"] if r["learner"] == "ta-agem"]
    assert len(ta) == 2 and len(ta[0]["R"]) == 2 and len(ta[0]["R"][0]) == 2
    assert all(p["memory"] <= 10 * 3 * 10 for p in ta[0]["curve"])
    assert len(ta[0]["phase_seconds"]) == 2
    joint = [r for r in metrics["runs"] if r["learner"] == "joint"][0]
    assert len(joint["R"]) == 1 and joint["forgetting"] is None  # undefined: null in JSON
    assert (run_dir / "curves.png").stat().st_size > 1000

    assert continual(tmp_path, "--name", "b", "--learners", "naive", "--stream", "rotation") == 0
    capsys.readouterr()
    assert main(["continual", "compare", str(run_dir), str(tmp_path / "continual" / "b"),
                 "--runs-dir", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "digits permutation x2" in table and "digits rotation x2" in table
    assert main(["continual", "stats", "--last", "1", str(tmp_path / "continual")]) == 0
    assert "1 runs: b" in capsys.readouterr().out
    assert main(["continual", "stats", str(run_dir)]) == 2
    assert "is one run" in capsys.readouterr().err


def test_same_seed_same_results(tmp_path):
    for name in ("x", "y"):
        assert continual(tmp_path, "--name", name, "--learners", "er", "agem") == 0
    runs = [json.loads((tmp_path / "continual" / n / "summary.json").read_text())
            ["metrics"]["runs"] for n in ("x", "y")]
    assert [r["R"] for r in runs[0]] == [r["R"] for r in runs[1]]


def test_mlflow_local_store_holds_every_learner_and_seed(tmp_path, monkeypatch):
    """The real package, where installed (the `mlflow` extra): runs written to the default
    local store and read back through MLflow's own client."""
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)
    assert continual(tmp_path, "--learners", "naive", "ta-agem", "--runs", "2", "--track",
                     "mlflow", "--name", "m") == 0
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("thresher-continual")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == ["m-naive-seed0", "m-naive-seed1", "m-summary", "m-ta-agem-seed0",
                            "m-ta-agem-seed1"]
    summary = runs.pop("m-summary")
    assert "curves.png" in [a.path for a in client.list_artifacts(summary.info.run_id)]
    for r in runs.values():
        assert 0 <= r.data.metrics["average_accuracy"] <= 1
        assert {"final_accuracy", "forgetting", "bwt"} <= set(r.data.metrics)
        assert r.data.params["learner"] in ("naive", "ta-agem")
        assert r.data.params["fit.lr"] == "0.05"
        history = client.get_metric_history(r.info.run_id, "overall_accuracy")
        assert len(history) >= 2 and history[0].step < history[-1].step
    assert {"overall_accuracy", "loss", "memory_size", "learning_rate", "task_0_accuracy",
            "task_1_accuracy"} <= set(runs["m-naive-seed1"].data.metrics)


# --- lite ----------------------------------------------------------------------------------


def test_lite_fills_in_only_what_is_left_unset():
    from thresher.studies.continual.config import LITE_EPOCHS, LITE_LR, LITE_TASKS

    lite = load_config(ContinualConfig, overrides=["lite=true"])
    assert (lite.num_tasks, lite.train_per_task, lite.test_per_task) == (LITE_TASKS, 1000, 500)
    assert (lite.effective_fit.epochs, lite.effective_fit.lr) == (LITE_EPOCHS, LITE_LR)
    assert lite.fit == OnlineFitConfig()  # the config as given is left alone
    given = load_config(ContinualConfig, overrides=[
        "lite=true", "stream.tasks=4", "stream.train_per_task=3000", "fit.epochs=2",
        "fit.lr=0.05"])
    assert (given.num_tasks, given.train_per_task, given.test_per_task) == (4, 3000, 500)
    assert (given.effective_fit.epochs, given.effective_fit.lr) == (2, 0.05)
    paper = load_config(ContinualConfig)
    assert (paper.num_tasks, paper.train_per_task, paper.test_per_task) == (10, None, None)
    assert paper.effective_fit == OnlineFitConfig(epochs=1, lr=1e-3)


def test_lite_on_digits_learns_and_naive_forgets_what_agem_and_joint_keep():
    """The quick check must show something: under lite's settings on the built-in digits,
    fine-tuning forgets the first task while A-GEM and joint training keep most of it."""
    import dataclasses

    from thresher.data.streams import make_stream
    from thresher.studies.common import load_data

    cfg = load_config(ContinualConfig, overrides=["lite=true"])
    cfg = dataclasses.replace(cfg, fit=cfg.effective_fit)
    torch.set_num_threads(1)
    train, test = load_data("digits", None, CPU)
    normalize = Normalize.from_dataset(train)
    tasks = make_stream("permutation", train, test, cfg.num_tasks, seed=0,
                        train_per_task=cfg.train_per_task, test_per_task=cfg.test_per_task)
    joined = ArrayDataset(torch.cat([t.train.images for t in tasks]),
                          torch.cat([t.train.labels for t in tasks]), train.classes, "joint")
    result = {}
    for name, phases in (("naive", [t.train for t in tasks]), ("agem", [t.train for t in tasks]),
                         ("joint", [joined])):
        torch.manual_seed(0)
        model = build("mlp", 10, train.in_shape, widths=[200])
        learner = build_learner(name, model, cfg, 10, train.in_shape, CPU, 0)
        result[name] = train_stream(learner, phases, [t.test for t in tasks], cfg.fit,
                                    normalize, seed=0)
    assert result["naive"]["R"][0][0] > 0.8  # it learned the first task, then
    assert result["naive"]["forgetting"] > 0.05  # lost much of it
    assert result["agem"]["forgetting"] < result["naive"]["forgetting"] - 0.03
    assert result["naive"]["avg_acc"] < result["agem"]["avg_acc"] - 0.02
    assert result["naive"]["avg_acc"] < result["joint"]["avg_acc"] - 0.02
