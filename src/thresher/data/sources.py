"""The dataset registry: every source by name, and `load_source` to turn one into an
`ArrayDataset`.

A source is two functions: ``locate`` finds (downloads, verifies) the files one split is read
from, and ``read`` decodes them into arrays. `load_source` puts the decode behind the cache, so
only the first load of a split pays for it. New sources register with `register_source`.
Corrupted splits (``cifar10-c:fog:3``) are built on top, in `thresher.data.corrupted`;
`thresher.data.load` takes either kind of name.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from thresher.data import cache, fetch, formats
from thresher.data.corrupt import parse_corrupted_name
from thresher.data.dataset import ArrayDataset
from thresher.data.formats import DataError
from thresher.registry import Registry
from thresher.seeding import make_rng

log = logging.getLogger(__name__)

Arrays = tuple[np.ndarray, np.ndarray, list[str]]  # images uint8 NCHW, labels int64, classes
Locate = Callable[[Path, str, bool, dict], list[Path]]
Read = Callable[[list[Path], str, dict], Arrays]


@dataclass(frozen=True)
class Source:
    """A registered dataset: how to find the files of a split and how to decode them."""

    name: str
    description: str
    locate: Locate
    read: Read
    num_classes: int | None = None
    shape: tuple[int, int, int] | None = None
    folder: str | None = None  # searched under the data folder; None: needs no files there
    options: tuple[str, ...] = ()
    cached: bool = True
    splits: tuple[str, ...] = ("train", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """What `list_datasets` reports about one source in one data folder."""

    name: str
    description: str
    num_classes: int | None
    shape: tuple[int, int, int] | None  # None: depends on the data (imagefolder)
    available: bool  # the files of every split are in the data folder and pass their checksums
    location: Path | None  # the folder searched; None: needs no files there, or any folder
    cached: bool  # some split has a decoded cache entry


def _fold(name: str) -> str:
    """``Fashion-MNIST`` -> ``fashion_mnist``: case and dashes do not matter in names."""
    return name.lower().replace("-", "_")


SOURCES: Registry[Source] = Registry("dataset", error=DataError, key=_fold)


def register_source(name: str, description: str, locate: Locate | None = None,
                    **spec) -> Callable[[Read], Read]:
    """Decorator registering a ``read`` function (and its ``locate``) under ``name``."""
    def add(read: Read) -> Read:
        SOURCES.register(name, Source(name, description, locate or _no_files, read, **spec),
                         description=description)
        return read
    return add


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """The data folder: the argument, else ``THRESHER_DATA``, else ``./data``.

    One that is (or lies under) a regular file is refused here, by the name it was given, rather
    than as a traceback wherever it is first opened. A missing one is fine: downloads create it.
    """
    given = data_dir or os.environ.get("THRESHER_DATA") or "data"
    origin = "--data-dir" if data_dir else "THRESHER_DATA" if given != "data" else "the default"
    root = Path(given).expanduser().absolute()
    existing = next(p for p in (root, *root.parents) if p.exists())  # "/" at the latest
    if not existing.is_dir():
        where = "is a file" if existing == root else f"lies under the file {existing}"
        raise DataError(f"data folder {given} ({origin}) {where}; a folder is expected: point "
                        f"{'THRESHER_DATA' if origin == 'THRESHER_DATA' else '--data-dir'} at "
                        f"the folder that holds the datasets")
    return root


def get_source(name: str) -> Source:
    """The source called ``name``; a corrupted split's (``cifar10-c:fog:3``) is its base
    dataset's, whose classes and image shape it has."""
    corrupted = parse_corrupted_name(name)
    return SOURCES[corrupted[0] if corrupted else name]


def load_source(name: str, split: str = "train", data_dir: str | Path | None = None,
                download: bool = True, **options) -> ArrayDataset:
    """One split of a registered dataset, decoded once and then served from the cache."""
    source = SOURCES[name]
    if split not in source.splits:
        raise DataError(f"{source.name} has no split {split!r}; valid splits: "
                        f"{', '.join(source.splits)}")
    unknown = sorted(set(options) - set(source.options))
    if unknown:
        takes = ", ".join(source.options) or "none"
        raise DataError(f"{source.name} does not take option(s) {', '.join(unknown)}; "
                        f"its options: {takes}")
    root = resolve_data_dir(data_dir)
    files = source.locate(root, split, download, options)
    if source.cached:
        images, labels, classes = _cached_read(source, root, split, options, files)
    else:
        images, labels, classes = source.read(files, split, options)
    meta = {"split": split, "files": [str(f) for f in files], "options": dict(options)}
    return ArrayDataset(images, labels, list(classes), source.name, meta)


def list_datasets(data_dir: str | Path | None = None) -> list[DatasetInfo]:
    """Every registered source, with whether its files are in the data folder and cached."""
    root = resolve_data_dir(data_dir)
    cache_folder = cache.cache_dir(root)
    infos = []
    for s in SOURCES.values():
        try:
            for split in s.splits:
                s.locate(root, split, False, {})
            available = True
        except DataError:
            available = False
        folder = None if s.folder is None else root / s.folder
        infos.append(DatasetInfo(s.name, s.description, s.num_classes, s.shape, available,
                                 folder, s.cached and cache.has_entries(cache_folder, s.name)))
    return infos


