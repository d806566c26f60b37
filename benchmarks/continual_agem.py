"""A-GEM: Thresher against Avalanche on the identical 5-task permuted-MNIST stream.

Setup (issue 4): 10,000 training images per task, each task with its own pixel permutation,
tested on the whole 10,000-image test set under that permutation; MLP 784-200-10, SGD lr 0.1,
batch 10, one epoch per task, 250 memory patterns per task, reference batch 256. Timed: the
training calls only (evaluation happens once, after the last task, outside the clock).

Avalanche needs its own torch, so it lives in a separate virtual environment:

    python3 -m venv benchmarks/.venv-avalanche
    benchmarks/.venv-avalanche/bin/pip install torch==2.14.1 torchvision==0.29.1 \
        "avalanche-lib==0.6.*"

One invocation runs both sides: this script builds the stream with `thresher.data.streams`,
writes it as .npy files to a temporary folder, runs Thresher's A-GEM in this process and
Avalanche's ``AGEM`` in a subprocess of the other environment on the very same arrays (already
normalised, so Avalanche spends no time on transforms), then prints both side by side. The
sides take turns task by task (the subprocess is stepped over a pipe), because this machine's
speed drifts by half within a minute and whole runs one after another would compare moments,
not code:

    THRESHER_DATA=/path/to/data .venv/bin/python benchmarks/continual_agem.py [--threads N]

Target: Thresher at least 3x faster at equal or better final average accuracy. Both sides get
the same threads (default: every core). A third row, the arithmetic floor (`floor_tasks`), does
the same A-GEM with nothing but its arithmetic (Thresher's closed-form MLP gradient and
projection, no optimiser object, memory object or learner), so Avalanche's time over the
floor's is about the most any framework could show on the machine at hand. The reference
gradient's two 256 x 784 x 200 matmuls per step dominate the floor and run near the cores'
peak, which is why that ceiling is low on a small CPU. (Thresher's learners take the MLP's
closed-form gradient, `MLP.loss_grad`, so they are held back only by those overheads.)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

TASKS, TRAIN_PER_TASK, LR, BATCH, PER_TASK, REFERENCE = 5, 10_000, 0.1, 10, 250, 256
AVALANCHE_PYTHON = Path(__file__).resolve().parent / ".venv-avalanche" / "bin" / "python"

if TYPE_CHECKING:  # the Avalanche side imports none of Thresher
    from thresher.data.dataset import ArrayDataset
    from thresher.data.pipeline import Normalize


def write_stream(folder: Path, seed: int) -> None:
    """The stream as uint8 images + labels per task, plus the normalisation both sides use."""
    from thresher.data import load_splits
    from thresher.data.pipeline import Normalize
    from thresher.data.streams import make_stream

    train, test = load_splits("mnist", download=False)
    tasks = make_stream("permutation", train, test, TASKS, seed=seed,
                        train_per_task=TRAIN_PER_TASK, share_test=False)
    norm = Normalize.from_dataset(train)
    for t in tasks:
        for split, data in (("train", t.train), ("test", t.test)):
            np.save(folder / f"{split}{t.index}_x.npy", data.images.numpy())
            np.save(folder / f"{split}{t.index}_y.npy", data.labels.numpy())
    (folder / "normalize.json").write_text(json.dumps({"mean": norm.mean[0], "std": norm.std[0]}))


def read_stream(folder: Path) -> tuple[Normalize, Callable[[str, int], ArrayDataset]]:
    """The stream's normalisation and a reader ``data(split, task) -> ArrayDataset``."""
    from thresher.data.dataset import ArrayDataset
    from thresher.data.pipeline import Normalize

    stats = json.loads((folder / "normalize.json").read_text())

    def data(split: str, t: int) -> ArrayDataset:
        return ArrayDataset(np.load(folder / f"{split}{t}_x.npy"),
                            np.load(folder / f"{split}{t}_y.npy"), [str(i) for i in range(10)],
                            "permuted-mnist")

    return Normalize((stats["mean"],), (stats["std"],)), data


