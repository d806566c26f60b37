"""`load_corrupted`, the one place a corrupted split is resolved: the published release files
(written here in their layout, a few images per severity) or generated from the clean split."""

from pathlib import Path

import numpy as np
import pytest
import torch

from thresher.data import ArrayDataset, DataError, load
from thresher.data.corrupt import corrupt_dataset
from thresher.data.corrupted import load_corrupted
from thresher.data.sources import get_source

N = 4  # images per severity


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.delenv("THRESHER_DATA", raising=False)
    monkeypatch.setenv("THRESHER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "data"


def write_release(data_dir: Path) -> np.ndarray:
    """``CIFAR-10-C/fog.npy`` (severities 1-5 stacked, NHWC uint8) and ``labels.npy``."""
    folder = data_dir / "CIFAR-10-C"
    folder.mkdir(parents=True)
    images = np.random.default_rng(0).integers(0, 256, (5 * N, 32, 32, 3), dtype=np.uint8)
    np.save(folder / "fog.npy", images)
    np.save(folder / "labels.npy", np.tile(np.arange(N, dtype=np.uint8), 5))
    return images


def clean_split(n: int = N) -> ArrayDataset:
    """A stand-in for the clean CIFAR-10 test split (absent from the test's data folder)."""
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(1))
    return ArrayDataset(images, torch.arange(n) % 10, [f"c{i}" for i in range(10)], "cifar10")


def nhwc(data: ArrayDataset) -> np.ndarray:
    return data.images.permute(0, 2, 3, 1).numpy()


def test_published_rows_are_read_when_present(data_dir):
    images = write_release(data_dir)
    fog = load_corrupted("cifar10", "fog", 2, data_dir=data_dir, clean=clean_split())
    assert fog.meta["source"] == "official" and np.array_equal(nhwc(fog), images[N:2 * N])
    assert fog.classes == clean_split().classes  # named after the clean split's classes
    some = load_corrupted("cifar10", "fog", 2, data_dir=data_dir, clean=clean_split(),
                          rows=torch.tensor([3, 1]))
    assert np.array_equal(nhwc(some), images[[N + 3, N + 1]])
    by_name = load("cifar10-c:fog:2", "test", data_dir=data_dir)
    assert np.array_equal(nhwc(by_name), images[N:2 * N]) and by_name.classes[0] == "0"


def test_other_settings_or_source_generated_ignore_the_published_files(data_dir):
    images = write_release(data_dir)
    clean = clean_split()
    for settings in ({"source": "generated"}, {"seed": 1}, {"preset": "imagenet"}):
        out = load_corrupted("cifar10", "fog", 2, data_dir=data_dir, clean=clean, **settings)
        expected = corrupt_dataset(clean, "fog", 2, settings.get("preset", "cifar"),
                                   settings.get("seed", 0))
        assert out.meta["source"] == "generated" and torch.equal(out.images, expected.images)
        assert not np.array_equal(nhwc(out), images[N:2 * N])


def test_absent_files_mean_generated_rows_drawn_for_the_rows_alone(data_dir):
    clean, rows = clean_split(6), torch.tensor([0, 2, 4])
    out = load_corrupted("cifar10", "gaussian_noise", 3, data_dir=data_dir, clean=clean,
                         rows=rows)
    expected = corrupt_dataset(clean.subset(rows), "gaussian_noise", 3)
    assert out.meta["source"] == "generated" and torch.equal(out.images, expected.images)
    assert out.name == "cifar10-c:gaussian_noise:3" and out.labels.tolist() == [0, 2, 4]


def test_source_official_without_files_or_with_other_settings_fails_clearly(data_dir):
    with pytest.raises(DataError, match=rf"no published fog files for cifar10: {data_dir}/"
                                        r"CIFAR-10-C/ not found \(expected CIFAR-10-C/fog.npy, "
                                        r"uint8 \(5 N, H, W, C\) with severities 1-5 stacked, "
                                        r"beside labels.npy\)"):
        load_corrupted("cifar10", "fog", 1, data_dir=data_dir, source="official",
                       clean=clean_split())
    write_release(data_dir)
    with pytest.raises(DataError, match="the test split with preset 'cifar' at seed 0.*seed 3"):
        load_corrupted("cifar10", "fog", 1, data_dir=data_dir, source="official", seed=3)
    with pytest.raises(DataError, match="source must be one of auto, generated, official"):
        load_corrupted("cifar10", "fog", 1, data_dir=data_dir, source="published")


def test_published_files_of_another_length_than_the_split_are_refused(data_dir):
    write_release(data_dir)
    with pytest.raises(DataError, match=f"fog.npy holds {N} images per severity; the cifar10 "
                                        f"test split has {N + 1}"):
        load_corrupted("cifar10", "fog", 1, data_dir=data_dir, clean=clean_split(N + 1))


def test_a_corrupted_name_has_its_base_datasets_source(data_dir):
    assert get_source("cifar10-c:fog:3") is get_source("cifar10")
    assert get_source("Fashion-MNIST").name == "fashion_mnist"
    with pytest.raises(DataError, match="unknown corruption 'mist'"):
        get_source("cifar10-c:mist:3")


def test_source_official_names_only_the_files_that_are_missing(data_dir):
    write_release(data_dir)
    folder = data_dir / "CIFAR-10-C"
    with pytest.raises(DataError) as e:  # labels.npy is there: only snow.npy is missing
        load_corrupted("cifar10", "snow", 1, data_dir=data_dir, source="official")
    assert f"{folder} has no snow.npy (expected CIFAR-10-C/snow.npy" in str(e.value)
    (folder / "labels.npy").unlink()
    with pytest.raises(DataError, match=f"{folder} has no snow.npy and no labels.npy"):
        load_corrupted("cifar10", "snow", 1, data_dir=data_dir, source="official")


def test_source_official_on_a_dataset_without_a_release_says_so(data_dir):
    # the files the old message asked for: still no published release for MNIST
    folder = data_dir / "mnist-C"
    folder.mkdir(parents=True)
    np.save(folder / "fog.npy", np.zeros((5, 28, 28, 1), dtype=np.uint8))
    np.save(folder / "labels.npy", np.zeros(5, dtype=np.uint8))
    with pytest.raises(DataError) as e:
        load_corrupted("mnist", "fog", 1, data_dir=data_dir, source="official")
    message = str(e.value)
    assert message.startswith("no published fog files for mnist: only cifar10 (CIFAR-10-C/), "
                              "cifar100 (CIFAR-100-C/) have a published corrupted release")
    assert "mnist-C" not in message and "use source 'generated'" in message
