"""Continual task streams: transforms, disjoint shares, seeds, label rewriting."""

import pytest
import torch

from thresher.data.dataset import ArrayDataset
from thresher.data.streams import (
    KINDS,
    make_stream,
    num_outputs,
    permute_pixels,
    rotate,
)
from thresher.seeding import make_generator


def numbered(n: int, size: int = 6, seed: int = 0) -> ArrayDataset:
    """Random images whose label is their row number, so every example can be traced."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=g)
    return ArrayDataset(images, torch.arange(n), [str(i) for i in range(n)], "numbered")


def ten_classes(n: int = 200) -> ArrayDataset:
    images = torch.zeros(n, 1, 4, 4, dtype=torch.uint8)
    return ArrayDataset(images, torch.arange(n) % 10, [f"c{i}" for i in range(10)], "ten")


def test_permute_pixels_by_hand():
    images = torch.tensor([[[[1, 2], [3, 4]]]], dtype=torch.uint8)
    out = permute_pixels(images, torch.tensor([3, 2, 1, 0]))
    assert out.tolist() == [[[[4, 3], [2, 1]]]]
    with pytest.raises(ValueError, match="does not fit 2x2"):
        permute_pixels(images, torch.arange(5))


def test_rotate_matches_exact_quarter_turns_and_keeps_uint8():
    images = numbered(5, size=7).images
    assert torch.equal(rotate(images, 0), images)
    assert torch.equal(rotate(images, 90), torch.rot90(images, 1, (2, 3)))
    assert torch.equal(rotate(images, 180), torch.flip(images, (2, 3)))
    assert rotate(images, 33).dtype == torch.uint8


def test_a_stream_draws_from_the_seeds_own_stream_key():
    """Task shares come from ``make_generator(seed, "stream")``, not the bare seed, so the
    stream does not repeat the draws of another consumer of the same seed."""
    train = numbered(40)
    tasks = make_stream("rotation", train, train, 2, seed=7)
    order = torch.randperm(40, generator=make_generator(7, "stream"))
    assert tasks[0].train.labels.tolist() == order[:20].tolist()
    bare = torch.randperm(40, generator=torch.Generator().manual_seed(7))
    assert tasks[0].train.labels.tolist() != bare[:20].tolist()


def test_kinds_are_a_registry_with_their_default_task_counts():
    assert list(KINDS) == ["permutation", "rotation", "class_split"]
    assert {name: kind.default_tasks for name, kind in KINDS.items()} == \
        {"permutation": 10, "rotation": 10, "class_split": 5}


def test_permutation_tasks_are_disjoint_shares_with_one_permutation_each():
    train, test = numbered(100), numbered(40, seed=1)
    tasks = make_stream("permutation", train, test, 4, seed=3)
    labels = [set(t.train.labels.tolist()) for t in tasks]
    assert all(len(s) == 25 for s in labels)
    assert set().union(*labels) == set(range(100))
    assert sum(len(s) for s in labels) == 100  # disjoint
    assert sum(len(t.test) for t in tasks) == 40
    for t in tasks:  # every image of a task went through the same permutation
        originals = train.images[t.train.labels].flatten(1).float()
        permuted = t.train.images.flatten(1).float()
        # the permutation is the column order that maps originals onto permuted images
        cols = [int((originals - permuted[:, [j]]).abs().sum(0).argmin()) for j in range(36)]
        assert torch.equal(originals[:, cols], permuted)


def test_streams_are_reproducible_from_the_seed():
    train, test = numbered(60), numbered(20, seed=1)
    for kind in ("permutation", "rotation"):
        a = make_stream(kind, train, test, 3, seed=5)
        b = make_stream(kind, train, test, 3, seed=5)
        c = make_stream(kind, train, test, 3, seed=6)
        assert all(torch.equal(x.train.images, y.train.images) and
                   torch.equal(x.test.labels, y.test.labels) for x, y in zip(a, b))
        assert not all(torch.equal(x.train.labels, y.train.labels) for x, y in zip(a, c))


def test_rotation_angles_are_spread_evenly_and_applied_to_train_and_test():
    train = numbered(40, size=8)
    tasks = make_stream("rotation", train, train, 4, seed=0, max_angle=180, share_test=False)
    assert [t.info["angle"] for t in tasks] == [0, 45, 90, 135]
    task = tasks[2]  # 90 degrees: exact, so traceable
    assert torch.equal(task.train.images, torch.rot90(train.images[task.train.labels], 1, (2, 3)))
    assert torch.equal(task.test.images, torch.rot90(train.images, 1, (2, 3)))


def test_caps_limit_each_task():
    train, test = numbered(100), numbered(50, seed=1)
    tasks = make_stream("permutation", train, test, 2, seed=0, train_per_task=10,
                        test_per_task=7)
    assert [len(t.train) for t in tasks] == [10, 10] and [len(t.test) for t in tasks] == [7, 7]


def test_class_split_domain_rewrites_labels_and_class_keeps_them():
    data = ten_classes()
    tasks = make_stream("class_split", data, data, seed=0)  # default: 5 tasks
    assert len(tasks) == 5
    assert tasks[1].info["classes"] == ["c2", "c3"]
    assert all(set(t.train.labels.tolist()) == {0, 1} for t in tasks)
    assert all(t.train.num_classes == 2 for t in tasks)
    kept = make_stream("class_split", data, data, 5, seed=0, scenario="class")
    assert set(kept[3].test.labels.tolist()) == {6, 7}
    assert num_outputs("class_split", 10, 5, "domain") == 2
    assert num_outputs("class_split", 10, 5, "class") == 10
    assert num_outputs("rotation", 10, 10, "domain") == 10


@pytest.mark.parametrize("kind, tasks, message", [
    ("shuffle", 2, "unknown stream kind 'shuffle'; choose one of: permutation, rotation"),
    ("rotatoin", 2, "did you mean 'rotation'"),
    ("class_split", 3, "3 tasks do not divide 10"),
    ("permutation", 0, "at least one task"),
])
def test_bad_streams_are_refused_with_the_reason(kind, tasks, message):
    data = ten_classes()
    with pytest.raises(ValueError, match=message):
        make_stream(kind, data, data, tasks)
