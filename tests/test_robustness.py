"""`thresher robustness` and `thresher corrupt` end to end on offline data, plus CE by hand."""

import json
from pathlib import Path

import numpy as np
import pytest

from thresher.cli import main
from thresher.data import DataError, load
from thresher.data.corrupt import corrupt_dataset
from thresher.studies.robustness import corruption_errors, summarise

ROOT = Path(__file__).resolve().parents[1]


def test_ce_and_relative_ce_by_hand():
    model = summarise(0.9, {"fog": {1: 0.8, 2: 0.6}, "snow": {1: 0.7, 2: 0.7}})
    ref = summarise(0.8, {"fog": {1: 0.6, 2: 0.4}, "snow": {1: 0.7, 2: 0.5}})
    assert model["severity_means"] == {1: pytest.approx(0.75), 2: pytest.approx(0.65)}
    out = corruption_errors(model, ref)
    assert out["ce"]["fog"] == pytest.approx((0.2 + 0.4) / (0.4 + 0.6))
    assert out["ce"]["snow"] == pytest.approx((0.3 + 0.3) / (0.3 + 0.5))
    assert out["mce"] == pytest.approx((0.6 + 0.75) / 2)
    assert out["relative_ce"]["fog"] == pytest.approx((0.6 - 0.2) / (1.0 - 0.4))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    assert main(["-q", "train", "--runs-dir", str(runs), "--name", "base", "--epochs", "2"]) == 0
    return runs


def robustness(runs: Path, *extra: str) -> int:
    return main(["-q", "robustness", "--runs-dir", str(runs), "--corruptions", "contrast",
                 "gaussian_noise", "--severities", "1", "5", *extra])


def test_robustness_reports_every_cell_and_writes_json_png_table(trained, capsys):
    assert robustness(trained, "--run", "train/base", "--name", "r1") == 0
    out = capsys.readouterr().out
    assert "contrast" in out and "clean accuracy" in out
    folder = trained / "robustness" / "r1"
    result = json.loads((folder / "robustness.json").read_text())
    assert set(result["accuracy"]) == {"contrast", "gaussian_noise"}
    assert set(result["accuracy"]["contrast"]) == {"1", "5"}
    assert result["accuracy"]["contrast"]["5"] < result["clean_accuracy"]
    assert (folder / "robustness.png").stat().st_size > 1000
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["metrics"]["mean_accuracy"] == pytest.approx(result["mean_accuracy"])


def test_a_run_as_its_own_reference_has_mce_one(trained, capsys):
    assert robustness(trained, "--run", "train/base", "--name", "r2") == 0
    assert robustness(trained, "--checkpoint", str(trained / "train" / "base" / "model-seed0.pt"),
                      "--reference", "robustness/r2", "--name", "r3") == 0
    result = json.loads((trained / "robustness" / "r3" / "robustness.json").read_text())
    assert result["mce"] == pytest.approx(1.0)
    # relative CE is undefined (null in strict JSON) where corrupting costs the reference nothing
    assert all(v is None or v == pytest.approx(1.0) for v in result["relative_ce"].values())
    assert "CE" in capsys.readouterr().out


def test_a_train_run_as_reference_is_evaluated_on_the_same_splits(trained):
    assert robustness(trained, "--run", "train/base", "--reference", "train/base",
                      "--name", "r4") == 0
    result = json.loads((trained / "robustness" / "r4" / "robustness.json").read_text())
    assert result["mce"] == pytest.approx(1.0) and "partial" not in result


def test_a_reference_without_every_cell_fails_before_work(trained, capsys):
    assert robustness(trained, "--run", "train/base", "--name", "r5") == 0
    assert robustness(trained, "--run", "train/base", "--reference", "robustness/r5",
                      "--corruptions", "fog", "--name", "r6") == 2
    assert "has no accuracy for fog 1, fog 5" in capsys.readouterr().err
    saved = trained / "robustness" / "r5" / "robustness.json"
    saved.write_text(json.dumps({"clean_accuracy": 0.9, "accuracy": {"contrast": {"1": 0.8}}}))
    assert robustness(trained, "--run", "train/base", "--reference", "robustness/r5",
                      "--name", "r7") == 2
    assert "has no accuracy for contrast 5, gaussian_noise 1" in capsys.readouterr().err
    assert not (trained / "robustness" / "r6").exists()  # refused before the run opened


