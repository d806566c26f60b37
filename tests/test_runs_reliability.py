"""Nothing is lost: the runs store after moves, kills, full or read-only disks and bad input.

The kill tests run the real CLI in a subprocess and stop it with real signals while it works;
the disk tests make the runs folder read-only under a running process (a tmpfs remounted
read-only, where the test may mount) or fail its writes at the file layer.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from processes import CLI, wait_for
from thresher.cli import main
from thresher.runs.commands import runs_show
from thresher.runs.store import RunStore, StoreError

# three digits seeds, each a unit of a second or two: a signal lands between or inside units
TRAIN = ["train", "--dataset", "digits", "--epochs", "25", "--runs", "3"]


def strict_json(path: Path) -> dict:
    def refuse(token: str) -> None:
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


def make_runs(store: RunStore) -> None:
    for name, acc in (("a", 0.9), ("b", 0.8)):
        with store.start("train", {"lr": acc}, name=name) as run:
            run.unit("seed0", lambda acc=acc: {"acc": acc})
            run.save_results(f"acc {acc}")
            run.metrics = {"acc": acc}


def units(run_dir: Path) -> dict[str, float]:
    """unit file -> modification time (unchanged when a resumed run reads it back)."""
    return {p.name: p.stat().st_mtime_ns for p in (run_dir / "units").glob("*.json")}


def per_seed(run_dir: Path) -> list[float]:
    return [r["test_acc"] for r in json.loads((run_dir / "per_seed.json").read_text())]


# ---------------------------------------------------------------------------------------------
# 1. moved and copied stores


def test_a_moved_store_reads_its_own_folder(tmp_path):
    make_runs(RunStore(tmp_path / "runs_a"))
    shutil.move(tmp_path / "runs_a", tmp_path / "runs_b")
    store = RunStore(tmp_path / "runs_b")
    record = store.get("train/a")
    assert record.status == "completed" and record.path == tmp_path / "runs_b" / "train" / "a"
    shown = runs_show(store, "train/a")
    assert "acc 0.9" in shown and str(tmp_path / "runs_b") in shown


def test_a_copied_store_reads_the_copy_not_the_original(tmp_path):
    make_runs(RunStore(tmp_path / "orig"))
    shutil.copytree(tmp_path / "orig", tmp_path / "copy")
    (tmp_path / "copy" / "train" / "a" / "results.txt").write_text("edited in the copy\n")
    shutil.rmtree(tmp_path / "orig")
    store = RunStore(tmp_path / "copy")
    assert [r.path.parent.parent for r in store.list()] == [tmp_path / "copy"] * 2
    assert "edited in the copy" in runs_show(store, "train/a")


def test_an_index_in_the_old_layout_is_rebuilt_from_the_folders(tmp_path):
    make_runs(RunStore(tmp_path))
    (tmp_path / "thresher.db").unlink()
    con = sqlite3.connect(tmp_path / "thresher.db")  # absolute paths into another folder
    con.execute("CREATE TABLE runs (id TEXT PRIMARY KEY, study TEXT, name TEXT, path TEXT, "
                "status TEXT, started TEXT)")
    con.execute("INSERT INTO runs VALUES ('train/a', 'train', 'a', '/elsewhere/train/a', "
                "'running', '2020')")
    con.commit()
    con.close()
    records = RunStore(tmp_path).list()
    assert sorted((r.id, r.status) for r in records) == [("train/a", "completed"),
                                                         ("train/b", "completed")]


# ---------------------------------------------------------------------------------------------
# 2. finished work survives kills, and a re-run continues it


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> list[float]:
    """Per-seed accuracies of the uninterrupted run that every resumed run must reproduce."""
    root = tmp_path_factory.mktemp("reference")
    subprocess.run([*CLI, *TRAIN, "--runs-dir", str(root), "--name", "ref"], check=True)
    return per_seed(root / "train" / "ref")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL],
                         ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_a_killed_run_keeps_its_finished_seeds_and_resumes_without_repeating(
        tmp_path, reference, sig):
    command = [*CLI, *TRAIN, "--runs-dir", str(tmp_path), "--name", "r"]
    run_dir = tmp_path / "train" / "r"
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(units(run_dir)) >= 1)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    kept = units(run_dir)
    assert 1 <= len(kept) < 3 and "seed0.json" in kept
    status = RunStore(tmp_path).get("train/r").status
    if sig == signal.SIGKILL:
        assert status == "died"
    else:
        assert status == "interrupted" and proc.returncode in (130, 143)
        assert "--resume train/r" in err
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    after = units(run_dir)
    assert {k: after[k] for k in kept} == kept  # read back, not recomputed
    assert len(after) == 3
    assert per_seed(run_dir) == reference  # as if it had never stopped
    summary = strict_json(run_dir / "summary.json")
    assert summary["status"] == "completed" and summary["attempt"] == 2


def test_resume_by_reference_uses_the_runs_own_config(tmp_path, reference, capsys):
    command = [*CLI, *TRAIN, "--runs-dir", str(tmp_path), "--name", "r"]
    proc = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    wait_for(lambda: len(units(tmp_path / "train" / "r")) >= 1)
    proc.kill()
    proc.wait()
    assert main(["train", "--runs-dir", str(tmp_path), "--resume", "r", "--epochs", "3"]) == 2
    assert "drop fit.epochs=3" in capsys.readouterr().err
    assert main(["-q", "train", "--runs-dir", str(tmp_path), "--resume", "r"]) == 0
    assert per_seed(tmp_path / "train" / "r") == reference


def test_a_name_taken_by_another_config_is_refused_before_any_work(tmp_path, capsys):
    assert main(["-q", "train", "--runs-dir", str(tmp_path), "--name", "x", "--epochs", "1"]) == 0
    assert main(["train", "--runs-dir", str(tmp_path), "--name", "x", "--epochs", "2"]) == 2
    assert "different config (fit.epochs: 1 -> 2)" in capsys.readouterr().err
    assert strict_json(tmp_path / "train" / "x" / "summary.json")["config"]["fit"]["epochs"] == 1


def test_active_resumes_method_by_seed(tmp_path):
    command = [*CLI, "active", "--datasets", "digits", "--methods", "margin", "random",
               "--budget", "400", "--runs", "2", "--epochs", "20", "--runs-dir",
               str(tmp_path)]
    subprocess.run([*command, "--name", "ref"], check=True, timeout=300)
    proc = subprocess.Popen([*command, "--name", "r"])
    wait_for(lambda: len(units(tmp_path / "active" / "r")) >= 1)
    proc.kill()
    proc.wait()
    kept = units(tmp_path / "active" / "r")
    assert 1 <= len(kept) < 4
    subprocess.run([*command, "--name", "r"], check=True, timeout=300)
    after = units(tmp_path / "active" / "r")
    assert {k: after[k] for k in kept} == kept and len(after) == 4

    def accuracies(name: str) -> dict:
        results = json.loads((tmp_path / "active" / name / "results.json").read_text())
        return {m: r["per_seed"] for m, r in results["results"]["digits"].items()}

    assert accuracies("r") == accuracies("ref")


def test_double_ctrl_c_still_records_the_run(tmp_path):
    proc = subprocess.Popen([*CLI, "train", "--runs-dir", str(tmp_path), "--name", "long",
                             "--epochs", "100000"], stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (tmp_path / "train" / "long" / "heartbeat").exists())
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.001)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert RunStore(tmp_path).get("long").status == "interrupted"


# ---------------------------------------------------------------------------------------------
# full and read-only disks


class ReadOnlyMount:
    """A small tmpfs that can be switched read-only under a running process (needs root and
    permission to mount); the test is skipped where it cannot be made."""

    def __init__(self, path: Path):
        self.path = path
        path.mkdir()
        if os.geteuid() != 0 or subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(path)],
                capture_output=True).returncode != 0:
            pytest.skip("needs permission to mount a tmpfs")

    def set(self, mode: str) -> None:
        for _ in range(100):  # "busy" while a file there is open for writing: try again
            if subprocess.run(["mount", "-o", f"remount,{mode}", str(self.path)],
                              capture_output=True).returncode == 0:
                return
            time.sleep(0.02)
        raise AssertionError(f"could not remount {self.path} {mode}")

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)


@pytest.fixture
def mount(tmp_path):
    mounted = ReadOnlyMount(tmp_path / "mnt")
    yield mounted
    mounted.close()


def test_a_disk_turning_read_only_mid_run_keeps_the_finished_seeds(mount, reference):
    command = [*CLI, *TRAIN, "--runs-dir", str(mount.path), "--name", "r"]
    run_dir = mount.path / "train" / "r"
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(units(run_dir)) >= 1)
        mount.set("ro")
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1 and "Read-only file system" in err
    assert "unit(s) of work kept" in err and "Traceback" not in err
    kept = units(run_dir)
    assert "seed0.json" in kept
    assert RunStore(mount.path).get("train/r").status == "died"  # read from the read-only disk
    mount.set("rw")
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    assert per_seed(run_dir) == reference


def test_a_write_that_fails_for_lack_of_space_keeps_what_was_done(tmp_path, monkeypatch, capsys):
    import thresher.runs.units as units_module

    write = units_module.atomic_write

    def full_after_first_seed(path, data):
        if "seed1" in Path(path).name:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return write(path, data)

    monkeypatch.setattr(units_module, "atomic_write", full_after_first_seed)
    args = ["-q", "train", "--dataset", "digits", "--epochs", "2", "--runs", "3", "--runs-dir",
            str(tmp_path), "--name", "r"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "1 unit(s) of work kept" in err
    assert list(units(tmp_path / "train" / "r")) == ["seed0.json"]
    monkeypatch.setattr(units_module, "atomic_write", write)
    assert main(args) == 0
    assert len(units(tmp_path / "train" / "r")) == 3


# ---------------------------------------------------------------------------------------------
# 3. read-only, damaged and missing indexes


def test_a_read_only_store_can_be_read_but_not_written(mount, capsys):
    make_runs(RunStore(mount.path))
    mount.set("ro")
    assert main(["runs", "list", "--runs-dir", str(mount.path)]) == 0
    assert "train/a" in capsys.readouterr().out
    assert main(["runs", "show", "train/b", "--runs-dir", str(mount.path)]) == 0
    assert "acc 0.8" in capsys.readouterr().out
    assert main(["train", "--runs-dir", str(mount.path), "--epochs", "1"]) == 2
    assert "is not writable" in capsys.readouterr().err


def test_a_damaged_index_is_rebuilt_from_the_folders(tmp_path, caplog):
    make_runs(RunStore(tmp_path))
    for suffix in ("-wal", "-shm"):
        Path(f"{tmp_path / 'thresher.db'}{suffix}").unlink(missing_ok=True)
    (tmp_path / "thresher.db").write_bytes(b"this is not a database" * 100)
    assert sorted(r.id for r in RunStore(tmp_path).list()) == ["train/a", "train/b"]
    assert "damaged" in caplog.text
    assert list(tmp_path.glob("thresher.db.damaged-*"))  # kept for inspection


def test_a_deleted_index_is_rebuilt_and_reindex_rebuilds_on_request(tmp_path, caplog, capsys):
    make_runs(RunStore(tmp_path))
    for path in tmp_path.glob("thresher.db*"):
        path.unlink()
    assert sorted(r.id for r in RunStore(tmp_path).list()) == ["train/a", "train/b"]
    assert "missing" in caplog.text
    shutil.rmtree(tmp_path / "train" / "b")
    assert main(["runs", "reindex", "--runs-dir", str(tmp_path)]) == 0
    assert "indexed 1 runs" in capsys.readouterr().out


def test_reading_a_mistyped_folder_creates_nothing(tmp_path, capsys):
    assert main(["runs", "list", "--runs-dir", str(tmp_path / "typo")]) == 2
    assert "no runs folder" in capsys.readouterr().err
    assert not (tmp_path / "typo").exists()
    (tmp_path / "empty").mkdir()
    assert main(["runs", "list", "--runs-dir", str(tmp_path / "empty")]) == 0
    assert list((tmp_path / "empty").iterdir()) == []


# ---------------------------------------------------------------------------------------------
# 4. divergence and strict JSON


def test_divergence_is_recorded_as_diverged_not_completed(tmp_path, capsys):
    code = main(["-q", "train", "--runs-dir", str(tmp_path), "--name", "hot", "--epochs", "3",
                 "--lr", "10000"])
    assert code == 3 and "diverged" in capsys.readouterr().err
    summary = strict_json(tmp_path / "train" / "hot" / "summary.json")
    assert summary["status"] == "diverged" and "fit.lr" in summary["error"]


def test_non_finite_metrics_are_written_as_strict_json(tmp_path):
    with RunStore(tmp_path).start("s", {}, name="n") as run:
        run.metrics = {"loss": float("nan"), "best": float("inf"), "ok": 1.5}
    assert strict_json(run.path("summary.json"))["metrics"] == {"loss": None, "best": None,
                                                               "ok": 1.5}


# ---------------------------------------------------------------------------------------------
# 5. died, delete and gc


def test_kill_9_shows_as_died_and_delete_and_gc_tidy_up(tmp_path, capsys):
    proc = subprocess.Popen([*CLI, "train", "--runs-dir", str(tmp_path), "--name", "dead",
                             "--epochs", "100000"])
    wait_for(lambda: (tmp_path / "train" / "dead" / "heartbeat").exists())
    proc.kill()
    proc.wait()
    (tmp_path / "train" / "dead" / ".model-seed0.pt.x1.tmp").write_bytes(b"half")
    make_runs(RunStore(tmp_path))
    assert main(["runs", "list", "--runs-dir", str(tmp_path), "--status", "died"]) == 0
    assert "train/dead" in capsys.readouterr().out
    shutil.rmtree(tmp_path / "train" / "b")  # deleted by hand: its row is stale
    assert main(["runs", "gc", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "removed 1 rows: train/b" in out and ".model-seed0.pt.x1.tmp" in out
    assert main(["runs", "gc", "--runs-dir", str(tmp_path), "--status", "died"]) == 0
    assert not (tmp_path / "train" / "dead").exists()
    assert main(["runs", "delete", "train/a", "--runs-dir", str(tmp_path)]) == 0
    assert not (tmp_path / "train" / "a").exists() and RunStore(tmp_path).list() == []


def test_a_run_killed_before_its_first_record_is_listed_from_its_folder(tmp_path):
    make_runs(RunStore(tmp_path))
    cut_short = tmp_path / "train" / "cut"
    cut_short.mkdir()
    (cut_short / "config.yaml").write_text("seed: 0\n")  # all it wrote before the kill
    listed = {r.id: r.status for r in RunStore(tmp_path).list()}
    assert listed == {"train/a": "completed", "train/b": "completed", "train/cut": "died"}


def test_a_live_run_is_not_deleted_or_resumed_twice(tmp_path):
    store = RunStore(tmp_path)
    run = store.start("s", {}, name="busy")
    with pytest.raises(StoreError, match="still running"):
        store.delete(store.get("busy"))
    code = ("import sys; from thresher.runs.store import RunStore; "
            "RunStore(sys.argv[1]).start('s', {}, name='busy')")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                          text=True)
    assert done.returncode != 0 and "in use by another process" in done.stderr
    run.finish()


# ---------------------------------------------------------------------------------------------
# 6, 8, 9. bad values get one clear line before any work, and leave no run behind


@pytest.mark.parametrize("args, message", [
    (["--seed", str(2**32)], "seed 4294967296 is out of range"),
    (["--seed", str(2**64)], "out of range"),
    (["--seed", str(2**32 - 1), "--runs", "2"], "the last seed is 4294967296"),
    (["--name", "x" * 300], "at most 255 fit"),
])
def test_out_of_range_values_fail_before_any_run(tmp_path, capsys, args, message):
    assert main(["train", "--runs-dir", str(tmp_path), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "train").exists()


def test_runs_dir_that_is_a_file_is_one_clear_error(tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("")
    assert main(["runs", "list", "--runs-dir", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err
    monkeypatch.setenv("THRESHER_RUNS", str(tmp_path / "file"))
    assert main(["train", "--epochs", "1"]) == 2
    assert "is a file" in capsys.readouterr().err


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a CUDA machine")
def test_an_unavailable_device_fails_before_any_run(tmp_path, capsys):
    assert main(["train", "--runs-dir", str(tmp_path), "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert not tmp_path.joinpath("train").exists()


@pytest.mark.parametrize("args, message", [
    (["--budget", "100000"], "budget 100000 is larger than the training split"),
    (["--budget", "2", "--initial-fraction", "0.1"], "initial random set is empty"),
    (["--budget", "12", "--rounds", "20"], "cannot be split into 20 rounds"),
    (["--initial-fraction", "1"], "strictly between 0 and 1"),
])
def test_active_plan_errors_leave_no_run(tmp_path, capsys, args, message):
    assert main(["active", "--runs-dir", str(tmp_path), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "active").exists()


def test_robustness_errors_leave_no_run(tmp_path, capsys):
    quick = ["--corruptions", "gaussian_noise", "--severities", "1"]
    assert main(["robustness", "--runs-dir", str(tmp_path), "--run", "nothing", *quick]) == 2
    assert "no run 'nothing'" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert main(["robustness", "--runs-dir", str(tmp_path), "--checkpoint",
                 str(tmp_path / "junk.pt"), *quick]) == 2
    assert "is not a thresher checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "robustness").exists()


@pytest.mark.data
def test_robustness_refuses_a_model_for_other_images(tmp_path, capsys):
    from thresher.data import DataError, load

    try:
        load("mnist", "test", download=False)
    except DataError:
        pytest.skip("MNIST is not under THRESHER_DATA")
    assert main(["-q", "train", "--runs-dir", str(tmp_path), "--name", "m", "--epochs", "1",
                 "--dataset", "digits"]) == 0
    capsys.readouterr()
    assert main(["robustness", "--runs-dir", str(tmp_path), "--run", "m", "--dataset",
                 "mnist", "--corruptions", "gaussian_noise"]) == 2
    err = capsys.readouterr().err
    assert "takes 1x8x8 images of 10 classes (digits); mnist has 1x28x28 images" in err
    assert not (tmp_path / "robustness").exists()


# ---------------------------------------------------------------------------------------------
# 10. smaller


def test_robustness_warns_about_an_unfinished_train_run(tmp_path, caplog):
    assert main(["-q", "train", "--runs-dir", str(tmp_path), "--name", "m", "--epochs", "1"]) == 0
    summary_path = tmp_path / "train" / "m" / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary_path.write_text(json.dumps({**summary, "status": "interrupted"}))
    assert main(["robustness", "--runs-dir", str(tmp_path), "--run", "m", "--corruptions",
                 "gaussian_noise", "--severities", "1"]) == 0
    assert "run train/m is interrupted, not completed" in caplog.text


def test_threads_are_set_by_flag_and_recorded_with_the_run(tmp_path, capsys):
    import torch

    before = torch.get_num_threads()
    try:
        assert main(["-q", "train", "--runs-dir", str(tmp_path), "--name", "t", "--epochs", "1",
                     "--threads", "1"]) == 0
        assert strict_json(tmp_path / "train" / "t" / "summary.json")["versions"]["threads"] == 1
    finally:
        torch.set_num_threads(before)
    assert main(["train", "--runs-dir", str(tmp_path), "--threads", "-1"]) == 2
    assert "threads must be" in capsys.readouterr().err


@pytest.mark.data
def test_robustness_warns_when_the_dataset_differs_from_the_training_one(tmp_path, caplog):
    from thresher.data import DataError, load

    try:
        load("mnist", "test", download=False)
        load("fashion_mnist", "test", download=False)
    except DataError:
        pytest.skip("MNIST and Fashion-MNIST are not under THRESHER_DATA")
    assert main(["-q", "train", "--runs-dir", str(tmp_path), "--name", "m", "--epochs", "1",
                 "--dataset", "mnist"]) == 0
    assert main(["robustness", "--runs-dir", str(tmp_path), "--run", "m", "--dataset",
                 "fashion_mnist", "--corruptions", "gaussian_noise", "--severities", "1",
                 "--set", "limit=500"]) == 0
    assert "trained on mnist and is evaluated on fashion_mnist" in caplog.text
