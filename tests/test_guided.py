"""`thresher guided`: RL-guided data selection end to end on the bundled digits (errors before
any run, counted compute, the equal-compute controls, seeds, the policy's record and its
random control, resume, the actor-critic policy, GaLore's optimiser bytes, `analyze` merging
the seeds of separate runs)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from thresher.cli import main
from thresher.runs.config import ConfigError
from thresher.select.epoch import EPOCH_STRATEGIES, EpochStats, rank_normalize, score_matrix
from thresher.select.evolve import to_dict, wsum
from thresher.studies.guided.agent import make_state, state_dim
from thresher.studies.guided.report import full_data_compute, matching_compute

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
    assert out["evolution"][0]["search"]["evaluations"] >= 4
    run_dir = tmp_path / "runs" / "guided" / "one"
    text = (run_dir / "results.txt").read_text()
    assert "Δ vs rs2" in text and "Δ vs rs2_equal" in text and "Δ vs infobatch" in text
    for base in ("rs2", "rs2_equal", "infobatch"):
        assert f"policy BEATS {base}" in text or f"policy does NOT beat {base}" in text
    assert "choices per detected phase" in text and "full-data compute at this acc" in text
    for fig in ("accuracy", "compute", "validation", "phases", "strategies"):
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


def test_full_data_price_curve_by_hand():
    units = [{"method": m, "seed": 0, "test_acc": acc, "passes": {"compute": c}}
             for m, acc, c in (("full_equal", 0.5, 1 / 3), ("full_equal_select", 0.6, 2 / 3),
                               ("full", 0.7, 1.0), ("rs2", 0.55, 0.3))]
    curve = full_data_compute(units, 10)
    assert curve == [(0.0, 0.1), (1 / 3, 0.5), (2 / 3, 0.6), (1.0, 0.7)]
    assert matching_compute(curve, 0.55) == pytest.approx(0.5)  # halfway from 1/3 to 2/3
    assert matching_compute(curve, 0.3) == pytest.approx(1 / 6)  # halfway from chance to 0.5
    assert math.isnan(matching_compute(curve, 0.71))  # above plain training's best


def test_random_policy_and_analyze_merging_the_seeds_of_separate_runs(tmp_path, capsys):
    methods = ["rs2", "full", "full_equal", "policy", "policy_random"]
    for seed in (0, 1):  # as `thresher sweep --seeds 0 1` runs them: one run per seed
        assert _cli(tmp_path, "--methods", *methods, "--seed", str(seed), "--runs", "1",
                    "--name", f"s{seed}") == 0
    runs = tmp_path / "runs" / "guided"
    rand = next(u for u in _results(tmp_path, "s1")["units"] if u["method"] == "policy_random")
    assert rand["agent_diagnostics"] == [] and len(set(rand["strategy_usage"])) > 1
    assert all(e["strategy"] in rand["actions"] for e in rand["epochs_log"])
    capsys.readouterr()
    out = tmp_path / "merged"
    assert main(["guided", "analyze", str(runs / "s0"), str(runs / "s1"), "--out",
                 str(out)]) == 0
    text = capsys.readouterr().out
    assert "2 seed(s) [0, 1]" in text and "(p=" in text
    assert "policy BEATS policy_random" in text or "policy does NOT beat policy_random" in text
    assert "the agent against its random control" in text and "phase detector:" in text
    merged = json.loads((out / "digits_results.json").read_text())
    assert sorted((u["method"], u["seed"]) for u in merged["units"]) == sorted(
        (m, s) for m in methods for s in (0, 1))
    assert [s["seed"] for s in merged["evolution"]] == [0, 1]
    assert (out / "results.txt").read_text().strip() == text.strip()
    for fig in ("accuracy", "compute", "validation", "phases", "strategies"):
        assert (out / f"digits_{fig}.png").stat().st_size > 0
    with pytest.raises(SystemExit, match="more than one of the folders"):
        main(["guided", "analyze", str(runs / "s0"), str(runs / "s0")])
    with pytest.raises(SystemExit, match="holds no <experiment>_results.json"):
        main(["guided", "analyze", str(tmp_path)])


def _write_cifar100(folder: Path, n_train: int, n_test: int) -> dict[str, str]:
    """Small files in the official CIFAR-100 python format (pickled dicts of uint8 rows, fine
    and coarse labels, and a meta file); returns their MD5s."""
    import hashlib
    import pickle

    import numpy as np
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    sums = {}
    for name, n in (("train", n_train), ("test", n_test)):
        fine = [i % 100 for i in range(n)]
        blob = pickle.dumps({"filenames": [f"{i}.png" for i in range(n)],
                             "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                             "fine_labels": fine, "coarse_labels": [f // 5 for f in fine]},
                            protocol=2)
        (folder / name).write_bytes(blob)
        sums[f"cifar-100-python/{name}"] = hashlib.md5(blob).hexdigest()
    meta = pickle.dumps({"fine_label_names": [f"class{i:02d}" for i in range(100)],
                         "coarse_label_names": [f"super{i:02d}" for i in range(20)]})
    (folder / "meta").write_bytes(meta)
    sums["cifar-100-python/meta"] = hashlib.md5(meta).hexdigest()
    return sums


def test_cifar100_experiment_reads_the_official_format(tmp_path, monkeypatch):
    """CIFAR-100 is not bundled: its experiment runs from the official python files wherever
    they are present (small ones here, their checksums registered in place of the real
    files')."""
    from thresher.data import fetch
    sums = _write_cifar100(tmp_path / "data" / "cifar-100-python", 500, 200)
    for name, md5 in sums.items():
        monkeypatch.setitem(fetch.CIFAR_MD5, name, md5)
    assert main(["guided", "--experiment", "cifar100", "--data-dir", str(tmp_path / "data"),
                 "--runs-dir", str(tmp_path / "runs"), "--threads", "1", "--runs", "1",
                 "--methods", "rs2", "full", "--epochs", "1", "--train-size", "300",
                 "--set", "val_size=100", "--name", "c100"]) == 0
    out = json.loads((tmp_path / "runs" / "guided" / "c100" / "cifar100_results.json"
                      ).read_text())
    assert out["model"] == "resnet32" and out["num_classes"] == 100
    assert {u["method"]: u["train_rows"] for u in out["units"]} == {"rs2": 300, "full": 300}
    rs2 = next(u for u in out["units"] if u["method"] == "rs2")
    assert rs2["cost"]["train_backward"] == 90  # 30% of 300 rows, one epoch


def _write_cifar10(folder: Path, per_batch: int, n_test: int) -> dict[str, str]:
    """Small files in the official CIFAR-10 python format (five training batches, a test
    batch, batches.meta); returns their MD5s."""
    import hashlib
    import pickle

    import numpy as np
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True)
    sums = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = n_test if name == "test_batch" else per_batch
        labels = [i % 10 for i in range(n)]
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        data[:, :1024] = (np.array(labels)[:, None] * 25).astype(np.uint8)  # red = the class
        blob = pickle.dumps({"data": data, "labels": labels}, protocol=2)
        (folder / name).write_bytes(blob)
        sums[f"cifar-10-batches-py/{name}"] = hashlib.md5(blob).hexdigest()
    meta = pickle.dumps({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog",
                                         "frog", "horse", "ship", "truck"]})
    (folder / "batches.meta").write_bytes(meta)
    sums["cifar-10-batches-py/batches.meta"] = hashlib.md5(meta).hexdigest()
    return sums


