"""The `thresher` command end to end on the offline digits data."""

import json

import pytest

from thresher.cli import main
from thresher.runs.store import RunStore


def train(tmp_path, *extra: str) -> int:
    return main(["-q", "train", "--runs-dir", str(tmp_path), "--epochs", "4", *extra])


def test_train_writes_a_complete_run_and_a_store_row(tmp_path, capsys):
    assert train(tmp_path, "--name", "one", "--runs", "2") == 0
    out = capsys.readouterr().out
    assert "mlp on digits" in out and "± " in out
    run_dir = tmp_path / "train" / "one"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["study"] == "train"
    assert summary["config"]["fit"]["epochs"] == 4 and summary["seed"] == 0
    assert {"torch", "numpy", "python"} <= set(summary["versions"])
    accs = summary["metrics"]["test_acc_per_seed"]
    assert len(accs) == 2 and min(accs) > 0.8
    assert (run_dir / "model-seed0.pt").exists() and (run_dir / "model-seed1.pt").exists()
    assert (run_dir / "config.yaml").exists()
    assert (run_dir / "results.txt").read_text() in out and "table" not in summary["metrics"]
    record = RunStore(tmp_path).get("train/one")
    assert record.status == "completed"
    assert record.metrics["test_acc"] == pytest.approx(sum(accs) / 2)


def test_same_seed_same_result_other_seed_other_result(tmp_path):
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        assert train(tmp_path, "--name", name, "--seed", seed) == 0
    loss = {n: json.loads((tmp_path / "train" / n / "per_seed.json").read_text())[0]
            ["history"][-1]["train_loss"] for n in "abc"}
    assert loss["a"] == loss["b"] != loss["c"]


@pytest.mark.parametrize("args, message", [
    (["--set", "fit.lrr=0.1"], "unknown config key 'fit.lrr'; did you mean 'fit.lr'?"),
    (["--dataset", "digitz"], "did you mean 'digits'?"),
    (["--model", "resnet20"], "needs inputs of at least 16x16"),
    (["--augment", "fancy"], "none, standard, strong, cutout"),
    (["--epochs", "-1"], "fit.epochs must be positive"),
])
def test_bad_input_fails_before_any_run_is_created(tmp_path, capsys, args, message):
    assert main(["train", "--runs-dir", str(tmp_path), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "train").exists()


def test_a_data_error_leaves_no_run_behind(tmp_path, capsys):
    code = main(["train", "--runs-dir", str(tmp_path), "--name", "broken", "--dataset",
                 "imagefolder", "--set", f"dataset_options={{root: {tmp_path / 'nothing'}}}"])
    assert code == 2 and "nothing" in capsys.readouterr().err
    assert not (tmp_path / "train").exists()


def test_runs_list_and_show(tmp_path, capsys):
    assert train(tmp_path, "--name", "listed") == 0
    capsys.readouterr()
    assert main(["runs", "list", "--runs-dir", str(tmp_path)]) == 0
    assert "train/listed" in capsys.readouterr().out
    assert main(["runs", "show", "listed", "--runs-dir", str(tmp_path)]) == 0
    shown = capsys.readouterr().out
    assert "test_acc" in shown and "mlp on digits" in shown  # metrics and the result table


@pytest.mark.data
def test_mlp_on_real_mnist_reaches_97_percent_in_two_epochs(tmp_path, capsys):
    from thresher.data import DataError, load

    try:
        load("mnist", "test", download=False)
    except DataError:
        pytest.skip("MNIST files not found under THRESHER_DATA")
    assert main(["-q", "train", "--runs-dir", str(tmp_path), "--name", "mnist", "--dataset",
                 "mnist", "--model", "mlp", "--epochs", "2"]) == 0
    summary = json.loads((tmp_path / "train" / "mnist" / "summary.json").read_text())
    assert summary["metrics"]["test_acc"] >= 0.97


def test_study_help_names_each_value_after_its_flag(capsys):
    with pytest.raises(SystemExit):
        main(["robustness", "--help"])
    text = capsys.readouterr().out
    assert "--run RUN" in text and "--data-dir DATA_DIR" in text and "key:" not in text.lower()


def test_sigterm_records_the_run_as_interrupted(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "thresher.cli", "-q", "train", "--runs-dir",
                             str(tmp_path), "--name", "long", "--epochs", "100000"],
                            stderr=subprocess.PIPE, text=True)
    run_dir = tmp_path / "train" / "long"
    deadline = time.monotonic() + 60
    while not (run_dir / "config.yaml").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # into the training loop
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=60)
    finally:  # never leave a 100000-epoch run behind
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143 and "interrupted" in err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "SIGTERM" in summary["error"]


def test_sigterm_inside_a_finaliser_is_retried_not_swallowed():
    import signal
    import sys

    from thresher.cli import Terminated, _terminate

    def __del__():  # a frame where Python would swallow a raised exception
        return sys._getframe()

    previous = signal.getsignal(signal.SIGALRM)
    try:
        assert _terminate(signal.SIGTERM, __del__()) is None
        assert signal.getsignal(signal.SIGALRM) is _terminate
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 0  # the retry is armed
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    with pytest.raises(Terminated, match="SIGTERM"):
        _terminate(signal.SIGTERM, sys._getframe())


def test_train_size_trains_on_a_stratified_subset_and_refuses_too_many(tmp_path, capsys):
    assert train(tmp_path, "--name", "small", "--train-size", "200") == 0
    summary = json.loads((tmp_path / "train" / "small" / "summary.json").read_text())
    assert summary["metrics"]["train_size"] == 200
    assert train(tmp_path, "--name", "big", "--train-size", "100000") == 2
    assert "train_size 100000 exceeds the" in capsys.readouterr().err
    assert not (tmp_path / "train" / "big").exists()
