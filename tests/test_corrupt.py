"""Corruptions: hand-computed values, noise statistics, severity order, determinism, errors."""

import hashlib
import os
import signal
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from thresher.cli import main
from thresher.data import DataError, load
from thresher.data.corrupt import (
    BENCHMARK,
    CORRUPTIONS,
    PRESETS,
    _generator,
    corrupt,
    corrupt_dataset,
    ops,
    parse_corrupted_name,
)
from thresher.data.corrupt.blur import _glass_moves, disk_kernel
from thresher.data.corrupt.spatter import canny, chamfer_distance, equalize_hist, spatter_apply
from thresher.data.corrupt.weather import frost_dir, plasma_fractal

NEEDS_FROST = {"frost"}


def frost_available() -> bool:
    try:
        frost_dir()
        return True
    except DataError:
        return False


def constant(value: int, n: int = 4, c: int = 3, size: int = 32) -> torch.Tensor:
    return torch.full((n, c, size, size), value, dtype=torch.uint8)


def natural(n: int = 64, seed: int = 0) -> torch.Tensor:
    """Smooth random images with edges: what the blurs and the JPEG codec act on."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand((n, 3, 4, 4), generator=g)
    smooth = torch.nn.functional.interpolate(coarse, size=32, mode="bilinear", align_corners=False)
    edges = (torch.rand((n, 3, 32, 32), generator=g) > 0.97).float()
    return ((0.8 * smooth + 0.2 * edges) * 255).round().to(torch.uint8)


def test_contrast_on_a_constant_image_changes_nothing_and_on_two_levels_scales_the_gap():
    assert torch.equal(corrupt(constant(100), "contrast", 3), constant(100))
    x = constant(50)
    x[:, :, :, 16:] = 150  # mean 100, deviations +-50
    out = corrupt(x, "contrast", 5)  # cifar factor 0.15: 100 +- 7.5
    assert out[0, 0, 0, 0] == int(255 * (100 / 255 - 0.15 * 50 / 255) + 1e-4)  # 92
    assert out[0, 0, 0, 31] == 107


@pytest.mark.parametrize("severity, amount", [(1, 0.05), (5, 0.3)])
def test_brightness_raises_grey_by_the_hsv_value_step(severity, amount):
    out = corrupt(constant(100), "brightness", severity)
    assert torch.equal(out, constant(int((100 / 255 + amount) * 255 + 1e-4)))


def test_brightness_keeps_hue_and_saturation_and_caps_at_white():
    x = torch.tensor([[[[200]], [[100]], [[0]]]], dtype=torch.uint8)  # V = 200/255
    out = corrupt(x, "brightness", 5).flatten().tolist()  # V' = min(200/255 + .3, 1) = 1
    assert out == [255, int(100 * 255 / 200 + 1e-4), 0]


def test_saturate_by_hand():
    pixel = torch.tensor([200, 100, 50], dtype=torch.uint8).view(1, 3, 1, 1)
    # V 200, S 0.75 -> 0.75 * 0.3 = 0.225; channels V * (1 - S' (V - c) / (V - min))
    assert corrupt(pixel, "saturate", 1).flatten().tolist() == [200, 170, 155]
    grey = torch.full((1, 3, 1, 1), 100, dtype=torch.uint8)
    # severity 5: S' = 0 * 2.5 + 0.2; a grey pixel has hue 0, so it turns red
    assert corrupt(grey, "saturate", 5).flatten().tolist() == [100, 80, 80]
    assert torch.equal(corrupt(natural(2)[:, :1], "saturate", 5), natural(2)[:, :1])


def test_gaussian_noise_has_the_preset_variance():
    out = corrupt(constant(128, n=64), "gaussian_noise", 3).float() / 255
    sigma = PRESETS["cifar"].params["gaussian_noise"][2]
    assert out.std().item() == pytest.approx(sigma, rel=0.03)
    assert out.mean().item() == pytest.approx(128 / 255 - 0.5 / 255, abs=0.002)  # truncation


def test_shot_noise_is_poisson():
    photons = PRESETS["imagenet"].params["shot_noise"][0]  # 60
    out = corrupt(constant(51, n=64), "shot_noise", 1, "imagenet").float()
    counts = torch.round(out / 255 * photons)  # 51/255 * 60 = 12 photons expected
    assert counts.mean().item() == pytest.approx(12, rel=0.02)
    assert counts.var().item() == pytest.approx(12, rel=0.05)


def test_shot_noise_draws_do_not_depend_on_the_thread_count():
    images = natural(16)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = corrupt(images, "shot_noise", 2, seed=3)
        torch.set_num_threads(2)
        two = corrupt(images, "shot_noise", 2, seed=3)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)
    assert not torch.equal(one, corrupt(images, "shot_noise", 2, seed=4))


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_equals_a_pillow_save_and_reload(channels):
    from io import BytesIO

    from PIL import Image

    images = natural(6)[:, :channels]
    quality = PRESETS["cifar"].params["jpeg_compression"][4]
    out = corrupt(images, "jpeg_compression", 5)
    for image, got in zip(images, out):
        buffer = BytesIO()
        array = image.permute(1, 2, 0).numpy()
        Image.fromarray(array[..., 0] if channels == 1 else array).save(buffer, "JPEG",
                                                                        quality=quality)
        expected = np.asarray(Image.open(buffer)).reshape(32, 32, channels)
        assert np.array_equal(got.permute(1, 2, 0).numpy(), expected)


def test_motion_blur_equals_a_per_image_tap_sum():
    x = natural(5).float() / 255
    angles = torch.tensor([-45.0, -20.0, 0.0, 13.0, 44.9])
    radius, sigma = 6, 2.0
    got = ops.motion_blur(x, radius, sigma, angles)
    taps = torch.arange(2 * radius + 1, dtype=torch.float64)
    kernel = torch.exp(-taps ** 2 / (2 * sigma ** 2))
    kernel /= kernel.sum()
    for image, angle, blurred in zip(x, angles.double(), got):
        expected = torch.zeros_like(image)
        for i, weight in zip(taps, kernel):  # ImageMagick's offsets: i pixels along the angle
            dy = int(torch.ceil(i * torch.sin(torch.deg2rad(angle)) - 0.5))
            dx = int(torch.ceil(i * torch.cos(torch.deg2rad(angle)) - 0.5))
            rows = (torch.arange(32) + dy).clamp(0, 31)
            cols = (torch.arange(32) + dx).clamp(0, 31)
            expected += float(weight) * image[:, rows][:, :, cols]
        assert torch.allclose(blurred, expected, atol=1e-6)


@pytest.mark.parametrize("severity", [1, 5])
def test_impulse_noise_flips_the_preset_fraction_half_to_each_extreme(severity):
    amount = PRESETS["cifar"].params["impulse_noise"][severity - 1]
    out = corrupt(constant(128, n=64), "impulse_noise", severity)
    salt, pepper = (out == 255).float().mean().item(), (out == 0).float().mean().item()
    assert salt + pepper == pytest.approx(amount, rel=0.05)
    assert salt == pytest.approx(pepper, rel=0.1)
    assert ((out == 128) | (out == 0) | (out == 255)).all()


def test_disk_kernel_sums_to_one_and_a_tiny_radius_is_nearly_the_identity():
    k = disk_kernel(0.3, 0.4)
    assert k.shape == (17, 17) and k.sum().item() == pytest.approx(1)
    assert k[8, 8] > 0.5 and torch.equal(k, k.T)


def test_filters_and_blurs_preserve_a_constant_image():
    for name in ("defocus_blur", "zoom_blur", "gaussian_blur", "pixelate"):
        for preset in PRESETS:
            assert torch.equal(corrupt(constant(77), name, 5, preset), constant(77)), name
    # (imagenet's motion kernel is longer than 32 px: the port drops taps, darkening it)
    assert torch.equal(corrupt(constant(77), "motion_blur", 5), constant(77))


def test_glass_moves_copy_in_the_original_visiting_order():
    """Positions rows H-d .. d+1 (down), columns likewise, each copy the value at its offset;
    a source visited earlier passes on its new value, so copies chain."""
    y = torch.arange(9.0).reshape(1, 1, 3, 3)  # delta 1: only (2, 2) is visited
    moved = _glass_moves(y, torch.tensor([[[[-1, -1]]]]), 1)
    assert moved.flatten().tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 4]
    y = torch.arange(36.0).reshape(1, 1, 6, 6)  # delta 2: visits (4,4) (4,3) (3,4) (3,3)
    moves = torch.zeros(1, 2, 2, 2, dtype=torch.long)  # [N, row 4/3, column 4/3, (dx, dy)]
    moves[0, 0, 0] = torch.tensor([-2, 0])  # (4, 4) <- (4, 2), never visited: 26
    moves[0, 0, 1] = torch.tensor([1, 0])  # (4, 3) <- (4, 4), already 26
    moves[0, 1, 1] = torch.tensor([0, 1])  # (3, 3) <- (4, 3), already 26; (3, 4) keeps 22
    out = _glass_moves(y, moves, 2).reshape(6, 6)
    assert [out[4, 4], out[4, 3], out[3, 4], out[3, 3]] == [26, 26, 22, 26]
    assert out[2, 2] == 14


def test_canny_marks_one_column_of_a_vertical_step():
    """Sobel gives |dx| = 800 on both columns beside a 0 -> 200 step; OpenCV's suppression
    keeps a pixel above its left neighbour and at least its right one: the left column."""
    levels = torch.zeros(1, 8, 8, dtype=torch.int64)
    levels[..., 4:] = 200
    edges = canny(levels, 50, 150)
    assert edges[0, :, 3].all() and edges.sum() == 8
    step = levels.clamp(max=1)  # hysteresis: a step of 37 (|dx| 148) is only a candidate
    assert not canny(step * 37, 50, 150).any() and canny(step * 38, 50, 150).sum() == 8


def test_chamfer_distance_uses_opencvs_5x5_steps():
    edges = torch.zeros(1, 7, 7, dtype=torch.bool)
    edges[0, 3, 3] = True
    d = chamfer_distance(edges)[0]
    assert [d[3, 4].item(), d[4, 4].item(), d[5, 4].item(), d[3, 5].item(),
            d[5, 5].item()] == pytest.approx([1, 1.4, 2.1969, 2, 2.8], abs=1e-6)
    assert chamfer_distance(torch.zeros(1, 5, 5, dtype=torch.bool)).min() > 20  # no edges
    far = torch.zeros(1, 1, 40, dtype=torch.bool)
    far[0, 0, 0] = True  # 20 steps along a row: exactly 20, the next pixels above it
    assert chamfer_distance(far)[0, 0, 20] == 20 and chamfer_distance(far)[0, 0, 21:].min() > 20


def test_equalize_hist_by_hand():
    """Histogram {0: 2, 1: 1, 2: 1}: scale 255 / (4 - 2); level 1 -> round(127.5) = 128 (half
    to even), level 2 -> 255; an image of one level keeps it."""
    out = equalize_hist(torch.tensor([[[0, 0], [1, 2]], [[9, 9], [9, 9]]]))
    assert out.tolist() == [[[0, 0], [128, 255]], [[9, 9], [9, 9]]]


def test_spatter_without_liquid_changes_nothing_and_full_mud_paints_brown():
    p_water, p_mud = PRESETS["cifar"].params["spatter"][0], PRESETS["cifar"].params["spatter"][4]
    x = natural(3).float() / 255
    dry = torch.zeros(3, 1, 32, 32, dtype=torch.float64)
    assert torch.equal(spatter_apply(x, p_water, dry), x)
    mud = spatter_apply(x, p_mud, torch.ones(3, 1, 32, 32, dtype=torch.float64))
    assert torch.equal(ops.truncate_levels(mud)[:, :, 0, 0],
                       torch.tensor([[63.0, 42.0, 20.0]]).expand(3, 3))


def test_plasma_fractal_spans_zero_to_one_per_image():
    m = plasma_fractal(5, 32, 2.0, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert m.shape == (5, 32, 32)
    assert torch.allclose(m.amin(dim=(1, 2)), torch.zeros(5, dtype=m.dtype))
    assert torch.allclose(m.amax(dim=(1, 2)), torch.ones(5, dtype=m.dtype))


def test_fold_index_modes():
    i = torch.arange(-3, 7)
    assert ops.fold_index(i, 4, "nearest").tolist() == [0, 0, 0, 0, 1, 2, 3, 3, 3, 3]
    assert ops.fold_index(i, 4, "reflect").tolist() == [2, 1, 0, 0, 1, 2, 3, 3, 2, 1]
    assert ops.fold_index(i, 4, "mirror").tolist() == [3, 2, 1, 0, 1, 2, 3, 2, 1, 0]


def test_zoom_coords_follow_scipy_zoom():
    coords = ops.zoom_coords(32, 1.25)  # crop ceil(32 / 1.25) = 26 from 3, zoomed to 32
    assert len(coords) == 32 and coords[0] == 3 and coords[-1] == pytest.approx(28)


@pytest.mark.parametrize("name", [n for n in CORRUPTIONS if n not in NEEDS_FROST])
def test_every_corruption_keeps_shape_dtype_is_seeded_and_grows_with_severity(name):
    x = natural(32)
    outs = [corrupt(x, name, s, seed=1) for s in (1, 3, 5)]
    assert all(o.shape == x.shape and o.dtype == torch.uint8 for o in outs)
    assert torch.equal(outs[0], corrupt(x, name, 1, seed=1))
    change = [(o.float() - x.float()).abs().mean().item() for o in outs]
    if name in ("glass_blur", "elastic_transform"):  # published severities are not monotone
        assert min(change) > 0.5
    else:
        assert change[0] < change[2], change
    if name not in ("brightness", "contrast", "defocus_blur", "zoom_blur", "pixelate",
                    "jpeg_compression", "gaussian_blur", "saturate"):  # the deterministic ones
        assert not torch.equal(outs[0], corrupt(x, name, 1, seed=2))


def test_one_channel_images_are_supported():
    x = natural(8)[:, :1]
    for name in (n for n in CORRUPTIONS if n not in NEEDS_FROST):
        assert corrupt(x, name, 3).shape == x.shape


@pytest.mark.skipif(not frost_available(), reason="frost textures (imagecorruptions) absent")
def test_frost_blends_a_texture_and_is_seeded():
    x = natural(16)
    out = corrupt(x, "frost", 3)
    assert torch.equal(out, corrupt(x, "frost", 3)) and out.float().mean() > x.float().mean()


def test_frost_without_textures_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv("THRESHER_FROST_DIR", str(tmp_path))
    with pytest.raises(DataError, match="imagecorruptions"):
        corrupt(natural(2), "frost", 1)
    corrupt(natural(2), "fog", 1)  # the other corruptions do not need it


@pytest.mark.parametrize("args, message", [
    (("fgo", 1, "cifar"), "unknown corruption 'fgo'; did you mean 'fog'\\? choose one of: "
                          "gaussian_noise"),
    (("fog", 6, "cifar"), "severity must be one of 1, 2, 3, 4, 5, got 6"),
    (("fog", 1, "imagenet-c"), "unknown corruption preset 'imagenet-c'; did you mean "
                               "'imagenet'\\? choose one of: cifar, imagenet"),
])
def test_bad_names_are_refused_with_the_choices(args, message):
    with pytest.raises(DataError, match=message):
        corrupt(constant(0), *args)


def test_corrupted_dataset_names_parse_or_fail_clearly():
    assert parse_corrupted_name("cifar10-c:fog:3") == ("cifar10", "fog", 3)
    assert parse_corrupted_name("cifar10") is None
    with pytest.raises(DataError, match="got 0"):
        parse_corrupted_name("cifar10-c:fog:0")
    with pytest.raises(DataError, match="choose one of: gaussian_noise"):
        parse_corrupted_name("cifar10-c:mist:2")
    with pytest.raises(DataError, match="<dataset>-c:<corruption>:<severity>"):
        parse_corrupted_name("cifar10:fog")


def test_load_by_name_matches_corrupt_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("THRESHER_CACHE", str(tmp_path))
    clean = load("synthetic", "test", shape=(3, 32, 32))
    named = load("synthetic-c:zoom_blur:2", "test", shape=(3, 32, 32))
    direct = corrupt_dataset(clean, "zoom_blur", 2)
    assert named.name == "synthetic-c:zoom_blur:2" and named.meta["severity"] == 2
    assert torch.equal(named.images, direct.images) and torch.equal(named.labels, clean.labels)


def test_chunk_streams_keep_the_published_derivation():
    """Every generated split depends on this: (seed, crc32(name), severity, chunk) through
    NumPy's SeedSequence, the top 63 bits of its first word seeding torch."""
    for seed, name, severity, chunk in ((0, "fog", 3, 0), (7, "shot_noise", 5, 2)):
        words = [seed, zlib.crc32(name.encode()), severity, chunk]
        state = int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> 1)
        expected = torch.randint(2**62, (8,), generator=torch.Generator().manual_seed(state))
        got = torch.randint(2**62, (8,), generator=_generator(seed, name, severity, chunk,
                                                               torch.device("cpu")))
        assert torch.equal(got, expected)


