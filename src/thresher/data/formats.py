"""Readers for the formats image datasets ship in: IDX, CIFAR pickle batches, ImageFolder.

Every reader takes a path (or a file's bytes) and returns numpy arrays. None of them knows where
a dataset lives, how it is downloaded or cached, so each can be tested on a few hand-made bytes.
Image arrays are uint8 ``[N, C, H, W]``; label arrays are int64 ``[N]``.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

IDX_IMAGES = 2051  # magic number of an unsigned-byte IDX file with 3 dimensions
IDX_LABELS = 2049  # ... and with 1 dimension
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff",
                    ".webp")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")
SPLITS = ("train", "test")  # top-level folders whose class folders define the label indices


class DataError(RuntimeError):
    """Any failure to find, fetch, verify or decode a dataset; the message says what to do."""


def _read(src: str | Path | bytes) -> tuple[bytes, str]:
    """The bytes of ``src`` and a name for it in error messages."""
    if isinstance(src, (bytes, bytearray)):
        return bytes(src), "<bytes>"
    try:
        return Path(src).read_bytes(), str(src)
    except OSError as e:
        raise DataError(f"cannot read {src}: {e}") from e


def read_idx(src: str | Path | bytes, magic: int | None = None) -> np.ndarray:
    """An unsigned-byte IDX file (gzip-compressed or not) as an array of its header's shape.

    ``magic`` (2051 for images, 2049 for labels) guards against swapped or foreign files, and the
    payload length must match the header exactly, so a truncated download fails here, by name.
    """
    data, where = _read(src)
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{where}: damaged gzip data ({e})") from e
    found = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if found is None or data[:3] != b"\0\0\x08" or (magic is not None and found != magic):
        expected = magic if magic is not None else "an unsigned-byte IDX magic (0x000008NN)"
        raise DataError(f"{where}: bad IDX magic number {found}, expected {expected}")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{where}: IDX header truncated ({len(data)} bytes)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    if len(data) != header + int(np.prod(dims)):
        raise DataError(f"{where}: IDX header says shape {dims} ({header + int(np.prod(dims))} "
                        f"bytes) but the file holds {len(data)} bytes")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims).copy()


def read_idx_pair(images_src: str | Path | bytes,
                  labels_src: str | Path | bytes) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-style images and labels files as ``[N, 1, H, W]`` uint8 and ``[N]`` int64."""
    images = read_idx(images_src, IDX_IMAGES)
    labels = read_idx(labels_src, IDX_LABELS)
    if len(images) != len(labels):
        raise DataError(f"{images_src} holds {len(images)} images but {labels_src} holds "
                        f"{len(labels)} labels")
    return images[:, None], labels.astype(np.int64)


