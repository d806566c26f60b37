"""Where the official dataset files live, how to download them and how to check them.

Downloads use plain urllib with a short timeout, go to a temporary name, are checked against the
published MD5 and only then renamed into place. A file already on disk is checked against its
published MD5 or, lacking one, a SHA-256 listed in a ``SHA256SUMS`` file of the data folder; the
cache folder remembers a pass by path, size and mtime, so later loads only stat the file.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from thresher.data import cache
from thresher.data.formats import DataError

log = logging.getLogger(__name__)
TIMEOUT = 10.0  # seconds per connection attempt: an offline machine fails fast
HINT = ("Put the files there, or point THRESHER_DATA (or --data-dir) at a folder that holds "
        "them.")


@dataclass(frozen=True)
class Remote:
    """One data file: its path under the data folder, its published MD5 and its mirrors."""

    path: str
    md5: str | None = None
    urls: tuple[str, ...] = ()


IDX_NAMES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
             "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
# Folder (as torchvision lays it out), mirrors and MD5s as torchvision lists them.
IDX_SOURCES = {
    "mnist": ("MNIST/raw", ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                            "http://yann.lecun.com/exdb/mnist/"), {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"}),
    "fashion_mnist": ("FashionMNIST/raw", (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",), {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"}),
    "kmnist": ("KMNIST/raw", ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",), {
        "train-images-idx3-ubyte.gz": "bdb82020997e1d708af4cf47b453dcf7",
        "train-labels-idx1-ubyte.gz": "e144d726b3acfaa3e44228e80efcd344",
        "t10k-images-idx3-ubyte.gz": "5c965bf0a639b31b8f53240b1b52f4d7",
        "t10k-labels-idx1-ubyte.gz": "7320c461ea6c1c855c0b718fb2a4b134"}),
}

CIFAR10_ARCHIVE = Remote("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
                         ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",))
CIFAR100_ARCHIVE = Remote("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
                          ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",))
# The files inside the official archives, once extracted (MD5s as torchvision lists them).
CIFAR_MD5 = {
    "cifar-10-batches-py/data_batch_1": "c99cafc152244af753f735de768cd75f",
    "cifar-10-batches-py/data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "cifar-10-batches-py/data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "cifar-10-batches-py/data_batch_4": "634d18415352ddfa80567beed471001a",
    "cifar-10-batches-py/data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "cifar-10-batches-py/test_batch": "40351d587109b95175f43aff81a1287e",
    "cifar-10-batches-py/batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    "cifar-100-python/train": "16019d7e3df5f24257cddd939b257f8d",
    "cifar-100-python/test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "cifar-100-python/meta": "7973b15100ade9c7d40fb424638fde48",
}


def idx_remotes(name: str, split: str) -> list[Remote]:
    """The images and labels files of one split of an MNIST-family dataset."""
    folder, mirrors, md5s = IDX_SOURCES[name]
    return [Remote(f"{folder}/{f}", md5s[f], tuple(m + f for m in mirrors))
            for f in IDX_NAMES[split]]


def missing(dataset: str, data_dir: Path, wanted: list[str], why: str) -> DataError:
    """The error for absent files: names them, the folder searched and how to point elsewhere."""
    return DataError(f"{dataset}: {', '.join(wanted)} not found in data folder {data_dir} "
                     f"({why}). {HINT}")


def ensure(dataset: str, data_dir: Path, remotes: list[Remote], download: bool) -> list[Path]:
    """The paths of ``remotes``, downloading absent ones if allowed, all checksum-verified."""
    absent = [r for r in remotes if not (data_dir / r.path).is_file()]
    if absent and not download:
        raise missing(dataset, data_dir, [r.path for r in absent], "download=False")
    if absent and not all(r.urls for r in absent):
        raise missing(dataset, data_dir, [r.path for r in absent], "no download source known")
    for remote in absent:
        try:
            fetch(remote, data_dir)
        except DataError as e:
            raise missing(dataset, data_dir, [r.path for r in absent], str(e)) from e
    for remote in remotes:
        verify(data_dir / remote.path, data_dir, remote.md5)
    return [data_dir / r.path for r in remotes]


def fetch(remote: Remote, data_dir: Path) -> Path:
    """Download ``remote`` into the data folder, trying its mirrors in order.

    Folders are only created once a mirror answers, so an offline attempt leaves nothing behind.
    Partial downloads of killed processes (``.<name>.<pid>.part``) in that folder are removed.
    """
    dest = data_dir / remote.path
    if not cache.writable(dest.parent):
        raise DataError(f"cannot download into {dest.parent}: not writable")
    cache.remove_orphans(dest.parent, ".part")
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    errors = []
    for url in remote.urls:
        log.info("downloading %s", url)
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
                dest.parent.mkdir(parents=True, exist_ok=True)
                with open(tmp, "wb") as out:
                    shutil.copyfileobj(response, out, 1 << 20)
            actual = file_digest(tmp, "md5")
            if remote.md5 is None or actual == remote.md5:
                os.replace(tmp, dest)
                return dest
            errors.append(f"{url}: md5 {actual}, expected {remote.md5}")
        except (OSError, http.client.HTTPException) as e:  # URLError, timeouts, resets, disk
            errors.append(f"{url}: {e}")
        finally:
            tmp.unlink(missing_ok=True)
    raise DataError(f"download failed: {'; '.join(errors)}")


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def listed_sha256(path: Path, data_dir: Path) -> str | None:
    """The SHA-256 that ``<data_dir>/SHA256SUMS`` lists for ``path``, if any."""
    sums = data_dir / "SHA256SUMS"
    try:
        rel = path.absolute().relative_to(data_dir.absolute()).as_posix()
        lines = sums.read_text().splitlines() if sums.is_file() else []
    except (ValueError, OSError):  # path outside the data folder, or unreadable list
        return None
    for line in lines:
        digest, _, name = line.strip().partition(" ")
        if name.strip().lstrip("*").removeprefix("./") == rel:
            return digest.lower()
    return None


def verify(path: Path, data_dir: Path, md5: str | None = None) -> None:
    """Raise DataError if ``path`` does not match its known checksum (no checksum: no check)."""
    algorithm, expected = ("md5", md5) if md5 else ("sha256", listed_sha256(path, data_dir))
    if expected is None:
        return
    where = cache.cache_dir(data_dir)
    if cache.is_verified(where, path, expected):
        return
    actual = file_digest(path, algorithm)
    if actual != expected:
        raise DataError(f"corrupted data file {path}: {algorithm} is {actual}, expected "
                        f"{expected}. Delete it to download it again, or replace it.")
    cache.mark_verified(where, path, expected)