@pytest.mark.parametrize("args, message", [
    ([], "give exactly one of run"),
    (["--run", "x", "--corruptions", "mist"], "corruptions must be one of"),
    (["--run", "x", "--severities", "7"], "severities must be one of"),
    (["--run", "x", "--preset", "tiny"], "preset must be one of 'cifar', 'imagenet'"),
])
def test_bad_robustness_input_fails_before_any_run(tmp_path, capsys, args, message):
    assert main(["robustness", "--runs-dir", str(tmp_path), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "robustness").exists()


def test_corrupt_writes_the_official_layout(tmp_path, capsys):
    out = tmp_path / "synthetic-c"
    assert main(["corrupt", "--dataset", "synthetic", "--out", str(out), "--corruptions",
                 "fog", "pixelate", "--severities", "1", "3"]) == 0
    clean = load("synthetic", "test")
    fog = np.load(out / "fog.npy")
    assert fog.shape == (2 * len(clean), 16, 16, 1) and fog.dtype == np.uint8
    expected = corrupt_dataset(clean, "fog", 3).images.permute(0, 2, 3, 1).numpy()
    assert np.array_equal(fog[len(clean):], expected)
    labels = np.load(out / "labels.npy")
    assert labels.dtype == np.uint8 and np.array_equal(labels[len(clean):], clean.labels.numpy())
    assert sorted(p.name for p in out.iterdir()) == ["fog.npy", "labels.npy", "pixelate.npy"]


def test_corrupt_refuses_bad_names_before_writing(tmp_path, capsys):
    assert main(["corrupt", "--dataset", "synthetic", "--out", str(tmp_path / "o"),
                 "--corruptions", "fgo"]) == 2
    assert "unknown corruption 'fgo'; did you mean 'fog'? choose one of:" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def write_release(data_dir: Path, n: int = 4, dtype=np.uint8) -> np.ndarray:
    """A small stand-in for the published CIFAR-10-C folder: severities 1-5 stacked."""
    folder = data_dir / "CIFAR-10-C"
    folder.mkdir(parents=True)
    images = np.random.default_rng(0).integers(0, 256, (5 * n, 32, 32, 3)).astype(dtype)
    np.save(folder / "fog.npy", images)
    np.save(folder / "labels.npy", np.tile(np.arange(n, dtype=np.uint8), 5))
    return images


def test_published_files_are_read_by_severity_rows(tmp_path):
    images = write_release(tmp_path)
    fog3 = load("cifar10-c:fog:3", "test", data_dir=tmp_path)
    assert np.array_equal(fog3.images.permute(0, 2, 3, 1).numpy(), images[8:12])
    assert fog3.labels.tolist() == [0, 1, 2, 3] and fog3.meta["source"] == "official"
    assert fog3.name == "cifar10-c:fog:3"


def test_malformed_published_files_are_named(tmp_path):
    write_release(tmp_path, dtype=np.float32)
    with pytest.raises(DataError, match=r"fog.npy: expected uint8 \(5 N, H, W, C\)"):
        load("cifar10-c:fog:1", "test", data_dir=tmp_path)


def test_official_source_without_files_or_with_other_constants_fails(trained, capsys):
    assert robustness(trained, "--run", "train/base", "--source", "official") == 2
    assert "no published contrast files for digits" in capsys.readouterr().err
    assert robustness(trained, "--run", "train/base", "--source", "official",
                      "--preset", "imagenet") == 2
    assert "source 'official' means the published files" in capsys.readouterr().err


def test_missing_frost_photos_fail_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("THRESHER_FROST_DIR", str(tmp_path / "empty"))
    assert main(["robustness", "--runs-dir", str(tmp_path), "--run", "x", "--corruptions",
                 "fog", "frost"]) == 2
    assert "frost needs the frost photographs" in capsys.readouterr().err
    assert not (tmp_path / "robustness").exists()
    assert main(["corrupt", "--dataset", "synthetic", "--out", str(tmp_path / "o"),
                 "--corruptions", "fog", "frost"]) == 2
    assert "frost needs the frost photographs" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
