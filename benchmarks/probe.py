"""Batched linear probes: one `fit_probes` call for P problems vs P separate calls, side by side.

Two timings on random latents (centred, L2-normalised, as a latent-distillation study uses):

- many small probes, as an agent scoring candidate selections trains them: P problems of n
  points each (default 64 x 100 x 128, 10 classes, 300 full-batch steps) in one batched call
  vs P calls of one problem each, with the ratio;
- one big probe: 10 classes on 50,000 x 128 latents, seconds per epoch with minibatches
  (``--batch-size``, default 256) and per full-batch step.

Targets on a 2-core CPU: the batched 64-problem call in about a second or less, and well under
a second per epoch for the big probe.

    python benchmarks/probe.py [--problems 64] [--points 100] [--dim 128] [--repeats 3]
                               [--threads 0]
"""

from __future__ import annotations

import argparse
import statistics
import time

from thresher.threads import set_wait_policy

set_wait_policy()  # as the CLI does, before torch loads: see thresher.threads

import torch  # noqa: E402

from thresher.train import ProbeConfig, fit_probes, set_threads  # noqa: E402


def latents(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    x = torch.randn(*shape, generator=generator)
    x = x - x.mean(-2, keepdim=True)
    return x / x.norm(dim=-1, keepdim=True)


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--points", type=int, default=100)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--big", type=int, default=50000, help="points of the big probe")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: one per core)")
    args = parser.parse_args()
    set_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    p, n, d, c = args.problems, args.points, args.dim, args.classes
    x = latents((p, n, d), g)
    y = torch.randint(c, (p, n), generator=g)
    config = ProbeConfig(steps=args.steps)
    fit_probes(x[:2], y[:2], c, ProbeConfig(steps=5))  # warm-up
    batched = timed(lambda: fit_probes(x, y, c, config), args.repeats)
    separate = timed(lambda: [fit_probes(x[i], y[i], c, config) for i in range(p)],
                     args.repeats)
    print(f"{torch.get_num_threads()} torch threads, medians of {args.repeats} repeats")
    print(f"{p} probes on {n} x {d} latents, {c} classes, {args.steps} full-batch steps:")
    print(f"  one batched call   {batched:8.3f} s")
    print(f"  {p} separate calls {separate:8.3f} s")
    print(f"  ratio separate/batched: {separate / batched:.1f}x; target ~1 s or less -> "
          f"{'met' if batched <= 1.0 else 'NOT met'}")

    big_x = latents((args.big, d), g)
    big_y = torch.randint(c, (args.big,), generator=g)
    steps_per_epoch = -(-args.big // args.batch_size)
    mini = ProbeConfig(steps=steps_per_epoch, batch_size=args.batch_size)
    epoch = timed(lambda: fit_probes(big_x, big_y, c, mini, generator=g), args.repeats)
    full = timed(lambda: fit_probes(big_x, big_y, c, ProbeConfig(steps=10)), args.repeats) / 10
    print(f"1 probe on {args.big} x {d} latents, {c} classes:")
    print(f"  one epoch, batch {args.batch_size} ({steps_per_epoch} steps) {epoch:8.3f} s; "
          f"target well under 1 s -> {'met' if epoch < 0.5 else 'NOT met'}")
    print(f"  one full-batch step (= one epoch)  {full:8.3f} s")


if __name__ == "__main__":
    main()
