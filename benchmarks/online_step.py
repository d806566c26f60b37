"""Why the continual learners keep their own step: `fit` vs a learner's step at batch 10.

Both train the same MLP (784-200-10, SGD, constant rate, batch 10) on the same MNIST images for
one pass of ``--images`` examples: once through `thresher.train.fit` (autograd step with the
shared hooks seam) and once through the continual loop's naive learner (closed-form gradient
written into a flat buffer, `thresher.optim.FlatGrad`). Trials alternate and the median is
printed, with the ratio: what a stream of thousands of tiny steps would pay for sharing `fit`.

    THRESHER_DATA=/path/to/data python benchmarks/online_step.py [--images 6000] [--trials 5]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from thresher.data import load
from thresher.data.pipeline import BatchLoader, Normalize
from thresher.models import build
from thresher.studies.continual.config import ContinualConfig
from thresher.studies.continual.learners import build_learner
from thresher.train import FitConfig, fit, set_seed


def with_fit(model, data, norm: Normalize, batch: int) -> float:
    cfg = FitConfig(epochs=1, batch_size=batch, lr=1e-3, momentum=0.0, nesterov=False,
                    weight_decay=0.0, schedule="constant", progress=False)
    start = time.perf_counter()
    fit(model, data, cfg, normalize=norm, device=torch.device("cpu"))
    return time.perf_counter() - start


def with_learner(model, data, norm: Normalize, batch: int) -> float:
    learner = build_learner("naive", model, ContinualConfig(), 10, data.in_shape,
                            torch.device("cpu"), 0)
    loader = BatchLoader(data, batch, shuffle=True, normalize=norm, seed=0)
    start = time.perf_counter()
    total = torch.zeros(())
    for b in loader:
        total += learner.step(b.x, b.y)
    total.item()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6000)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the "
                        "continual study's default is 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    set_seed(0)
    full = load("mnist", "train")
    data = full.subset(torch.randperm(len(full))[:args.images])
    norm = Normalize.from_dataset(data)
    init = build("mlp", 10, data.in_shape, widths=[200])
    times: dict[str, list[float]] = {"fit": [], "learner step": []}
    for _ in range(args.trials):
        times["fit"].append(with_fit(copy.deepcopy(init), data, norm, args.batch_size))
        times["learner step"].append(with_learner(copy.deepcopy(init), data, norm,
                                                  args.batch_size))
    median = {k: statistics.median(v) for k, v in times.items()}
    steps = args.images // args.batch_size
    print(f"MLP 784-200-10 on MNIST, {steps} steps of batch {args.batch_size}, "
          f"{args.threads} thread(s), median of {args.trials} alternating trials")
    for name, seconds in median.items():
        print(f"{name:14s} {seconds:7.3f} s  ({1e6 * seconds / steps:6.1f} us/step)   trials: "
              + " ".join(f"{t:.3f}" for t in times[name]))
    print(f"fit / learner step: {median['fit'] / median['learner step']:.2f}x")


if __name__ == "__main__":
    main()