@pytest.mark.parametrize("name, severity, digest", [
    ("impulse_noise", 4, "865eda71acf6ba9f7904813c98fb3982"),
    ("shot_noise", 2, "5a83b1e1e02a65bfc1588548543336dc"),
])
def test_corrupted_pixels_are_unchanged(name, severity, digest):
    """SHA-256 prefixes of known outputs: a change to the chunk streams or the noises shows
    here (noises whose draws are exact, uniform thresholds and Poisson counts, so the digests
    do not hang on the order of float operations)."""
    x = torch.randint(0, 256, (8, 3, 32, 32), generator=torch.Generator().manual_seed(0),
                      dtype=torch.uint8)
    out = corrupt(x, name, severity, seed=11).numpy().tobytes()
    assert hashlib.sha256(out).hexdigest()[:32] == digest


def test_corruptions_and_presets_are_registries():
    assert list(CORRUPTIONS)[:3] == ["gaussian_noise", "shot_noise", "impulse_noise"]
    assert CORRUPTIONS["fog"] is CORRUPTIONS.get("fog") and "mist" not in CORRUPTIONS
    assert PRESETS.names() == ["cifar", "imagenet"]
    assert PRESETS.description("cifar").startswith("CIFAR-10-C")


def test_benchmark_has_the_fifteen_published_corruptions():
    assert len(BENCHMARK) == 15 and BENCHMARK[0] == "gaussian_noise"
    assert set(PRESETS["cifar"].params) == set(PRESETS["imagenet"].params) == set(CORRUPTIONS)
    assert all(len(v) == 5 for _, p in PRESETS.items() for v in p.params.values())
    assert len(PRESETS["cifar"].params["zoom_blur"][0].factors) == 7  # np.arange(1, 1.06, .01)
    assert np.isclose(PRESETS["imagenet"].params["elastic_transform"][0].amplitude, 0.0625)


