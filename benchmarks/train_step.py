"""ResNet-20 training images/s: `thresher.train.fit` vs a bare hand-written loop.

Both train the same architecture from the same initial weights on the same uint8 CIFAR-10
tensors (no augmentation, SGD + Nesterov, cosine schedule, batch 128). The bare loop is the
least a user could write: slice a shuffled batch, convert and normalise, forward, backward,
step. Trials alternate between the two (ABAB...) and the median is reported, so drift in the
machine's speed hits both equally. A third line shows the bare loop without channels-last, the
memory format `fit` picks for convolutional models on the CPU.

    python benchmarks/train_step.py [--images 3840] [--trials 3]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

from thresher.data import load
from thresher.data.pipeline import Normalize
from thresher.models import build
from thresher.train import FitConfig, fit, set_seed


def bare_loop(model, images, labels, norm: Normalize, batch: int, lr: float,
              channels_last: bool) -> float:
    """Images/s of the plainest correct training loop over ``images`` (one epoch)."""
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    steps = len(images) // batch
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    mean = torch.tensor(norm.mean)[None, :, None, None]
    std = torch.tensor(norm.std)[None, :, None, None]
    model.train()
    start = time.perf_counter()
    order = torch.randperm(len(images))
    for i in range(steps):
        idx = order[i * batch:(i + 1) * batch]
        x = (images[idx].float() / 255 - mean) / std
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(model(x), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return steps * batch / (time.perf_counter() - start)


def with_fit(model, data, norm: Normalize, batch: int, lr: float) -> float:
    cfg = FitConfig(epochs=1, batch_size=batch, lr=lr, augment="none", progress=False)
    start = time.perf_counter()
    result = fit(model, data, cfg, normalize=norm, device=torch.device("cpu"))
    steps = len(data) // batch
    assert result.history[-1]["epoch"] == 1
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--images", type=int, default=3840, help="images per trial")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()

    set_seed(0)
    full = load(args.dataset, "train")
    data = full.subset(torch.randperm(len(full))[:args.images])
    norm = Normalize.from_dataset(data)
    init = build("resnet20", data.num_classes, data.in_shape)
    rates: dict[str, list[float]] = {"fit (channels-last auto)": [], "bare loop, channels-last": [],
                                     "bare loop, contiguous": []}
    for _ in range(args.trials):
        rates["fit (channels-last auto)"].append(
            with_fit(copy.deepcopy(init), data, norm, args.batch_size, 0.05))
        rates["bare loop, channels-last"].append(
            bare_loop(copy.deepcopy(init), data.images, data.labels, norm, args.batch_size,
                      0.05, channels_last=True))
        rates["bare loop, contiguous"].append(
            bare_loop(copy.deepcopy(init), data.images, data.labels, norm, args.batch_size,
                      0.05, channels_last=False))
    median = {k: statistics.median(v) for k, v in rates.items()}
    print(f"ResNet-20 on {args.dataset}: {args.images} images x {args.trials} trials, batch "
          f"{args.batch_size}, {torch.get_num_threads()} torch threads (median images/s)")
    for name, rate in median.items():
        trials = " ".join(f"{r:.0f}" for r in rates[name])
        print(f"{name:28s} {rate:8.1f}   trials: {trials}")
    overhead = median["bare loop, channels-last"] / median["fit (channels-last auto)"] - 1
    gain = median["bare loop, channels-last"] / median["bare loop, contiguous"] - 1
    print(f"fit overhead vs bare loop: {100 * overhead:+.1f}% (target < 5%) -> "
          f"{'met' if overhead < 0.05 else 'NOT met'}")
    print(f"channels-last speed-up of the bare loop on this CPU: {100 * gain:+.1f}%")


if __name__ == "__main__":
    main()