def test_corruptions_experiment_scores_every_model_on_cifar10c(tmp_path, monkeypatch, capsys):
    """The CIFAR-10-C evaluation end to end on small official-format CIFAR-10 files (frost's
    photographs replaced by random textures of the same names)."""
    from PIL import Image

    from thresher.data import fetch
    from thresher.data.corrupt.weather import FROST_FILES
    for name, md5 in _write_cifar10(tmp_path / "data" / "cifar-10-batches-py", 100, 60).items():
        monkeypatch.setitem(fetch.CIFAR_MD5, name, md5)
    frost = tmp_path / "frost"
    frost.mkdir()
    g = torch.Generator().manual_seed(0)
    for name in FROST_FILES:
        pixels = torch.randint(0, 256, (200, 200, 3), generator=g, dtype=torch.uint8)
        Image.fromarray(pixels.numpy()).save(frost / name)
    monkeypatch.setenv("THRESHER_FROST_DIR", str(frost))
    assert main(["guided", "--experiment", "corruptions", "--data-dir", str(tmp_path / "data"),
                 "--runs-dir", str(tmp_path / "runs"), "--threads", "1", "--runs", "1",
                 "--methods", "rs2", "full", "--epochs", "1", "--train-size", "300",
                 "--set", "val_size=100", "--set", "corruption_limit=20",
                 "--set", "corruption_severities=[1, 5]", "--name", "c10c"]) == 0
    folder = tmp_path / "runs" / "guided" / "c10c"
    rows = json.loads((folder / "corruption_results.json").read_text())
    assert sorted(r["method"] for r in rows) == ["full", "rs2"]
    for r in rows:
        assert len(r["accuracy"]) == 15
        assert all(set(cells) == {"1", "5"} for cells in r["accuracy"].values())
        accs = [a for cells in r["accuracy"].values() for a in cells.values()]
        assert all(a in [k / 20 for k in range(21)] for a in accs)  # 20 test images a cell
        assert r["mean_accuracy"] == pytest.approx(sum(accs) / len(accs))
    assert (folder / "cifar10_results.json").is_file()
    capsys.readouterr()
    assert main(["guided", "analyze", str(folder)]) == 0
    assert "CIFAR-10-C (15 corruptions" in capsys.readouterr().out