@pytest.mark.data
@pytest.mark.skipif(not (Path(os.environ.get("THRESHER_DATA", "/nonexistent"))
                         / "cifar10-jpeg.tar.gz").is_file(), reason="CIFAR-10 not in THRESHER_DATA")
def test_cifar10_c_by_name_is_generated_once_then_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("THRESHER_CACHE", str(tmp_path))
    first = load("cifar10-c:fog:3", "test")
    assert len(list(tmp_path.glob("cifar10_c-test-*.json"))) == 1
    again = load("cifar10-c:fog:3", "test")
    assert first.images.shape == (10000, 3, 32, 32) and torch.equal(first.images, again.images)
    assert not torch.equal(first.images, load("cifar10", "test").images)


# --- thresher corrupt --out -------------------------------------------------------------------

def corrupt_cli(out: Path, *extra: str) -> int:
    """`thresher corrupt` on the built-in digits test split (360 8x8 images): well under 1 s."""
    return main(["corrupt", "--dataset", "digits", "--out", str(out), "--device", "cpu",
                 "--corruptions", "contrast", "gaussian_noise", "--severities", "1", *extra])


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if `thresher corrupt` starts loading or corrupting anything."""
    import thresher.studies.robustness as robustness

    monkeypatch.setattr(robustness, "load", lambda *a, **k: pytest.fail("loaded the data"))
    monkeypatch.setattr(robustness, "corrupt_dataset", lambda *a, **k: pytest.fail("corrupted"))


def error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_corrupt_refuses_an_unusable_out_before_any_work(tmp_path, no_work, capsys):
    file = tmp_path / "set.npy"
    file.write_bytes(b"")
    assert corrupt_cli(file) == 2
    assert error_line(capsys) == f"thresher: error: --out {file} is a file; a folder is expected"
    assert corrupt_cli(file / "sub" / "out") == 2
    assert error_line(capsys) == (f"thresher: error: --out {file}/sub/out cannot be written: its "
                                  f"parent {file}/sub cannot be created: {file} is a file")
    locked = tmp_path / "locked"
    (locked / "out").mkdir(parents=True)
    locked.chmod(0o555)
    (locked / "out").chmod(0o555)
    try:
        assert corrupt_cli(locked / "new") == 2
        assert error_line(capsys) == (f"thresher: error: --out {locked}/new cannot be written: "
                                      f"its parent {locked} is read-only")
        assert corrupt_cli(locked / "out") == 2
        assert error_line(capsys) == f"thresher: error: --out {locked}/out is read-only"
    finally:
        (locked / "out").chmod(0o755)
        locked.chmod(0o755)
    assert sorted(p.name for p in locked.iterdir()) == ["out"]


def test_corrupt_refuses_a_non_empty_out_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "digits-c"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert corrupt_cli(out) == 2
    assert error_line(capsys) == (f"thresher: error: --out {out} is not empty (notes.txt); pass "
                                  f"--overwrite to replace its contents, or choose another folder")
    assert (out / "notes.txt").read_text() == "mine"
    assert corrupt_cli(out, "--overwrite") == 0
    assert sorted(p.name for p in out.iterdir()) == ["contrast.npy", "gaussian_noise.npy",
                                                     "labels.npy"]
    assert np.load(out / "contrast.npy").shape == (360, 8, 8, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits-c"]  # no staging left


def test_an_interrupted_overwrite_keeps_the_old_set_whole(tmp_path, monkeypatch, capsys):
    import thresher.studies.robustness as robustness

    out = tmp_path / "digits-c"
    assert corrupt_cli(out) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    calls = []

    def interrupted(data, name, *args):  # Ctrl-C once contrast.npy is written, mid-set
        calls.append(name)
        if name == "gaussian_noise":
            raise KeyboardInterrupt
        return corrupt_dataset(data, name, *args)

    monkeypatch.setattr(robustness, "corrupt_dataset", interrupted)
    assert main(["corrupt", "--dataset", "digits", "--out", str(out), "--device", "cpu",
                 "--corruptions", "contrast", "gaussian_noise", "--severities", "5",
                 "--overwrite"]) == 130
    assert calls == ["contrast", "gaussian_noise"]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # not severity 5's contrast
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits-c"]


def test_a_killed_corrupts_staging_folder_is_removed_by_the_next_run(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    child.send_signal(signal.SIGKILL)
    child.wait()  # reaped: the pid names no process now
    dead = tmp_path / f".digits-c.{child.pid}.tmp"
    dead.mkdir()
    (dead / "contrast.npy").write_bytes(bytes(1000))
    live = tmp_path / ".digits-c.1.tmp"  # pid 1 is alive: another run's, left alone
    live.mkdir()
    assert corrupt_cli(tmp_path / "digits-c") == 0
    assert not dead.exists() and live.is_dir()