def thresher_tasks(folder: Path, seed: int) -> Iterator:
    """Thresher's A-GEM: yields each task's training seconds, then the test accuracies."""
    import torch

    from thresher.data.memory import TaskRingBuffer
    from thresher.data.pipeline import BatchLoader
    from thresher.models import build
    from thresher.seeding import make_generator
    from thresher.studies.continual.learners import AGEM
    from thresher.train import evaluate, set_seed

    norm, data = read_stream(folder)
    set_seed(seed)
    model = build("mlp", 10, (1, 28, 28), widths=[200])
    generator = make_generator(seed, "memory")  # the stream build_learner gives the memory
    learner = AGEM(model, torch.optim.SGD(model.parameters(), lr=LR),
                   TaskRingBuffer(PER_TASK, (1, 28, 28), torch.device("cpu"), generator),
                   REFERENCE)
    for t in range(TASKS):
        loader = BatchLoader(data("train", t), BATCH, shuffle=True, normalize=norm, seed=seed + t)
        start = time.perf_counter()
        for batch in loader:
            learner.step(batch.x, batch.y)
        learner.end_task()
        yield time.perf_counter() - start
    yield [evaluate(model, data("test", t), normalize=norm)["accuracy"] for t in range(TASKS)]


def floor_tasks(folder: Path, seed: int) -> Iterator:
    """The same A-GEM with nothing but its arithmetic: the MLP's closed-form gradients into
    the two rows of one buffer, the projection and a plain update, with no optimiser, memory
    object or learner around them (the ring is two slices). Its time is a floor for an eager
    PyTorch A-GEM on this machine, so Avalanche's time over it is about the largest speed-up
    any such implementation could show here. Yields like `thresher_tasks`."""
    import torch

    from thresher.data.pipeline import BatchLoader
    from thresher.models import build
    from thresher.optim import FlatGrad, project
    from thresher.seeding import make_generator
    from thresher.train import evaluate, set_seed

    norm, data = read_stream(folder)
    set_seed(seed)
    model = build("mlp", 10, (1, 28, 28), widths=[200])
    grads = FlatGrad(model.parameters(), rows=2)
    generator = make_generator(seed, "memory")  # the same draws as the Thresher side
    past_x, past_y = torch.zeros(0, 784), torch.zeros(0, dtype=torch.long)
    ring_x, ring_y = torch.zeros(PER_TASK, 784), torch.zeros(PER_TASK, dtype=torch.long)
    for t in range(TASKS):
        loader = BatchLoader(data("train", t), BATCH, shuffle=True, normalize=norm, seed=seed + t)
        start = time.perf_counter()
        for i, batch in enumerate(loader):
            x = batch.x.view(len(batch.y), -1)
            model.loss_grad(x, batch.y, grads.views[0])
            if len(past_y):
                idx = torch.randperm(len(past_y), generator=generator)[:REFERENCE]
                model.loss_grad(past_x.index_select(0, idx), past_y.index_select(0, idx),
                                grads.views[1])
                project(grads.buffer)
            with torch.no_grad():
                for param in grads.params:
                    param.sub_(param.grad, alpha=LR)
            slot = (i * BATCH) % PER_TASK
            ring_x[slot:slot + BATCH], ring_y[slot:slot + BATCH] = x, batch.y
        past_x, past_y = torch.cat([past_x, ring_x]), torch.cat([past_y, ring_y])
        yield time.perf_counter() - start
    yield [evaluate(model, data("test", t), normalize=norm)["accuracy"] for t in range(TASKS)]


def avalanche_tasks(folder: Path, seed: int) -> Iterator:
    """Avalanche's AGEM, yielding like `thresher_tasks`; runs inside the Avalanche environment
    and imports nothing from Thresher."""
    import warnings

    warnings.filterwarnings("ignore")
    import torch
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
    from avalanche.benchmarks.utils.classification_dataset import (
        _make_taskaware_tensor_classification_dataset as tensor_dataset,
    )
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training import AGEM
    from avalanche.training.plugins import EvaluationPlugin
    from torch import nn

    stats = json.loads((folder / "normalize.json").read_text())

    def data(split: str, t: int):
        x = torch.from_numpy(np.load(folder / f"{split}{t}_x.npy")).float()
        x = (x / 255.0 - stats["mean"]) / stats["std"]
        y = torch.from_numpy(np.load(folder / f"{split}{t}_y.npy")).long()
        return tensor_dataset(x, y, targets=y, task_labels=0)

    torch.manual_seed(seed)
    benchmark = benchmark_from_datasets(train=[data("train", t) for t in range(TASKS)],
                                        test=[data("test", t) for t in range(TASKS)])
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 200), nn.ReLU(), nn.Linear(200, 10))
    strategy = AGEM(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=LR),
                    criterion=nn.CrossEntropyLoss(), patterns_per_exp=PER_TASK,
                    sample_size=REFERENCE, train_mb_size=BATCH, train_epochs=1,
                    eval_mb_size=1000, device="cpu",
                    evaluator=EvaluationPlugin(accuracy_metrics(experience=True), loggers=[]))
    for experience in benchmark.train_stream:
        start = time.perf_counter()
        strategy.train(experience)
        yield time.perf_counter() - start
    results = strategy.eval(benchmark.test_stream)
    yield [results[f"Top1_Acc_Exp/eval_phase/test_stream/Exp{t:03d}"] for t in range(TASKS)]