def _cached_read(source: Source, root: Path, split: str, options: dict,
                 files: list[Path]) -> Arrays:
    stem = cache.entry(cache.cache_dir(root), source.name, split, options, files)
    hit = cache.get(stem)
    if hit is not None:
        return hit
    start = time.perf_counter()
    images, labels, classes = source.read(files, split, options)
    log.info("decoded %s/%s in %.1f s; caching it at %s", source.name, split,
             time.perf_counter() - start, stem)
    cache.put(stem, images, labels, classes)
    return images, labels, classes


def _no_files(data_dir: Path, split: str, download: bool, options: dict) -> list[Path]:
    return []


# --- digits: bundled with scikit-learn, the offline default ---------------------------------

DIGITS_TEST_FRACTION = 0.2
DIGITS_SEED = 0


@register_source("digits", "scikit-learn's bundled 8x8 handwritten digits (1797 images); "
                 "offline", num_classes=10, shape=(1, 8, 8), cached=False)
def _read_digits(files: list[Path], split: str, options: dict) -> Arrays:
    """A stratified 80/20 split with a fixed seed (1437 train, 360 test), each in original order.

    Pixels 0..16 are scaled to 0..255 as round(v * 255 / 16).
    """
    from sklearn.datasets import load_digits  # imported here: sklearn is slow to import
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    index = np.arange(len(digits.target))
    train, test = train_test_split(index, test_size=DIGITS_TEST_FRACTION,
                                   random_state=DIGITS_SEED, stratify=digits.target)
    rows = np.sort(train if split == "train" else test)
    images = np.rint(digits.images[rows] * 255 / 16).astype(np.uint8)[:, None]
    return images, digits.target[rows].astype(np.int64), [str(d) for d in range(10)]


# --- synthetic: learnable class patterns for tests ------------------------------------------

@register_source("synthetic", "class-dependent random patterns for tests (options n, "
                 "num_classes, shape, seed)", num_classes=10, shape=(1, 16, 16), cached=False,
                 options=("n", "num_classes", "shape", "seed"))
