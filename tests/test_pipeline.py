"""Device batch pipeline and batched augmentation."""

import pytest
import torch

from thresher.data.augment import (
    POLICIES,
    color_jitter,
    cutout,
    get_policy,
    random_crop,
    random_rotation,
)
from thresher.data.dataset import ArrayDataset
from thresher.data.pipeline import BatchLoader, Normalize


def make_data(n: int = 50, c: int = 3, size: int = 32, seed: int = 0) -> ArrayDataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, c, size, size), dtype=torch.uint8, generator=g)
    labels = torch.arange(n) % 10
    return ArrayDataset(images, labels, [str(i) for i in range(10)], "toy")


def test_normalize_matches_direct_computation():
    data = make_data(40)
    norm = Normalize.from_dataset(data, chunk=7)
    x = data.images.double() / 255
    assert torch.allclose(torch.tensor(norm.mean, dtype=torch.float64), x.mean(dim=(0, 2, 3)),
                          atol=1e-9)
    assert torch.allclose(torch.tensor(norm.std, dtype=torch.float64),
                          x.std(dim=(0, 2, 3), unbiased=False), atol=1e-9)
    z = norm(x.float())
    assert torch.allclose(z.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)


def test_one_epoch_visits_every_example_once_and_is_seeded():
    data = make_data(53)
    loader = BatchLoader(data, 10, shuffle=True, seed=3)
    seen = torch.cat([b.index for b in loader])
    assert sorted(seen.tolist()) == list(range(53))
    assert len(loader) == 6
    again = torch.cat([b.index for b in BatchLoader(data, 10, shuffle=True, seed=3)])
    other = torch.cat([b.index for b in BatchLoader(data, 10, shuffle=True, seed=4)])
    assert torch.equal(seen, again) and not torch.equal(seen, other)
    # a second epoch from the same loader draws a new order
    assert not torch.equal(seen, torch.cat([b.index for b in loader]))


def test_batches_carry_matching_labels_weights_and_drop_last():
    data = make_data(25)
    weights = torch.arange(25, dtype=torch.float32)
    loader = BatchLoader(data, 10, shuffle=True, weights=weights, drop_last=True)
    batches = list(loader)
    assert len(batches) == 2 and all(len(b.y) == 10 for b in batches)
    for b in batches:
        assert torch.equal(b.y, data.labels[b.index])
        assert torch.equal(b.weight, weights[b.index])


def test_unaugmented_batch_is_exact_normalised_pixels():
    data = make_data(8)
    norm = Normalize((0.5, 0.25, 0.0), (0.5, 0.5, 1.0))
    batch = next(iter(BatchLoader(data, 8, normalize=norm)))
    expected = (data.images.float() / 255 - torch.tensor([0.5, 0.25, 0.0])[:, None, None]) \
        / torch.tensor([0.5, 0.5, 1.0])[:, None, None]
    assert torch.allclose(batch.x, expected, atol=1e-6)


def test_random_crop_is_a_shifted_window_of_the_zero_padded_image():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.uint8).reshape(2, 1, 6, 6)
    g = torch.Generator().manual_seed(0)
    out = random_crop(x, 2, g)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        windows = [padded[i, :, dy:dy + 6, dx:dx + 6] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)


def test_crop_with_flip_is_a_mirrored_or_plain_window():
    x = torch.arange(300 * 2 * 5 * 5, dtype=torch.int64).reshape(300, 2, 5, 5).to(torch.uint8)
    out = random_crop(x, 1, torch.Generator().manual_seed(2), flip=True)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    mirrored = 0
    for i in range(300):
        windows = [padded[i, :, dy:dy + 5, dx:dx + 5] for dy in range(3) for dx in range(3)]
        plain = any(torch.equal(out[i], w) for w in windows)
        flipped = any(torch.equal(out[i], w.flip(-1)) for w in windows)
        assert plain or flipped
        mirrored += flipped and not plain
    assert 100 < mirrored < 200


def test_crop_offsets_cover_all_shifts():
    x = torch.ones(4000, 1, 8, 8, dtype=torch.uint8)
    out = random_crop(x, 1, torch.Generator().manual_seed(0))
    # a shift shows up as a zero row/column at one border; all 9 shifts occur
    top, bottom = out[:, 0, 0].sum(1) == 0, out[:, 0, -1].sum(1) == 0
    left, right = out[:, 0, :, 0].sum(1) == 0, out[:, 0, :, -1].sum(1) == 0
    combos = {(int(t), int(b), int(lf), int(r)) for t, b, lf, r in zip(top, bottom, left, right)}
    assert len(combos) == 9


