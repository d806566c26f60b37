"""The adaptive-loss monitor's overhead: training with the DQN monitor vs the same loss under
fixed weights, side by side. Target: the agent's overhead under 10% of training time.

Both sides are `thresher adaptive-loss`'s own `train_method` on the same seed's CIFAR-10 split
(the small CNN, the same auxiliary terms, consistency's extra forward pass included on both),
so the difference is exactly what the monitor adds: its state features, the validation probe
its reward is read from (``monitor.val_examples`` rows every ``monitor.interval`` steps), and
the DQN's acting and replay updates. Trials alternate (fixed, monitor, fixed, ...) and the
medians are compared. The probe alone is also timed, to split the overhead into reward
measurement and agent.

    THRESHER_DATA=... python benchmarks/adaptive_overhead.py [--epochs 3] [--trials 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from thresher.data.pipeline import Normalize
from thresher.runs.config import load_config
from thresher.studies.adaptive_loss import split, train_method
from thresher.studies.adaptive_loss.config import AdaptiveLossConfig
from thresher.studies.common import load_data
from thresher.train import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(AdaptiveLossConfig, overrides=[f"dataset={args.dataset}",
                                                     f"fit.epochs={args.epochs}"])
    device = torch.device("cpu")
    train_all, test = load_data(cfg.dataset, None, device)
    train, val = split(train_all, cfg.train_size, cfg.val_size, 0)
    data = {"device": device, "test": test, "meta": None}
    times: dict[str, list[float]] = {"fixed": [], "monitor": []}
    decisions = 0
    for _ in range(args.trials):
        for side, method, choice in (("fixed", "fixed_grid", {"weight": cfg.prior_weight}),
                                     ("monitor", "monitor_only", {})):
            result = train_method(cfg, method, choice, data, train, val, 0)
            times[side].append(result["seconds"])
            decisions = result["decisions"]
    probe = val.subset(torch.arange(cfg.monitor.val_examples))
    norm = Normalize.from_dataset(train)
    from thresher.models import build

    model = build(cfg.model_name, train.num_classes, train.in_shape)
    evaluate(model, probe, normalize=norm, device=device)
    started = time.perf_counter()
    for _ in range(20):
        evaluate(model, probe, normalize=norm, device=device)
    probe_s = (time.perf_counter() - started) / 20
    fixed, monitor = statistics.median(times["fixed"]), statistics.median(times["monitor"])
    overhead = monitor - fixed
    probes = (decisions + 1) * probe_s
    print(f"{cfg.dataset}, {len(train)} images, {args.epochs} epochs, {decisions} decisions "
          f"(every {cfg.monitor.interval} steps, {cfg.monitor.val_examples} probe rows), "
          f"{args.trials} trials, {args.threads} threads")
    print(f"fixed weights  median {fixed:7.2f} s  {[round(t, 2) for t in times['fixed']]}")
    print(f"DQN monitor    median {monitor:7.2f} s  {[round(t, 2) for t in times['monitor']]}")
    print(f"overhead       {overhead:+.2f} s = {100 * overhead / fixed:+.1f}% of training "
          f"(target < 10%)")
    print(f"  of which the validation probe ~{probes:.2f} s ({1000 * probe_s:.1f} ms each); "
          f"features + DQN ~{overhead - probes:+.2f} s "
          f"({100 * (overhead - probes) / fixed:+.1f}%)")


if __name__ == "__main__":
    main()