def _read_synthetic(files: list[Path], split: str, options: dict) -> Arrays:
    """Each class is a fixed blocky pattern (from ``seed``) blended half-and-half with noise.

    The patterns are shared by both splits; the examples are separate draws per split.
    ``n`` defaults to 1000 for train and 250 for test; classes are balanced.
    """
    n = int(options.get("n", 1000 if split == "train" else 250))
    num_classes = int(options.get("num_classes", 10))
    c, h, w = (int(d) for d in options.get("shape", (1, 16, 16)))
    seed = int(options.get("seed", 0))
    block = max(1, min(h, w) // 4)
    coarse = make_rng(seed, "patterns").random((num_classes, c, -(-h // block), -(-w // block)))
    patterns = coarse.repeat(block, axis=2).repeat(block, axis=3)[:, :, :h, :w]
    rng = make_rng(seed, "examples", split)
    labels = rng.permutation(np.arange(n) % num_classes)
    images = np.rint(255 * (0.5 * patterns[labels] + 0.5 * rng.random((n, c, h, w))))
    return images.astype(np.uint8), labels, [f"pattern{i}" for i in range(num_classes)]


# --- MNIST family: gzip IDX files as torchvision lays them out ------------------------------

def _register_idx(name: str, description: str, classes: list[str]) -> None:
    def locate(data_dir: Path, split: str, download: bool, options: dict) -> list[Path]:
        """The split's two .gz files, or torchvision's decompressed copies (no MD5 for those)."""
        remotes = fetch.idx_remotes(name, split)
        unpacked = [r.path.removesuffix(".gz") for r in remotes]
        if not all((data_dir / r.path).is_file() for r in remotes) and \
                all((data_dir / u).is_file() for u in unpacked):
            remotes = [fetch.Remote(u) for u in unpacked]
        return fetch.ensure(name, data_dir, remotes, download)

    def read(files: list[Path], split: str, options: dict) -> Arrays:
        return (*formats.read_idx_pair(*files), classes)

    register_source(name, description, locate, num_classes=10, shape=(1, 28, 28),
                    folder=fetch.IDX_SOURCES[name][0])(read)


_register_idx("mnist", "MNIST handwritten digits, 60000 train / 10000 test, 28x28 gray",
              [str(d) for d in range(10)])
_register_idx("fashion_mnist", "Fashion-MNIST clothing, 60000 train / 10000 test, 28x28 gray",
              ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot"])
_register_idx("kmnist", "Kuzushiji-MNIST cursive Japanese, 60000 train / 10000 test, 28x28 gray",
              ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"])


# --- CIFAR: official python pickles, or an ImageFolder copy ---------------------------------

@dataclass(frozen=True)
class CifarLayout:
    """The ways one CIFAR dataset may sit in the data folder, in order of preference.

    The ImageFolder copies must name their class folders so that sorted order is the official
    label order, as the official names are (CIFAR-100's fine names are alphabetical).
    """

    folder: str  # the extracted official archive ...
    archive: fetch.Remote  # ... or the archive itself
    batches: dict[str, tuple[str, ...]]
    meta: str
    meta_key: str
    label_key: str
    jpeg_archive: str  # an ImageFolder copy as a tar archive ...
    image_folder: str  # ... or as a folder
    num_classes: int
    classes: tuple[str, ...] = ()  # the official names, where short enough to list here


def _register_cifar(name: str, description: str, layout: CifarLayout) -> None:
    def locate(data_dir: Path, split: str, download: bool, options: dict) -> list[Path]:
        """The extracted batches, else the official archive, else an ImageFolder copy."""
        if (data_dir / layout.folder).is_dir():
            names = [f"{layout.folder}/{f}" for f in (*layout.batches[split], layout.meta)]
            absent = [n for n in names if not (data_dir / n).is_file()]
            if absent:
                raise fetch.missing(name, data_dir, absent, "the extracted archive is incomplete")
            remotes = [fetch.Remote(n, fetch.CIFAR_MD5[n]) for n in names]
            return fetch.ensure(name, data_dir, remotes, download=False)
        for candidate in (layout.archive.path, layout.jpeg_archive):
            if (data_dir / candidate).is_file():
                md5 = layout.archive.md5 if candidate == layout.archive.path else None
                fetch.verify(data_dir / candidate, data_dir, md5)
                return [data_dir / candidate]
        if (data_dir / layout.image_folder).is_dir():
            return [data_dir / layout.image_folder]
        wanted = " or ".join([f"{layout.folder}/", layout.archive.path, layout.jpeg_archive,
                              f"{layout.image_folder}/"])
        if not download:
            raise fetch.missing(name, data_dir, [wanted], "download=False")
        try:
            return [fetch.fetch(layout.archive, data_dir)]
        except DataError as e:
            raise fetch.missing(name, data_dir, [wanted], str(e)) from e

    def read(files: list[Path], split: str, options: dict) -> Arrays:
        if files[0].name == layout.archive.path:
            names = [f"{layout.folder}/{f}" for f in (*layout.batches[split], layout.meta)]
            members = formats.read_tar_members(files[0], names)
            blobs = [members[n] for n in names]
        elif len(files) > 1:  # the extracted batches, then meta
            blobs = list(files)
        else:
            images, labels, classes = formats.read_image_folder(files[0], split, channels=3)
            if (len(classes) != layout.num_classes or images.shape[1:] != (3, 32, 32)
                    or layout.classes and tuple(classes) != layout.classes):
                raise DataError(f"{files[0]}: expected {layout.num_classes} class folders "
                                f"{' '.join(layout.classes)} of 32x32 images, found "
                                f"{len(classes)} ({' '.join(classes[:10])} ...) of "
                                f"{images.shape[2]}x{images.shape[3]}")
            return images, labels, classes
        parts = [formats.read_cifar_batch(b, layout.label_key) for b in blobs[:-1]]
        classes = formats.read_cifar_meta(blobs[-1], layout.meta_key)
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                classes)

    register_source(name, description, locate, num_classes=layout.num_classes,
                    shape=(3, 32, 32), folder=".")(read)


_register_cifar("cifar10", "CIFAR-10, 50000 train / 10000 test, 32x32 RGB", CifarLayout(
    "cifar-10-batches-py", fetch.CIFAR10_ARCHIVE,
    {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
    "batches.meta", "label_names", "labels", "cifar10-jpeg.tar.gz", "cifar10", 10,
    ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")))
_register_cifar("cifar100", "CIFAR-100 (fine labels), 50000 train / 10000 test, 32x32 RGB",
                CifarLayout("cifar-100-python", fetch.CIFAR100_ARCHIVE,
                            {"train": ("train",), "test": ("test",)}, "meta", "fine_label_names",
                            "fine_labels", "cifar100-jpeg.tar.gz", "cifar100", 100))


# --- imagefolder: the user's own images ------------------------------------------------------

def _imagefolder_locate(data_dir: Path, split: str, download: bool, options: dict) -> list[Path]:
    """``root`` as given, else relative to the data folder."""
    if "root" not in options:
        raise DataError("imagefolder needs root=<folder or .tar/.tar.gz archive holding "
                        "train/<class>/* and test/<class>/*>")
    root = Path(options["root"]).expanduser()
    if not root.exists() and not root.is_absolute():
        root = data_dir / root
    if not root.exists():
        raise DataError(f"imagefolder: {options['root']} not found (also looked in {data_dir})")
    return [root.absolute()]


@register_source("imagefolder", "your images: root=<folder or tar archive> with "
                 "train/<class>/ and test/<class>/ (options size, channels)",
                 _imagefolder_locate, options=("root", "size", "channels"))
def _read_imagefolder(files: list[Path], split: str, options: dict) -> Arrays:
    return formats.read_image_folder(files[0], split, options.get("size"),
                                     options.get("channels"))
