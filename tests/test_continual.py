"""`thresher continual`: A-GEM projection, memories, learners, metrics and the CLI."""

import inspect
import json
import math
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from thresher.cli import main
from thresher.data.dataset import ArrayDataset
from thresher.data.pipeline import Normalize
from thresher.models import build
from thresher.runs.config import dump_yaml, load_config
from thresher.studies.continual.agem import FlatGrad, project
from thresher.studies.continual.config import ContinualConfig, OnlineFitConfig, SchedulerConfig
from thresher.studies.continual.learners import (AGEM, LossSpikeScheduler, TaskAgnosticAGEM,
                                                 build_learner)
from thresher.studies.continual.loop import train_stream
from thresher.studies.continual.memory import ClusteringMemory, ReservoirMemory, TaskRingBuffer
from thresher.studies.continual.metrics import (average_accuracy, average_incremental_accuracy,
                                                backward_transfer, forgetting)
from thresher.studies.continual.track import MlflowTracker

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def keep_thread_count():
    """The study sets torch's CPU thread count for its process; give it back after each test."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- A-GEM projection ----------------------------------------------------------------------


def test_projection_by_hand():
    g = project(torch.tensor([[1.0, 0.0], [-1.0, 1.0]]))
    # g.g_ref = -1, |g_ref|^2 = 2: g - (-1/2) g_ref = (0.5, 0.5), now orthogonal to g_ref
    assert g.tolist() == [0.5, 0.5]


def test_projection_never_increases_the_memory_loss_to_first_order():
    rng = gen(1)
    for _ in range(200):
        grads = torch.randn(2, 50, generator=rng)
        g_ref, before = grads[1], grads[0].clone()
        out = project(grads)
        assert torch.dot(out, g_ref) >= -1e-4
        if torch.dot(before, g_ref) >= 0:
            assert torch.equal(out, before)  # agreeing gradients are left bit-for-bit alone


def test_flat_grad_writes_the_projection_where_the_optimizer_reads_it():
    model = nn.Linear(3, 2)
    grads = FlatGrad(model.parameters(), rows=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    before = [p.detach().clone() for p in model.parameters()]
    grads.zero()
    model(torch.ones(4, 3)).sum().backward()
    assert torch.equal(grads.flat[:6], torch.full((6,), 4.0))  # backward lands in the vector
    grads.buffer[1] = -grads.flat
    grads.buffer[1, 0] = 1.0
    project(grads.buffer)
    expected = grads.flat.clone()
    optimizer.step()
    step = torch.cat([(b - p.detach()).flatten() for b, p in zip(before, model.parameters())])
    assert torch.allclose(step, 0.5 * expected)
    momentum = torch.cat([optimizer.state[p]["momentum_buffer"].flatten()
                          for p in model.parameters()])
    assert torch.allclose(momentum, expected)  # the optimiser saw the projected gradient
    assert grads.intact()


# --- memories ------------------------------------------------------------------------------


def clustering(pools=3, q=4, p=2, removal="oldest", shape=(1,)) -> ClusteringMemory:
    return ClusteringMemory(pools, q, p, shape, CPU, gen(), removal, seed=0, num_labels=10)


def contents(memory: ClusteringMemory) -> list[float]:
    x, _ = memory.sample(10_000)
    return sorted(x.flatten().tolist())


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


def test_clustering_memory_never_exceeds_q_p_pools_and_routes_by_label():
    memory = clustering(pools=3, q=4, p=2, shape=(5,))
    rng = gen(2)
    for i in range(500):
        memory.offer(torch.randn(5, generator=rng), torch.tensor(i % 10))
        assert len(memory) <= 4 * 2 * 3 == memory.capacity
    assert len(memory) == memory.capacity
    assert set(memory.pool_of) == {0, 1, 2}  # labels 3..9 found every pool taken
    for label, pool in memory.pool_of.items():
        assert set(memory.y[pool].flatten().tolist()) == {label}
    assert memory.pool_sizes() == {0: 8, 1: 8, 2: 8}
    x, y = memory.sample(5)
    assert x.shape == (5, 5) and len(set(y.tolist())) >= 1


def test_new_clusters_open_until_q_then_samples_join_the_nearest_mean():
    memory = clustering(pools=1, q=2, p=5)
    for value in (0.0, 100.0, 1.0, 99.0, 2.0):
        memory.offer(torch.tensor([value]), torch.tensor(7))
    assert memory.counts.tolist() == [[3, 2]]
    assert memory.means[0, :, 0].tolist() == [1.0, 99.5]


@pytest.mark.parametrize("removal, kept", [("oldest", [1.0, 10.0]), ("mean", [0.0, 1.0])])
def test_a_full_cluster_drops_by_its_policy_and_keeps_the_newcomer(removal, kept):
    memory = clustering(pools=1, q=1, p=2, removal=removal)
    for value in (0.0, 10.0, 1.0):  # mean with the newcomer: 11/3; farthest old sample: 10
        memory.offer(torch.tensor([value]), torch.tensor(0))
    assert contents(memory) == kept
    assert memory.sums[0, 0].item() == sum(kept)


def test_random_removal_keeps_the_newcomer_and_the_size():
    memory = clustering(pools=1, q=1, p=3, removal="random")
    for value in range(20):
        memory.offer(torch.tensor([float(value)]), torch.tensor(0))
        assert float(value) in contents(memory)
    assert len(memory) == 3


def test_reservoir_fills_in_order_then_stays_at_capacity():
    memory = ReservoirMemory(4, (1,), CPU, gen())
    memory.add(torch.arange(3.0).view(3, 1), torch.arange(3))
    assert sorted(memory.sample(100)[1].unique().tolist()) == [0, 1, 2]
    for start in range(3, 200, 7):
        memory.add(torch.arange(start, start + 7.0).view(7, 1), torch.arange(start, start + 7))
        assert len(memory) == 4
    stored = memory.y[:4]
    assert torch.equal(memory.x[:4, 0].long(), stored) and len(stored.unique()) == 4


def test_ring_buffer_keeps_the_last_samples_of_each_finished_task():
    memory = TaskRingBuffer(5, (1,), CPU, gen())
    memory.add(torch.arange(7.0).view(7, 1), torch.arange(7))
    assert memory.sample(3) is None  # nothing from a finished task yet
    memory.end_task()
    x, y = memory.sample(100)
    assert sorted(y.tolist()) == [2, 3, 4, 5, 6] and len(memory) == 5
    assert len(memory.sample(2)[1].unique()) == 2
    for start in range(0, 6, 2):  # batches of 2 into 5 slots: the third wraps around
        memory.add(torch.arange(start, start + 2.0).view(2, 1), torch.arange(start, start + 2))
    memory.end_task()
    assert sorted(memory.past_y[5:].tolist()) == [1, 2, 3, 4, 5]


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


def test_ta_agem_sees_batches_only_and_agem_gets_task_boundaries():
    assert list(inspect.signature(TaskAgnosticAGEM.step).parameters) == ["self", "x", "y"]
    assert not hasattr(TaskAgnosticAGEM, "end_task") and not TaskAgnosticAGEM.task_aware
    calls = []

    class Spy(TaskAgnosticAGEM):
        def step(self, *args, **kwargs):
            calls.append((len(args), sorted(kwargs), [type(a) for a in args]))
            return super().step(*args, **kwargs)

    data = tiny_stream(3)
    cfg = ContinualConfig()
    learner = build_learner("ta-agem", nn.Sequential(nn.Flatten(), nn.Linear(16, 2)), cfg, 2,
                            (1, 4, 4), CPU, 0)
    learner.__class__ = Spy
    attributes = set(vars(learner))
    normalize = Normalize((0.5,), (0.25,))
    fit = OnlineFitConfig(batch_size=10, testing_interval=4)
    train_stream(learner, data, data, fit, normalize, seed=0)  # end_task would raise
    assert calls == [(2, [], [torch.Tensor, torch.Tensor])] * 18
    assert set(vars(learner)) == attributes  # nothing was slipped in on the side

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


def test_loss_spike_scheduler_decays_on_plateau_and_resets_on_spike():
    sched = LossSpikeScheduler(0.1, SchedulerConfig(factor=0.5, patience=2, spike=1.0))
    lrs = [sched.step(loss) for loss in [1.0, 1.0, 1.0, 1.0]]
    assert lrs == [0.1, 0.1, 0.1, 0.05]  # 3 batches without improvement > patience 2
    lrs = [sched.step(loss) for loss in [5.0, 5.0, 5.0]]
    assert lrs[-1] == 0.1 and sched.best == 5.0  # a sustained spike restores the first rate


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


def test_default_yaml_matches_the_dataclass_defaults():
    path = ROOT / "configs" / "continual" / "default.yaml"
    assert path.read_text() == dump_yaml(ContinualConfig())


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


def test_mlflow_tracker_logs_points_and_final_scores(monkeypatch):
    logged = []
    fake = types.SimpleNamespace(
        set_tracking_uri=lambda uri: logged.append(("uri", uri)),
        set_experiment=lambda name: logged.append(("experiment", name)),
        start_run=lambda run_name: logged.append(("start", run_name)),
        log_params=lambda params: logged.append(("params", params["learner"])),
        log_metrics=lambda metrics, step=None: logged.append(("metrics", step, metrics)),
        end_run=lambda: logged.append(("end",)))
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    tracker = MlflowTracker(ContinualConfig(), "r1", "file:mlruns")
    tracker.start("ta-agem", 3)
    tracker.point({"batch": 100, "seen": 0.8, "loss": 0.5, "memory": 30, "lr": 1e-3,
                   "accuracy": [0.9, 0.7]})
    tracker.finish({"R": [[0.9, 0.7]], "avg_acc": 0.8, "inc_acc": math.nan,
                    "forgetting": math.nan, "bwt": math.nan, "seconds_per_task": 1.0})
    assert ("start", "r1-ta-agem-seed3") in logged and ("params", "ta-agem") in logged
    step_metrics = [m for m in logged if m[0] == "metrics" and m[1] == 100][0][2]
    assert step_metrics["task_1_accuracy"] == 0.7 and step_metrics["memory_size"] == 30
    final = [m for m in logged if m[0] == "metrics" and m[1] is None][0][2]
    assert final["average_accuracy"] == 0.8 and "forgetting" not in final
    assert logged[-1] == ("end",)


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
    assert metrics["tasks"] == 2 and set(metrics["learners"]) == {"naive", "joint", "ta-agem"}
    ta = [r for r in metrics["runs"] if r["learner"] == "ta-agem"]
    assert len(ta) == 2 and len(ta[0]["R"]) == 2 and len(ta[0]["R"][0]) == 2
    assert all(p["memory"] <= 10 * 3 * 10 for p in ta[0]["curve"])
    assert len(ta[0]["phase_seconds"]) == 2
    joint = [r for r in metrics["runs"] if r["learner"] == "joint"][0]
    assert len(joint["R"]) == 1 and math.isnan(joint["forgetting"])
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
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == [
        "m-naive-seed0", "m-naive-seed1", "m-ta-agem-seed0", "m-ta-agem-seed1"]
    for r in runs:
        assert 0 <= r.data.metrics["average_accuracy"] <= 1
        assert r.data.params["learner"] in ("naive", "ta-agem")
        history = client.get_metric_history(r.info.run_id, "overall_accuracy")
        assert len(history) >= 2 and history[0].step < history[-1].step