def serve(steps: Iterator) -> None:
    """The subprocess side: one step of ``steps`` per line read, its value printed as JSON."""
    for line in sys.stdin:
        print(json.dumps(next(steps)), flush=True)
        if line.strip() == "last":
            return


def remote_avalanche(folder: Path, seed: int, threads: int) -> Iterator:
    """`avalanche_tasks` in a subprocess of the Avalanche environment, stepped over a pipe."""
    proc = subprocess.Popen([str(AVALANCHE_PYTHON), __file__, "--avalanche", str(folder),
                             "--seed", str(seed), "--threads", str(threads)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        for k in range(TASKS + 1):
            proc.stdin.write("last\n" if k == TASKS else "next\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
            if not line:
                sys.exit(f"Avalanche side failed:\n{proc.stderr.read()[-3000:]}")
            yield json.loads(line)
    finally:
        proc.stdin.close()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, help="torch threads, both sides (default: all "
                        "cores)")
    parser.add_argument("--seed", type=int, default=0, help="stream seed, and the first "
                        "training seed")
    parser.add_argument("--repeats", type=int, default=3, help="runs per side, alternating, "
                        "each with the next training seed; the median time is compared (one "
                        "run is at the mercy of a busy core) and the mean accuracy")
    parser.add_argument("--avalanche", metavar="FOLDER", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    args.threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(args.threads)
    if args.avalanche:  # the subprocess side
        serve(avalanche_tasks(Path(args.avalanche), args.seed))
        return
    if not AVALANCHE_PYTHON.exists():
        sys.exit(f"no Avalanche environment at {AVALANCHE_PYTHON}; create it as the docstring "
                 f"of {Path(__file__).name} says")
    names = ("Thresher A-GEM", "Avalanche AGEM", "arithmetic floor")
    seconds = {name: [] for name in names}  # per repeat, summed over tasks
    accuracy = {name: [] for name in names}  # per repeat, averaged over tasks
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_stream(folder, args.seed)
        for seed in range(args.seed, args.seed + args.repeats):  # one training seed per repeat
            sides = dict(zip(names, (thresher_tasks(folder, seed),
                                     remote_avalanche(folder, seed, args.threads),
                                     floor_tasks(folder, seed))))
            totals = dict.fromkeys(names, 0.0)
            for t in range(TASKS):  # task by task, in turn, so all sides meet the same machine
                for name in names[t % 3:] + names[:t % 3]:
                    totals[name] += next(sides[name])
            for name in names:
                seconds[name].append(totals[name])
                accuracy[name].append(sum(next(sides[name])) / TASKS)
    print(f"5-task permuted MNIST, {TRAIN_PER_TASK} train images/task, batch {BATCH}, "
          f"SGD lr {LR}, memory {PER_TASK}/task, reference batch {REFERENCE}, "
          f"{args.threads} thread(s); seeds {args.seed}..{args.seed + args.repeats - 1}, the "
          f"sides taking turns task by task: median training time, mean final average accuracy")
    median = {name: float(np.median(seconds[name])) for name in names}
    for name in names:
        accs = np.array(accuracy[name])
        spread = accs.std(ddof=1) if len(accs) > 1 else 0.0
        print(f"{name:16s} train {median[name]:6.1f} s "
              f"({' '.join(f'{x:.1f}' for x in seconds[name])})   final average accuracy "
              f"{accs.mean():.4f} +- {spread:.4f} ({' '.join(f'{a:.3f}' for a in accs)})")
    ours, theirs, floor = (median[name] for name in names)
    print(f"speed-up (Avalanche time / Thresher time): {theirs / ours:.2f}x")
    print(f"ceiling, the floor's speed-up (Avalanche time / floor time): {theirs / floor:.2f}x; "
          f"Thresher takes {ours / floor:.2f}x the floor's time")

if __name__ == "__main__":
    main()
