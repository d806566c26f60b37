"""Continual-learning task streams built from one image dataset.

A stream is a list of `Task`s, each a (train, test) pair of `ArrayDataset`s. Three classic
kinds:

- ``permutation``: task t shuffles the pixels of its own disjoint share of the images with its
  own fixed permutation (one gather for the whole task);
- ``rotation``: task t rotates its own share by an angle spread evenly over
  ``[0, max_angle)`` (one ``grid_sample`` over all images of the task);
- ``class_split``: the classes are divided evenly across tasks; labels become the within-task
  index (domain-incremental, the default) or stay as they are (class-incremental).

Everything is a tensor operation on whole tasks, drawn from the ``"stream"`` stream of the seed
(`thresher.seeding`), and the images stay uint8 so the device pipeline
(`thresher.data.pipeline`) converts and normalises them per batch. The kinds are the registry
`KINDS`; a new kind registers a `StreamKind`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from thresher.data.dataset import ArrayDataset
from thresher.registry import Registry
from thresher.seeding import make_generator

Scenario = Literal["domain", "class"]


@dataclass
class Task:
    """One task of a stream: its data and what makes it a task (for reports only)."""

    index: int
    train: ArrayDataset
    test: ArrayDataset
    info: dict = field(default_factory=dict)  # angle, classes, ... (never shown to learners)


# ---------------------------------------------------------------------------------------------
# batched transforms: whole tensors in, whole tensors out


def permute_pixels(images: torch.Tensor, permutation: torch.Tensor) -> torch.Tensor:
    """Apply one pixel permutation (over H*W, the same for every channel) to ``[N, C, H, W]``."""
    n, c, h, w = images.shape
    if permutation.shape != (h * w,):
        raise ValueError(f"permutation of shape {tuple(permutation.shape)} does not fit "
                         f"{h}x{w} images")
    flat = images.reshape(n, c, h * w)
    return flat.index_select(2, permutation.to(images.device)).reshape(n, c, h, w)


def rotate(images: torch.Tensor, degrees: float, chunk: int = 16384) -> torch.Tensor:
    """Rotate uint8 ``[N, C, H, W]`` images counter-clockwise about their centre (bilinear,
    zeros outside), one ``grid_sample`` per chunk of images."""
    if images.shape[0] == 0 or degrees % 360 == 0:
        return images.clone()
    angle = math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    # affine_grid maps output coordinates to input coordinates: the inverse rotation.
    theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], device=images.device)
    out = torch.empty_like(images)
    for start in range(0, images.shape[0], chunk):
        part = images[start:start + chunk].float()
        grid = F.affine_grid(theta.expand(part.shape[0], 2, 3), list(part.shape),
                             align_corners=False)
        rotated = F.grid_sample(part, grid, mode="bilinear", padding_mode="zeros",
                                align_corners=False)
        out[start:start + chunk] = rotated.round_().clamp_(0, 255).to(torch.uint8)
    return out


# ---------------------------------------------------------------------------------------------
# streams


@dataclass(frozen=True)
class StreamOptions:
    """What `make_stream` passes every kind besides the data, task count and generator."""

    max_angle: float = 180.0
    scenario: Scenario = "domain"
    train_per_task: int | None = None
    test_per_task: int | None = None
    share_test: bool = True


Build = Callable[[ArrayDataset, ArrayDataset, int, torch.Generator, StreamOptions], list[Task]]


@dataclass(frozen=True)
class StreamKind:
    """One kind of stream: how it splits the data into tasks, and its usual number of tasks."""

    build: Build
    default_tasks: int


KINDS: Registry[StreamKind] = Registry("stream kind")


def make_stream(kind: str, train: ArrayDataset, test: ArrayDataset, num_tasks: int | None = None,
                *, seed: int = 0, max_angle: float = 180.0, scenario: Scenario = "domain",
                train_per_task: int | None = None, test_per_task: int | None = None,
                share_test: bool = True) -> list[Task]:
    """Split ``train``/``test`` into a stream of ``num_tasks`` tasks of the given ``kind``.

    ``train_per_task``/``test_per_task`` cap each task's size (quick runs, benchmarks). With
    ``share_test`` each permutation/rotation task is evaluated on its own share of the test
    set; otherwise every task sees the whole test set under its own transform.
    """
    spec = KINDS[kind]
    num_tasks = spec.default_tasks if num_tasks is None else num_tasks
    if num_tasks < 1:
        raise ValueError(f"a stream needs at least one task, got num_tasks={num_tasks}")
    options = StreamOptions(max_angle, scenario, train_per_task, test_per_task, share_test)
    return spec.build(train, test, num_tasks, make_generator(seed, "stream"), options)


def _transformed(train: ArrayDataset, test: ArrayDataset, num_tasks: int, gen: torch.Generator,
                 options: StreamOptions, transform: Callable[[int], tuple[Callable, dict]]
                 ) -> list[Task]:
    """Disjoint random shares of the data, task t's images under ``transform(t)``'s function."""
    train_parts = _shares(len(train), num_tasks, gen, options.train_per_task)
    test_parts = (_shares(len(test), num_tasks, gen, options.test_per_task) if options.share_test
                  else [_first(torch.arange(len(test)), options.test_per_task, gen)] * num_tasks)
    tasks = []
    for t in range(num_tasks):
        tr, te = train.subset(train_parts[t]), test.subset(test_parts[t])
        fn, info = transform(t)
        tr.images, te.images = fn(tr.images), fn(te.images)
        tasks.append(Task(t, tr, te, info))
    return tasks


def _permutation(train: ArrayDataset, test: ArrayDataset, num_tasks: int, gen: torch.Generator,
                 options: StreamOptions) -> list[Task]:
    """Task t: its share of the pixels shuffled by its own fixed permutation."""
    h, w = train.images.shape[2:]

    def transform(t: int) -> tuple[Callable, dict]:
        perm = torch.randperm(h * w, generator=gen)
        return (lambda images: permute_pixels(images, perm)), {"permutation": perm}

    return _transformed(train, test, num_tasks, gen, options, transform)


def _rotation(train: ArrayDataset, test: ArrayDataset, num_tasks: int, gen: torch.Generator,
              options: StreamOptions) -> list[Task]:
    """Task t: its share rotated by ``max_angle * t / num_tasks`` degrees."""
    def transform(t: int) -> tuple[Callable, dict]:
        angle = options.max_angle * t / num_tasks
        return (lambda images: rotate(images, angle)), {"angle": angle}

    return _transformed(train, test, num_tasks, gen, options, transform)


def _shares(n: int, num_tasks: int, gen: torch.Generator, cap: int | None) -> list[torch.Tensor]:
    """A random split of ``range(n)`` into ``num_tasks`` disjoint, near-equal shares."""
    if n < num_tasks:
        raise ValueError(f"cannot split {n} images into {num_tasks} tasks")
    order = torch.randperm(n, generator=gen)
    return [_first(part, cap, gen) for part in order.tensor_split(num_tasks)]


def _first(indices: torch.Tensor, cap: int | None, gen: torch.Generator) -> torch.Tensor:
    if cap is None or cap >= len(indices):
        return indices
    return indices[torch.randperm(len(indices), generator=gen)[:cap]]


def _class_split(train: ArrayDataset, test: ArrayDataset, num_tasks: int, gen: torch.Generator,
                 options: StreamOptions) -> list[Task]:
    """Task t: the images of its own classes, relabelled within the task (``domain``)."""
    num_classes, scenario = train.num_classes, options.scenario
    if num_classes % num_tasks:
        raise ValueError(f"class_split divides the {num_classes} classes evenly across tasks; "
                         f"{num_tasks} tasks do not divide {num_classes}")
    if scenario not in ("domain", "class"):
        raise ValueError(f"unknown scenario {scenario!r}; choose 'domain' or 'class'")
    per_task = num_classes // num_tasks
    tasks = []
    for t in range(num_tasks):
        classes = list(range(t * per_task, (t + 1) * per_task))
        parts = []
        for data, cap in ((train, options.train_per_task), (test, options.test_per_task)):
            rows = torch.nonzero(torch.isin(data.labels, torch.tensor(classes,
                                                                      device=data.device)))
            part = data.subset(_first(rows.flatten().cpu(), cap, gen))
            if scenario == "domain":
                part.labels = part.labels - classes[0]
                part.classes = [f"class {i} of task" for i in range(per_task)]
            parts.append(part)
        tasks.append(Task(t, parts[0], parts[1],
                          {"classes": [train.classes[c] for c in classes]}))
    return tasks


KINDS.register("permutation", StreamKind(_permutation, 10), description=_permutation.__doc__)
KINDS.register("rotation", StreamKind(_rotation, 10), description=_rotation.__doc__)
KINDS.register("class_split", StreamKind(_class_split, 5), description=_class_split.__doc__)


def num_outputs(kind: str, dataset_classes: int, num_tasks: int, scenario: Scenario) -> int:
    """How many outputs the model needs for the stream (the label space every task shares)."""
    if kind == "class_split" and scenario == "domain":
        return dataset_classes // num_tasks
    return dataset_classes