def read_cifar_batch(src: str | Path | bytes,
                     label_key: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR python batch as ``[N, 3, 32, 32]`` uint8 and ``[N]`` int64.

    ``label_key`` is ``labels`` for CIFAR-10, ``fine_labels`` for CIFAR-100. The batches are
    pickles, so only read files that passed their checksum.
    """
    data, where = _read(src)
    try:
        batch = pickle.loads(data, encoding="latin1")
        images = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except Exception as e:  # unpickling foreign bytes can raise almost anything
        raise DataError(f"{where}: not a CIFAR batch with 'data' and {label_key!r} ({e!r})") from e
    if images.ndim != 2 or images.shape[1] != 3 * 32 * 32 or len(labels) != len(images):
        raise DataError(f"{where}: CIFAR batch has data {images.shape} and {len(labels)} labels, "
                        f"expected [N, 3072] and N labels")
    return images.reshape(-1, 3, 32, 32), labels


def read_cifar_meta(src: str | Path | bytes, key: str = "label_names") -> list[str]:
    """Class names from a CIFAR meta pickle (``label_names`` or ``fine_label_names``)."""
    data, where = _read(src)
    try:
        return [str(n) for n in pickle.loads(data, encoding="latin1")[key]]
    except Exception as e:  # as above
        raise DataError(f"{where}: not a CIFAR meta file with {key!r} ({e!r})") from e


def read_tar_members(path: str | Path, names: list[str]) -> dict[str, bytes]:
    """The bytes of the named members of a (possibly compressed) tar archive, unextracted."""
    wanted, found = set(names), {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                if member.isfile() and member.name in wanted:
                    found[member.name] = tar.extractfile(member).read()
    except (OSError, EOFError, tarfile.TarError, zlib.error) as e:
        raise DataError(f"{path}: damaged tar archive ({e})") from e
    missing = sorted(wanted - set(found))
    if missing:
        raise DataError(f"{path}: archive lacks {', '.join(missing)}")
    return found


def read_image_folder(root: str | Path, split: str, size: int | None = None,
                      channels: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images under ``<split>/<class>/`` of a folder or tar archive as uint8 NCHW, labels, classes.

    Classes are the sorted class folders (torchvision sorts the same way); every split present
    must hold the same ones, as a class missing from ``train/`` would be one the model never
    sees, and one missing from ``test/`` would shift its label indices. Archive members are read
    straight from the tarfile, nothing is extracted. ``size`` resizes to ``size x size``;
    ``channels`` (1 or 3) forces grayscale or RGB; without it, all-gray data stays 1-channel and
    anything else becomes RGB.
    """
    if size is not None and (not isinstance(size, int) or size < 1):
        raise DataError(f"size must be a positive int, got {size!r}")
    if channels not in (None, 1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels!r}")
    root = Path(root)
    if root.is_dir():
        items, split_classes = _folder_items(root, split)
    elif root.is_file():
        items, split_classes = _tar_items(root, split)
    else:
        raise DataError(f"{root}: no such folder or archive")
    class_names = _same_classes(root, split_classes)
    if not items:
        raise DataError(f"{root}: no images under {split}/<class>/ (expected the layout "
                        f"train/<class>/*.jpg and test/<class>/*.jpg at its top level)")
    classes = sorted(class_names)
    index = {c: i for i, c in enumerate(classes)}
    items.sort(key=lambda item: (index[item[1]], item[0]))
    mode = {None: None, 1: "L", 3: "RGB"}[channels]
    arrays = [_decode(data, f"{root}:{name}", size, mode) for name, _, data in items]
    labels = np.array([index[c] for _, c, _ in items], dtype=np.int64)
    return _stack(arrays, items, root), labels, classes


def _is_image(base: str) -> bool:
    return not base.startswith(".") and base.lower().endswith(IMAGE_EXTENSIONS)


def _class_folder(parts: list[str], split: str) -> str | None:
    """The class of an image at ``<top>/<class>/.../<file>`` if ``<top>`` is a split we index."""
    if (len(parts) < 3 or parts[0] not in (split, *SPLITS) or parts[1].startswith(".")
            or not _is_image(parts[-1])):
        return None
    return parts[1]


def _same_classes(root: Path, split_classes: dict[str, set[str]]) -> set[str]:
    """The class folders (with images) that every split holds; any other is an error."""
    every = set().union(*split_classes.values())
    for split, classes in sorted(split_classes.items()):
        lacking = sorted(every - classes)
        if lacking:
            where = sorted(s for s, c in split_classes.items() if c & set(lacking))
            noun, verb = ("class", "is") if len(lacking) == 1 else ("classes", "are")
            raise DataError(f"ImageFolder {root}: {noun} {', '.join(map(repr, lacking))} {verb} "
                            f"in {' and '.join(w + '/' for w in where)} but not {split}/; "
                            f"both splits need the same class folders")
    return every


def _folder_items(root: Path,
                  split: str) -> tuple[list[tuple[str, str, bytes]], dict[str, set[str]]]:
    """(name, class, bytes) of the split's images, and the class folders of each split."""
    items, classes = [], {}
    for path in root.rglob("*"):
        parts = path.relative_to(root).parts
        label = _class_folder(list(parts), split)
        if label is None or not path.is_file():
            continue
        classes.setdefault(parts[0], set()).add(label)
        if parts[0] == split:
            items.append(("/".join(parts), label, path.read_bytes()))
    return items, classes


def _tar_items(path: Path,
               split: str) -> tuple[list[tuple[str, str, bytes]], dict[str, set[str]]]:
    """As `_folder_items`, for a tar archive read in one sequential pass, nothing extracted."""
    items, classes = [], {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                parts = member.name.removeprefix("./").split("/")
                label = _class_folder(parts, split)
                if label is None or not member.isfile():
                    continue
                classes.setdefault(parts[0], set()).add(label)
                if parts[0] == split:
                    items.append(("/".join(parts), label, tar.extractfile(member).read()))
    except (OSError, EOFError, tarfile.TarError, zlib.error) as e:
        raise DataError(f"{path}: damaged or unreadable tar archive ({e})") from e
    return items, classes


def _decode(data: bytes, where: str, size: int | None, mode: str | None) -> np.ndarray:
    """One image as HW (gray) or HWC (RGB) uint8; converts only when needed, as that copies."""
    try:
        image = Image.open(io.BytesIO(data))
        target = mode or ("L" if image.mode in GRAY_MODES else "RGB")
        if image.mode != target:
            image = image.convert(target)
        if size is not None and image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(image)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{where}: cannot decode image ({e})") from e


def _stack(arrays: list[np.ndarray], items: list, root: Path) -> np.ndarray:
    """Equal-sized HW/HWC images as NCHW; gray ones become 3-channel if any image is RGB."""
    first = arrays[0].shape[:2]
    for array, (name, _, _) in zip(arrays, items):
        if array.shape[:2] != first:
            raise DataError(f"{root}: {name} is {array.shape[1]}x{array.shape[0]} but "
                            f"{items[0][0]} is {first[1]}x{first[0]}; pass size=N to resize all")
    if all(a.ndim == 2 for a in arrays):
        return np.stack(arrays)[:, None]
    arrays = [np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a for a in arrays]
    return np.ascontiguousarray(np.stack(arrays).transpose(0, 3, 1, 2))
