"""A-GEM: Thresher against Avalanche on the identical 5-task permuted-MNIST stream.

Setup (issue 4): 10,000 training images per task, each task with its own pixel permutation,
tested on the whole 10,000-image test set under that permutation; MLP 784-200-10, SGD lr 0.1,
batch 10, one epoch per task, 250 memory patterns per task, reference batch 256. Timed: the
training calls only (evaluation happens once, after the last task, outside the clock).

Avalanche needs its own torch, so it lives in a separate virtual environment:

    python3 -m venv benchmarks/.venv-avalanche
    benchmarks/.venv-avalanche/bin/pip install torch==2.14.1 torchvision==0.29.1 "avalanche-lib==0.6.*"

One invocation runs both sides: this script builds the stream with `thresher.data.streams`,
writes it as .npy files to a temporary folder, runs Thresher's A-GEM in this process and
Avalanche's ``AGEM`` in a subprocess of the other environment on the very same arrays (already
normalised, so Avalanche spends no time on transforms), then prints both side by side:

    THRESHER_DATA=/path/to/data .venv/bin/python benchmarks/continual_agem.py [--threads N]

Target: Thresher at least 3x faster at equal or better final average accuracy. Both sides get
the same threads (default: every core). On a single thread the ratio cannot reach 3x: the
reference gradient's two 256 x 784 x 200 matmuls per step run near one core's peak and take
about two thirds of our step, so even an overhead-free step would be only ~3x faster than
Avalanche's; with more threads the matmuls shrink and Avalanche's per-step Python does not.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TASKS, TRAIN_PER_TASK, LR, BATCH, PER_TASK, REFERENCE = 5, 10_000, 0.1, 10, 250, 256
AVALANCHE_PYTHON = Path(__file__).resolve().parent / ".venv-avalanche" / "bin" / "python"


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


def run_thresher(folder: Path, seed: int) -> dict:
    import torch

    from thresher.data.dataset import ArrayDataset
    from thresher.data.pipeline import BatchLoader, Normalize
    from thresher.models import build
    from thresher.studies.continual.learners import AGEM
    from thresher.studies.continual.memory import TaskRingBuffer
    from thresher.train import evaluate, set_seed

    stats = json.loads((folder / "normalize.json").read_text())
    norm = Normalize((stats["mean"],), (stats["std"],))

    def data(split: str, t: int) -> ArrayDataset:
        return ArrayDataset(np.load(folder / f"{split}{t}_x.npy"),
                            np.load(folder / f"{split}{t}_y.npy"), [str(i) for i in range(10)],
                            "permuted-mnist")

    set_seed(seed)
    model = build("mlp", 10, (1, 28, 28), widths=[200])
    generator = torch.Generator().manual_seed(seed)
    learner = AGEM(model, torch.optim.SGD(model.parameters(), lr=LR),
                   TaskRingBuffer(PER_TASK, (1, 28, 28), torch.device("cpu"), generator),
                   REFERENCE)
    seconds = 0.0
    for t in range(TASKS):
        loader = BatchLoader(data("train", t), BATCH, shuffle=True, normalize=norm, seed=seed + t)
        start = time.perf_counter()
        for batch in loader:
            learner.step(batch.x, batch.y)
        learner.end_task()
        seconds += time.perf_counter() - start
    accs = [evaluate(model, data("test", t), normalize=norm)["accuracy"] for t in range(TASKS)]
    return {"seconds": seconds, "accuracies": accs}


def run_avalanche(folder: Path, seed: int) -> dict:
    """Runs inside the Avalanche environment: imports nothing from Thresher."""
    import warnings

    warnings.filterwarnings("ignore")
    import torch
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
    from avalanche.benchmarks.utils.classification_dataset import \
        _make_taskaware_tensor_classification_dataset as tensor_dataset
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
    seconds = 0.0
    for experience in benchmark.train_stream:
        start = time.perf_counter()
        strategy.train(experience)
        seconds += time.perf_counter() - start
    results = strategy.eval(benchmark.test_stream)
    accs = [results[f"Top1_Acc_Exp/eval_phase/test_stream/Exp{t:03d}"] for t in range(TASKS)]
    return {"seconds": seconds, "accuracies": accs}


def median_run(runs: list[dict]) -> dict:
    """The run with the median training time (the lower middle one for an even count)."""
    return sorted(runs, key=lambda r: r["seconds"])[(len(runs) - 1) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, help="torch threads, both sides (default: all "
                        "cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="runs per side, alternating; "
                        "the median time is compared (one run is at the mercy of a busy core)")
    parser.add_argument("--avalanche", metavar="FOLDER", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    args.threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(args.threads)
    if args.avalanche:  # the subprocess side
        print(json.dumps(run_avalanche(Path(args.avalanche), args.seed)))
        return
    if not AVALANCHE_PYTHON.exists():
        sys.exit(f"no Avalanche environment at {AVALANCHE_PYTHON}; create it as the docstring "
                 f"of {Path(__file__).name} says")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_stream(folder, args.seed)
        ours_runs, theirs_runs = [], []
        for _ in range(args.repeats):
            ours_runs.append(run_thresher(folder, args.seed))
            done = subprocess.run([str(AVALANCHE_PYTHON), __file__, "--avalanche", tmp,
                                   "--seed", str(args.seed), "--threads", str(args.threads)],
                                  capture_output=True, text=True, env={**os.environ},
                                  check=False)
            if done.returncode != 0:
                sys.exit(f"Avalanche side failed:\n{done.stderr[-3000:]}")
            theirs_runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    ours, theirs = median_run(ours_runs), median_run(theirs_runs)
    rows = [("Thresher A-GEM", ours), ("Avalanche AGEM", theirs)]
    print(f"5-task permuted MNIST, {TRAIN_PER_TASK} train images/task, batch {BATCH}, "
          f"SGD lr {LR}, memory {PER_TASK}/task, reference batch {REFERENCE}, "
          f"{args.threads} thread(s), median of {args.repeats} run(s) per side")
    for (name, r), runs in zip(rows, (ours_runs, theirs_runs)):
        avg = sum(r["accuracies"]) / TASKS
        times = " ".join(f"{x['seconds']:.1f}" for x in runs)
        print(f"{name:16s} train {r['seconds']:7.1f} s ({times})   final average accuracy "
              f"{avg:.4f}   per task {' '.join(f'{a:.3f}' for a in r['accuracies'])}")
    print(f"speed-up (Avalanche time / Thresher time): {theirs['seconds'] / ours['seconds']:.2f}x")


if __name__ == "__main__":
    main()