def test_flip_mirrors_about_half():
    x = torch.arange(4, dtype=torch.uint8).reshape(1, 1, 1, 4).repeat(1000, 1, 1, 1)
    out = random_crop(x, 0, torch.Generator().manual_seed(1), flip=True)
    flipped = (out[:, 0, 0, 0] == 3)
    assert torch.equal(out[flipped], x[flipped].flip(-1))
    assert torch.equal(out[~flipped], x[~flipped])
    assert 430 < flipped.sum() < 570


def test_color_jitter_stays_in_range_and_zero_strength_is_identity():
    x = torch.rand(16, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    assert torch.allclose(color_jitter(x, 0, 0, 0, 0, g), x)
    y = color_jitter(x, 0.4, 0.4, 0.4, 0.1, g)
    assert y.min() >= 0 and y.max() <= 1 and not torch.allclose(x, y)


def test_hue_rotation_keeps_gray_pixels_gray():
    gray = torch.full((4, 3, 5, 5), 0.3)
    y = color_jitter(gray, 0, 0, 0, 0.5, torch.Generator().manual_seed(0))
    assert torch.allclose(y, gray, atol=1e-5)


def test_rotation_by_zero_degrees_is_identity():
    x = torch.rand(3, 1, 9, 9)
    g = torch.Generator().manual_seed(0)
    assert torch.allclose(random_rotation(x, 0.0, g), x, atol=1e-5)


def test_cutout_zeroes_one_square_clipped_at_borders():
    x = torch.ones(200, 1, 32, 32)
    out = cutout(x, 16, torch.Generator().manual_seed(0))
    zeros = (out == 0).sum(dim=(1, 2, 3))
    assert zeros.max() == 256 and zeros.min() >= 64  # corners keep at least a quarter


def test_policies_preserve_shape_dtype_and_are_reproducible():
    data = make_data(32)
    norm = Normalize.from_dataset(data)
    for name in POLICIES:
        a = next(iter(BatchLoader(data, 32, augment=name, normalize=norm, seed=5)))
        b = next(iter(BatchLoader(data, 32, augment=name, normalize=norm, seed=5)))
        assert a.x.shape == (32, 3, 32, 32) and a.x.dtype == torch.float32
        assert torch.equal(a.x, b.x)


def test_policies_are_a_registry_with_descriptions():
    assert POLICIES.names() == ["none", "standard", "strong", "cutout"]
    assert get_policy("strong").rotation == 15.0 and "jitter" in POLICIES.description("strong")


def test_unknown_policy_and_bad_sizes_are_rejected():
    with pytest.raises(ValueError,
                       match="unknown augmentation 'standart'.*did you mean 'standard'"):
        get_policy("standart")
    with pytest.raises(ValueError, match="batch_size must be positive"):
        BatchLoader(make_data(4), 0)
    with pytest.raises(ValueError, match="do not match"):
        BatchLoader(make_data(4), 2, weights=torch.ones(3))


def test_a_stratified_subset_keeps_class_shares_and_is_drawn_from_the_generator():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    data = ArrayDataset(torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1).repeat(
        1, 1, 2, 2), labels, ["a", "b", "c"], "toy")
    sub = data.stratified(11, torch.Generator().manual_seed(0))
    # shares 5.5, 3.3, 2.2: floors 5, 3, 2 and the one left over goes to the largest remainder
    assert sub.class_counts().tolist() == [6, 3, 2]
    rows = sub.images[:, 0, 0, 0].long()
    assert torch.equal(labels[rows], sub.labels) and len(set(rows.tolist())) == 11
    again = data.stratified(11, torch.Generator().manual_seed(0))
    other = data.stratified(11, torch.Generator().manual_seed(1))
    assert torch.equal(again.images, sub.images) and not torch.equal(other.images, sub.images)
    with pytest.raises(ValueError, match="toy: a subset of 101 rows needs 0 < n <= 100"):
        data.stratified(101, torch.Generator())
