"""What airbench94 (Jordan 2024) reaches here, in how long: its full recipe on CIFAR-10.

Trains `thresher.models.airbench94` by `thresher.train.airbench` (the reference's 9.9-epoch
recipe, test-time augmentation included) on a stratified ``--train-size`` subset of the
training images (all 50,000 by default) and prints per-epoch seconds and test accuracy (plain,
and with the recipe's mirror + translate averaging at the end), next to the paper's A100
figures. With a
subset, the full run's training time is also given as measured seconds per image times
50,000 x 9.9 (the recipe's work is linear in the images seen).

    python benchmarks/airbench.py [--train-size 50000] [--seeds 0] [--threads 0]
"""

from __future__ import annotations

import argparse
import statistics

import torch

from thresher.data import load_splits
from thresher.models import build
from thresher.models.airbench import AIRBENCH94_RECIPE
from thresher.train.airbench import train_airbench94
from thresher.train.device import choose_device

PAPER = "paper: 94.01% mean over 1000 runs, 3.83 s on an A100 (3.29 s compiled)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-size", type=int, default=50_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = choose_device(args.device)
    train, test = load_splits("cifar10")
    if args.train_size < len(train):
        train = train.stratified(args.train_size, torch.Generator().manual_seed(0))
    print(f"airbench94 recipe on {len(train)} CIFAR-10 training images, {device}, "
          f"{torch.get_num_threads()} threads; {PAPER}")
    results = []
    for seed in args.seeds:
        torch.manual_seed(seed)
        model = build("airbench94", train.num_classes, train.in_shape)

        def show(row: dict, seed: int = seed) -> None:
            print(f"  seed {seed} epoch {row['epoch']}: {row['seconds']:.0f} s, train loss "
                  f"{row['train_loss']:.4f}, test {100 * row['test_acc']:.2f}%", flush=True)

        out = train_airbench94(model, train, test=test, device=device, seed=seed,
                               on_epoch=show)
        results.append(out)
        per_image = out["seconds"] / (out["steps"] * AIRBENCH94_RECIPE.batch_size)
        print(f"seed {seed}: {out['seconds']:.0f} s training, test {100 * out['test_acc']:.2f}% "
              f"plain, {100 * out['tta_test_acc']:.2f}% with test-time augmentation; "
              f"{1 / per_image:.0f} training images/s -> the full recipe on 50,000 images "
              f"would take {per_image * 50_000 * AIRBENCH94_RECIPE.epochs / 60:.0f} min here")
    if len(results) > 1:
        accs = [r["tta_test_acc"] for r in results]
        print(f"median over {len(accs)} seeds: {100 * statistics.median(accs):.2f}% TTA, "
              f"{statistics.median(r['seconds'] for r in results):.0f} s")


if __name__ == "__main__":
    main()
