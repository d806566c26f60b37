"""Dataset sources: readers on hand-made files, the registry, fetching, checksums and the cache.

Tests marked ``data`` read the real datasets from ``THRESHER_DATA`` and skip without them.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import signal
import struct
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from thresher.data import (
    DataError,
    cache,
    formats,
    list_datasets,
    load,
    load_splits,
    resolve_data_dir,
    sources,
)
from thresher.data.formats import read_cifar_batch, read_cifar_meta, read_idx, read_image_folder

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    """An empty data folder, with the environment not pointing anywhere else."""
    monkeypatch.delenv("THRESHER_DATA", raising=False)
    monkeypatch.delenv("THRESHER_CACHE", raising=False)
    root = tmp_path / "data"
    root.mkdir()
    return root


def idx_bytes(magic: int, array: np.ndarray) -> bytes:
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def make_tar(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
    return archive


# --- readers ----------------------------------------------------------------------------------

def test_idx_reader_raw_and_gzip(tmp_path):
    images = np.arange(3 * 2 * 4, dtype=np.uint8).reshape(3, 2, 4)
    raw = idx_bytes(formats.IDX_IMAGES, images)
    (tmp_path / "x.gz").write_bytes(gzip.compress(raw))
    np.testing.assert_array_equal(read_idx(raw, formats.IDX_IMAGES), images)
    np.testing.assert_array_equal(read_idx(tmp_path / "x.gz", formats.IDX_IMAGES), images)
    labels = np.array([3, 1, 4], dtype=np.uint8)
    np.testing.assert_array_equal(read_idx(idx_bytes(formats.IDX_LABELS, labels)), labels)


def test_idx_reader_rejects_bad_magic_and_truncation(tmp_path):
    labels = idx_bytes(formats.IDX_LABELS, np.array([1, 2, 3]))
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(labels)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.*magic number 2049.*2051"):
        read_idx(path, formats.IDX_IMAGES)
    path.write_bytes(idx_bytes(formats.IDX_IMAGES, np.zeros((2, 3, 3)))[:-1])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.*\(2, 3, 3\)"):
        read_idx(path, formats.IDX_IMAGES)


def test_cifar_batch_reader(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, (2, 3072), dtype=np.uint8)
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": data, "labels": [3, 7]}, protocol=2))
    images, labels = read_cifar_batch(path)
    assert images.shape == (2, 3, 32, 32) and labels.tolist() == [3, 7]
    assert images[1, 2, 0, 5] == data[1, 2 * 1024 + 5]  # rows are channel-major: R, G, B planes
    fine = pickle.dumps({"data": data, "fine_labels": [99, 0], "coarse_labels": [1, 2]})
    assert read_cifar_batch(fine, "fine_labels")[1].tolist() == [99, 0]
    with pytest.raises(DataError, match="labels"):
        read_cifar_batch(fine)
    meta = pickle.dumps({"fine_label_names": ["apple", "bee"]})
    assert read_cifar_meta(meta, "fine_label_names") == ["apple", "bee"]


@pytest.fixture
def folder(tmp_path) -> Path:
    """train/ and test/ with classes 'zebra' and 'ant' (deliberately not in sorted order)."""
    root = tmp_path / "images"
    for split, n in (("train", 3), ("test", 1)):
        for value, name in ((200, "zebra"), (10, "ant")):
            for i in range(n):
                write_png(root / split / name / f"{i}.png",
                          np.full((4, 5), value + i, dtype=np.uint8))
    (root / "train" / "ant" / "notes.txt").write_text("not an image")
    return root


def test_image_folder_from_directory_and_tar(folder, tmp_path):
    images, labels, classes = read_image_folder(folder, "train")
    assert classes == ["ant", "zebra"]
    assert images.shape == (6, 1, 4, 5) and images.dtype == np.uint8
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert images[:, 0, 0, 0].tolist() == [10, 11, 12, 200, 201, 202]  # PNG is lossless
    archive = make_tar(folder, tmp_path / "images.tar.gz")
    for split in ("train", "test"):
        from_dir, from_tar = read_image_folder(folder, split), read_image_folder(archive, split)
        np.testing.assert_array_equal(from_dir[0], from_tar[0])
        np.testing.assert_array_equal(from_dir[1], from_tar[1])
        assert from_dir[2] == from_tar[2]


def test_image_folder_color_size_and_channels(tmp_path):
    rgb = np.zeros((6, 6, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 10, 20, 30
    write_png(tmp_path / "train" / "a" / "0.png", rgb)
    write_png(tmp_path / "train" / "b" / "0.png", np.full((6, 6), 7, dtype=np.uint8))
    images, _, _ = read_image_folder(tmp_path, "train")
    assert images.shape == (2, 3, 6, 6)  # one RGB image makes all RGB
    assert images[0, :, 0, 0].tolist() == [10, 20, 30] and images[1, :, 0, 0].tolist() == [7] * 3
    assert read_image_folder(tmp_path, "train", size=3, channels=1)[0].shape == (2, 1, 3, 3)
    write_png(tmp_path / "train" / "b" / "1.png", np.zeros((5, 5), dtype=np.uint8))
    with pytest.raises(DataError, match="size="):
        read_image_folder(tmp_path, "train")
    with pytest.raises(DataError, match="no images under val/"):
        read_image_folder(tmp_path, "val")


# --- registry ---------------------------------------------------------------------------------

def test_digits_offline_deterministic_and_stratified(data_dir):
    from sklearn.datasets import load_digits

    train, test = load_splits("digits", data_dir)
    assert train.images.shape == (1437, 1, 8, 8) and test.images.shape == (360, 1, 8, 8)
    assert len(train) + len(test) == 1797
    assert train.name == "digits" and train.classes == [str(d) for d in range(10)]
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0
    total = np.bincount(load_digits().target)
    np.testing.assert_array_equal(train.class_counts() + test.class_counts(), total)
    assert np.abs(test.class_counts().numpy() - 0.2 * total).max() <= 1  # stratified
    again = load("digits", "test", data_dir)
    assert again.images.equal(test.images) and again.labels.equal(test.labels)


def test_synthetic_is_deterministic_and_learnable(data_dir):
    kw = dict(n=300, num_classes=3, shape=(2, 8, 8), seed=5)
    a, b = load("synthetic", data_dir=data_dir, **kw), load("synthetic", data_dir=data_dir, **kw)
    assert a.images.shape == (300, 2, 8, 8) and a.num_classes == 3
    assert a.images.equal(b.images) and a.labels.equal(b.labels)
    assert not a.images.equal(load("synthetic", data_dir=data_dir, **{**kw, "seed": 6}).images)
    test = load("synthetic", "test", data_dir, **kw)
    assert not test.images[:10].equal(a.images[:10])
    x, y = a.images.flatten(1).float(), a.labels
    centroids = np.stack([x[y == c].mean(0).numpy() for c in range(3)])
    xt = test.images.flatten(1).float().numpy()
    predicted = ((xt[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    assert (predicted == test.labels.numpy()).mean() > 0.9


def test_unknown_names_splits_and_options(data_dir):
    with pytest.raises(DataError, match=r"unknown dataset 'mnsit'; did you mean 'mnist'\? "
                                        r"choose one of: .*mnist.*cifar10"):
        load("mnsit", data_dir=data_dir)
    with pytest.raises(DataError, match="valid splits: train, test"):
        load("digits", "val", data_dir)
    with pytest.raises(DataError, match="does not take option.*size"):
        load("digits", data_dir=data_dir, size=32)
    with pytest.raises(DataError, match="fashion_mnist"):  # '-' and case are normalised
        load("Fashion-MNIST", data_dir=data_dir, download=False)


def test_resolve_data_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("THRESHER_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_data_dir() == tmp_path / "data"
    monkeypatch.setenv("THRESHER_DATA", str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"


# --- finding, downloading and checking files --------------------------------------------------

def test_missing_files_without_download(data_dir):
    with pytest.raises(DataError) as e:
        load("mnist", data_dir=data_dir, download=False)
    message = str(e.value)
    assert "MNIST/raw/train-images-idx3-ubyte.gz" in message
    assert "MNIST/raw/train-labels-idx1-ubyte.gz" in message
    assert str(data_dir) in message and "THRESHER_DATA" in message


def test_no_network_fails_cleanly(data_dir, monkeypatch):
    calls = []

    def offline(url, timeout=None):
        calls.append(url)
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError) as e:
        load("mnist", "test", data_dir)
    message = str(e.value)
    assert "MNIST/raw/t10k-images-idx3-ubyte.gz" in message and str(data_dir) in message
    assert "download failed" in message and "ossci-datasets" in message
    assert calls[0].startswith("https://ossci-datasets.s3.amazonaws.com/mnist/")
    assert "yann.lecun.com" in calls[1]
    with pytest.raises(DataError, match=r"cifar-10-python.tar.gz or cifar10-jpeg.tar.gz"):
        load("cifar10", data_dir=data_dir)
    assert list(data_dir.iterdir()) == []  # nothing left behind


def test_corrupted_file_fails_checksum(data_dir):
    raw = data_dir / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"not mnist"))
    (raw / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"not labels"))
    with pytest.raises(DataError, match=r"corrupted data file .*train-images-idx3-ubyte.gz.*"
                                        r"f68b3c2dcbeaaa9fbdd348bbdeb94873"):
        load("mnist", data_dir=data_dir)


@pytest.fixture
def tiny_cifar(data_dir, tmp_path) -> Path:
    """A cifar10-jpeg.tar.gz with one PNG per class and split, listed in SHA256SUMS."""
    folder = tmp_path / "tiny"
    for i, name in enumerate(CIFAR10):
        for split in ("train", "test"):
            write_png(folder / split / name / "0000.png",
                      np.full((32, 32, 3), 20 * i, dtype=np.uint8))
    archive = make_tar(folder, data_dir / "cifar10-jpeg.tar.gz")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    (data_dir / "SHA256SUMS").write_text(f"{digest}  cifar10-jpeg.tar.gz\n")
    return archive


def test_cifar_image_folder_fallback_and_sha256sums(tiny_cifar, data_dir):
    train = load("cifar10", data_dir=data_dir, download=False)
    assert train.images.shape == (10, 3, 32, 32) and train.classes == CIFAR10
    assert train.labels.tolist() == list(range(10))
    assert train.images[:, 0, 0, 0].tolist() == [20 * i for i in range(10)]
    (data_dir / "SHA256SUMS").write_text(f"{'0' * 64}  cifar10-jpeg.tar.gz\n")
    with pytest.raises(DataError, match=r"corrupted data file .*cifar10-jpeg.tar.gz.*sha256"):
        load("cifar10", data_dir=data_dir)


def test_official_cifar_archive_is_checked_and_readable(data_dir, tmp_path):
    folder, rng = tmp_path / "official" / "cifar-10-batches-py", np.random.default_rng(0)
    folder.mkdir(parents=True)
    batches = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(batches):
        data = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
        (folder / name).write_bytes(pickle.dumps({"data": data, "labels": [i, 9 - i]}))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": CIFAR10}))
    archive = make_tar(folder.parent, data_dir / "cifar-10-python.tar.gz")
    with pytest.raises(DataError, match=r"corrupted data file .*c58f30108f718f92721af3b95e74349a"):
        load("cifar10", data_dir=data_dir)  # not the official archive: its MD5 differs
    read = sources.SOURCES["cifar10"].read
    images, labels, classes = read([archive], "train", {})
    assert images.shape == (10, 3, 32, 32) and classes == CIFAR10
    assert labels.tolist() == [0, 9, 1, 8, 2, 7, 3, 6, 4, 5]
    extracted = read([folder / "test_batch", folder / "batches.meta"], "test", {})
    assert extracted[1].tolist() == [5, 4]


def test_checksum_pass_is_remembered(tiny_cifar, data_dir, monkeypatch):
    load("cifar10", data_dir=data_dir)
    monkeypatch.setattr("thresher.data.fetch.file_digest",
                        lambda *a: pytest.fail("re-hashed an unchanged, verified file"))
    load("cifar10", "test", data_dir)


# --- the decoded cache ------------------------------------------------------------------------

def test_cache_hit_and_damaged_entries_are_rebuilt(folder, data_dir, monkeypatch):
    first = load("imagefolder", data_dir=data_dir, root=str(folder))
    assert first.name == "imagefolder" and first.classes == ["ant", "zebra"]
    stem = next((data_dir / ".thresher_cache").glob("imagefolder-train-*.json")).with_suffix("")
    images_file = Path(f"{stem}.images.npy")

    decode = formats.read_image_folder
    monkeypatch.setattr(formats, "read_image_folder",
                        lambda *a, **k: pytest.fail("decoded again despite a cache entry"))
    hit = load("imagefolder", data_dir=data_dir, root=str(folder))
    assert hit.images.equal(first.images) and hit.labels.equal(first.labels)
    assert hit.classes == first.classes

    calls = []
    monkeypatch.setattr(formats, "read_image_folder",
                        lambda *a, **k: calls.append(1) or decode(*a, **k))
    good = images_file.read_bytes()
    for damaged in (good[:-7], good[:-7] + b"\xff" * 7):  # truncated; same size, wrong bytes
        images_file.write_bytes(damaged)
        rebuilt = load("imagefolder", data_dir=data_dir, root=str(folder))
        assert rebuilt.images.equal(first.images)
        assert images_file.read_bytes() == good
    assert len(calls) == 2


def test_cache_follows_source_changes_and_location(folder, data_dir, monkeypatch, tmp_path):
    before = load("imagefolder", data_dir=data_dir, root=str(folder))
    write_png(folder / "train" / "ant" / "9.png", np.zeros((4, 5), dtype=np.uint8))
    assert len(load("imagefolder", data_dir=data_dir, root=str(folder))) == len(before) + 1
    monkeypatch.setenv("THRESHER_CACHE", str(tmp_path / "elsewhere"))
    assert cache.cache_dir(data_dir) == tmp_path / "elsewhere"
    load("imagefolder", "test", data_dir, root=str(folder))
    assert any((tmp_path / "elsewhere").glob("imagefolder-test-*.npy"))
    monkeypatch.delenv("THRESHER_CACHE")
    data_dir.chmod(0o555)  # a read-only data folder is never written to
    try:
        assert cache.cache_dir(data_dir) != data_dir / ".thresher_cache"
    finally:
        data_dir.chmod(0o755)


def test_list_datasets(data_dir, folder):
    info = {i.name: i for i in list_datasets(data_dir)}
    assert set(info) >= {"digits", "mnist", "fashion_mnist", "kmnist", "cifar10", "cifar100",
                         "imagefolder", "synthetic"}
    assert info["digits"].available and info["digits"].shape == (1, 8, 8)
    assert not info["mnist"].available
    assert info["mnist"].location == data_dir / "MNIST" / "raw"
    assert info["cifar100"].num_classes == 100 and not info["imagefolder"].cached
    load("imagefolder", data_dir=data_dir, root=str(folder))
    assert {i.name: i for i in list_datasets(data_dir)}["imagefolder"].cached


# --- the real data (THRESHER_DATA) ------------------------------------------------------------

def real_data(*files: str) -> Path:
    root = os.environ.get("THRESHER_DATA")
    if not root or not all((Path(root) / f).is_file() for f in files):
        pytest.skip(f"needs THRESHER_DATA holding {', '.join(files)}")
    return Path(root)


def idx_files(folder: str) -> list[str]:
    return [f"{folder}/raw/{name}" for name in ("train-images-idx3-ubyte.gz",
            "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")]


@pytest.mark.data
def test_real_mnist():
    root = real_data(*idx_files("MNIST"))
    train, test = load_splits("mnist", download=False)
    assert train.images.shape == (60000, 1, 28, 28) and len(test) == 10000
    assert train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert abs(train.images.float().mean().item() / 255 - 0.1307) < 1e-3
    if not cache.writable(root):
        assert not (root / ".thresher_cache").exists()


@pytest.mark.data
def test_real_fashion_mnist():
    real_data(*idx_files("FashionMNIST"))
    train = load("fashion_mnist", download=False)
    assert train.labels[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert train.classes[0] == "T-shirt/top" and train.classes[9] == "Ankle boot"


@pytest.mark.data
def test_real_cifar10_jpeg():
    real_data("cifar10-jpeg.tar.gz")
    train, test = load_splits("cifar10", download=False)
    assert train.images.shape == (50000, 3, 32, 32) and test.images.shape == (10000, 3, 32, 32)
    assert train.class_counts().tolist() == [5000] * 10
    assert test.class_counts().tolist() == [1000] * 10
    assert train.classes == CIFAR10


# --- ImageFolder splits must agree on their classes ------------------------------------------

def test_image_folder_refuses_a_class_in_one_split_only(folder, tmp_path):
    write_png(folder / "test" / "yak" / "0.png", np.zeros((4, 5), dtype=np.uint8))
    archive = make_tar(folder, tmp_path / "images.tar.gz")
    for root in (folder, archive):
        for split in ("train", "test"):  # either split: label indices would disagree
            with pytest.raises(DataError, match=rf"ImageFolder {root}: class 'yak' is in test/ "
                                                r"but not train/; both splits need the same "
                                                r"class folders"):
                read_image_folder(root, split)


def test_image_folder_names_every_class_missing_from_test(folder):
    for name in ("bee", "cat"):
        write_png(folder / "train" / name / "0.png", np.zeros((4, 5), dtype=np.uint8))
    (folder / "test" / "dog").mkdir()  # an empty class folder holds no class
    with pytest.raises(DataError, match=r"classes 'bee', 'cat' are in train/ but not test/"):
        read_image_folder(folder, "train")


def test_cifar_jpeg_archive_with_a_class_missing_from_train_is_refused(tiny_cifar, data_dir,
                                                                     tmp_path):
    folder = tmp_path / "tiny"
    for png in (folder / "train" / "truck").iterdir():
        png.unlink()
    (folder / "train" / "truck").rmdir()
    make_tar(folder, tiny_cifar)
    (data_dir / "SHA256SUMS").unlink()
    with pytest.raises(DataError, match="class 'truck' is in test/ but not train/"):
        load("cifar10", "test", data_dir=data_dir, download=False)


# --- temporary files of killed writers -------------------------------------------------------

def killed_writer(folder: Path, name: str) -> Path:
    """The temporary file ``.<name>.<pid>.<suffix>`` of a real process killed with SIGKILL while
    it was writing, so none of its cleanup ran; the process is reaped, so its pid is free."""
    script = ("import os, pathlib, sys, time\n"
              "path = pathlib.Path(sys.argv[1]) / sys.argv[2].format(pid=os.getpid())\n"
              "path.write_bytes(bytes(1 << 16))\n"
              "time.sleep(120)\n")
    child = subprocess.Popen([sys.executable, "-c", script, str(folder), name])
    path = folder / name.format(pid=child.pid)
    try:
        while not path.exists() or path.stat().st_size < 1 << 16:
            assert child.poll() is None, "the writer exited before it was killed"
            time.sleep(0.01)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL and path.exists()
    return path


def test_cache_writes_and_listings_remove_a_killed_writers_temporary_files(folder, data_dir):
    cache_folder = data_dir / ".thresher_cache"
    cache_folder.mkdir()
    orphan = killed_writer(cache_folder, ".imagefolder-train-0123.images.npy.{pid}.tmp")
    live = cache_folder / f".imagefolder-test-0123.json.{os.getpid()}.tmp"  # a live writer's
    live.write_bytes(b"being written")
    stale = cache_folder / f".imagefolder-test-4567.json.{os.getpid()}.tmp"
    stale.write_bytes(b"a day old")
    day_ago = time.time() - cache.ORPHAN_AGE - 60
    os.utime(stale, (day_ago, day_ago))  # a reused pid: the age still tells
    not_ours = cache_folder / ".notes.tmp"  # no pid in the name: never touched
    not_ours.write_bytes(b"")
    load("imagefolder", data_dir=data_dir, root=str(folder))  # a miss: writes an entry
    assert not orphan.exists() and not stale.exists()
    assert live.exists() and not_ours.exists()
    assert any(cache_folder.glob("imagefolder-train-*.json"))

    orphan = cache_folder / orphan.name.replace("0123", "8901")  # the same dead pid
    orphan.write_bytes(b"")
    list_datasets(data_dir)  # listings clean too
    assert not orphan.exists() and live.exists()


def test_a_download_removes_partial_files_of_killed_downloads(data_dir, monkeypatch):
    raw = data_dir / "MNIST" / "raw"
    raw.mkdir(parents=True)
    orphan = killed_writer(raw, ".t10k-images-idx3-ubyte.gz.{pid}.part")
    live = raw / f".train-images-idx3-ubyte.gz.{os.getpid()}.part"
    live.write_bytes(b"being downloaded")

    def offline(url, timeout=None):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match="download failed"):
        load("mnist", "test", data_dir)
    assert not orphan.exists() and live.exists()
