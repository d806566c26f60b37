"""A data folder or cache folder that cannot be used fails with one DataError line naming it,
where it is resolved, not with a traceback (or, for the cache, a decode on every load)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from thresher.cli import main
from thresher.data import DataError, load, resolve_data_dir


@pytest.fixture
def env(tmp_path, monkeypatch) -> Path:
    monkeypatch.delenv("THRESHER_DATA", raising=False)
    monkeypatch.delenv("THRESHER_CACHE", raising=False)
    return tmp_path


@pytest.fixture
def images(tmp_path) -> Path:
    """An ImageFolder with one 4x4 image per class and split (imagefolder is a cached source)."""
    root = tmp_path / "images"
    for split in ("train", "test"):
        for value, name in ((10, "ant"), (200, "bee")):
            (root / split / name).mkdir(parents=True)
            Image.fromarray(np.full((4, 4), value, dtype=np.uint8)).save(
                root / split / name / "0.png")
    return root


def test_a_data_folder_that_is_a_file_is_refused_by_name(env, monkeypatch):
    file = env / "data.tar"
    file.write_bytes(b"not a folder")
    with pytest.raises(DataError, match=rf"^data folder {file} \(--data-dir\) is a file; a folder "
                                        r"is expected: point --data-dir at the folder"):
        load("digits", data_dir=file)  # refused even where no file is read from it
    with pytest.raises(DataError, match=rf"data folder {file}/sub \(--data-dir\) lies under the "
                                        rf"file {file};"):
        resolve_data_dir(file / "sub")
    monkeypatch.setenv("THRESHER_DATA", str(file))
    with pytest.raises(DataError, match=r"\(THRESHER_DATA\) is a file; .*point THRESHER_DATA at"):
        load("mnist", "test", download=False)
    assert resolve_data_dir(env / "new") == env / "new"  # absent is fine: downloads create it


def test_the_cli_prints_one_error_line_for_a_data_folder_that_is_a_file(env, capsys):
    file = env / "data"
    file.write_text("")
    assert main(["datasets", "--data-dir", str(file)]) == 2
    err = capsys.readouterr().err
    assert err == (f"thresher: error: data folder {file} (--data-dir) is a file; a folder is "
                   f"expected: point --data-dir at the folder that holds the datasets\n")


def test_a_cache_folder_that_cannot_be_written_is_refused_by_name(env, images, monkeypatch):
    blocker = env / "cache-file"
    blocker.write_text("")
    readonly = env / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    try:
        for folder, problem in ((blocker, "is a file"),
                                (blocker / "sub", f"cannot be created: {blocker} is a file"),
                                (readonly, "is read-only"),
                                (readonly / "sub", f"cannot be created: {readonly} is read-only")):
            monkeypatch.setenv("THRESHER_CACHE", str(folder))
            with pytest.raises(DataError) as e:
                load("imagefolder", data_dir=env, root=str(images))
            assert str(e.value) == (f"cache folder {folder} (THRESHER_CACHE) {problem}; point "
                                    f"THRESHER_CACHE at a writable folder")
    finally:
        readonly.chmod(0o755)
    assert list(readonly.iterdir()) == []


def test_the_cli_prints_one_error_line_for_an_unusable_cache(env, monkeypatch, capsys):
    blocker = env / "cache"
    blocker.write_text("")
    monkeypatch.setenv("THRESHER_CACHE", str(blocker))
    assert main(["datasets", "--data-dir", str(env)]) == 2
    assert capsys.readouterr().err == (f"thresher: error: cache folder {blocker} (THRESHER_CACHE) "
                                       f"is a file; point THRESHER_CACHE at a writable folder\n")
