"""Training images/s under CPU contention: torch thread count x OpenMP wait policy.

On a small machine another process often holds a core (a second job, a test run). torch's
OpenMP threads spin-wait for their partners at the end of every parallel region; when a partner
is descheduled they burn their time slice spinning instead of working. This benchmark measures
what `benchmarks/train_step.py` measures (`fit` on ResNet-20, one epoch over ``--images``
CIFAR-10 images, batch 128; ``--workload pipeline``: what `benchmarks/pipeline.py` times, the
batch pipeline alone with standard augmentation) in a fresh subprocess per setting, because
the wait policy is read once, when torch's OpenMP runtime loads:

    (a) torch's default thread count (one per core), default wait policy
    (b) default thread count, OMP_WAIT_POLICY=PASSIVE (waiting threads sleep)
    (c) 1 thread
    (d) 1 thread, OMP_WAIT_POLICY=PASSIVE

each on an idle machine and with a busy process started by the benchmark and killed after:
``--hog loop`` (``python -c 'while True: pass'`` pinned to the last core) or ``--hog torch``
(an unpinned torch process at default threads doing small element-wise ops, like a neighbour's
test run). Trials alternate idle and busy and rotate the order of the settings, so drift hits
every cell alike; it prints medians and ratios to (a) idle. Run it on an otherwise quiet
machine (check ``uptime``):

    python benchmarks/contention.py [--workload train|pipeline] [--hog loop|torch]
                                    [--images N] [--trials 3]

Found on the 2-core development CPU (torch 2.13, 3 trials; ratio of median images/s to (a)
idle; (a) idle was ~1,000 images/s for train, ~400,000-430,000 for the pipeline):

    setting              train: idle  loop  torch    pipeline: idle  loop  torch
    (a) default threads        1.00   0.34  0.29               1.00  0.33  0.13
    (b) default + PASSIVE      0.89   0.44  0.46               0.50  0.56  0.52
    (c) 1 thread               0.54   0.54  0.40               0.63  0.64  0.36
    (d) 1 thread + PASSIVE     0.53   0.54  0.39               0.62  0.65  0.37

With another process busy, the default policy loses two thirds of training speed and up to 7/8
of the pipeline's. PASSIVE at the default thread count has the best worst case of every setting
in both workloads (0.44 train, 0.50 pipeline, against 0.29 and 0.13 for the default), for ~11%
of idle training speed (half of the bare pipeline's, whose parallel regions are short enough
for the wake-up to show); one thread costs ~45% of idle training speed. So the CLI sets PASSIVE
before torch loads (`thresher.threads`) and keeps one thread per core
(`thresher.train.device.set_threads`, `--threads N` to choose). Short spins instead of PASSIVE
(GOMP_SPINCOUNT=1000: pipeline 1.04 idle, 0.37 beside the loop; 10000: 0.28 beside the torch
neighbour in training) keep idle speed but not speed under contention. Repeat runs moved single
cells by up to ~0.3 (the pipeline under the torch neighbour most), so read the table for its
direction.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = {  # name -> (torch threads, 0 = torch's default; OpenMP environment)
    "(a) default threads": (0, {}),
    "(b) default + PASSIVE": (0, {"OMP_WAIT_POLICY": "PASSIVE"}),
    "(c) 1 thread": (1, {}),
    "(d) 1 thread + PASSIVE": (1, {"OMP_WAIT_POLICY": "PASSIVE"}),
}
OMP_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")  # cleared unless a setting names them
HOGS = {  # what holds the CPU in the "busy" cells
    "loop": "while True: pass",  # one core, pinned to the last one
    # a neighbour's torch job (e.g. a test run): torch's default threads, small parallel ops
    "torch": "import torch\nx = torch.rand(128, 3, 32, 32)\nwhile True: (x * 2 + 1).clamp_(0, 1)",
}


def child(data_path: str, threads: int, workload: str) -> None:
    """One measurement in this fresh process: a warm-up, then the timed pass."""
    import torch

    from pipeline import time_loader
    from thresher.data.dataset import ArrayDataset
    from thresher.data.pipeline import BatchLoader, Normalize
    from thresher.models import build
    from train_step import with_fit

    if threads:
        torch.set_num_threads(threads)
    saved = torch.load(data_path)
    data = ArrayDataset(saved["images"], saved["labels"], saved["classes"], "bench")
    norm = Normalize.from_dataset(data)
    if workload == "pipeline":
        loader = BatchLoader(data, 128, shuffle=True, augment="standard", normalize=norm, seed=0)
        time_loader(loader, 4 * 128)
        rate = time_loader(loader, len(data))
    else:
        model = build("resnet20", data.num_classes, data.in_shape)
        model.load_state_dict(saved["init"])
        with_fit(model, data.subset(torch.arange(256)), norm, 128, 0.05)  # oneDNN set-up
        model.load_state_dict(saved["init"])
        rate = with_fit(model, data, norm, 128, 0.05)
    print(f"RESULT {rate:.3f}")


def measure(data_path: str, threads: int, omp: dict[str, str], workload: str,
            timeout: float) -> float:
    """Images/s of one fresh subprocess with the given thread count and OpenMP settings."""
    env = {k: v for k, v in os.environ.items() if k not in OMP_VARIABLES} | omp
    command = [sys.executable, __file__, "--child", data_path, "--threads", str(threads),
               "--workload", workload]
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout,
                         check=True).stdout
    return float(out.rsplit("RESULT", 1)[-1])


def start_hog(kind: str) -> subprocess.Popen:
    """The busy process of the "busy" cells (see HOGS), with the default wait policy."""
    env = {k: v for k, v in os.environ.items() if k not in OMP_VARIABLES}
    hog = subprocess.Popen([sys.executable, "-c", HOGS[kind]], env=env)
    if kind == "loop":
        os.sched_setaffinity(hog.pid, {max(os.sched_getaffinity(0))})
    time.sleep(2.0)  # let it reach its loop (torch takes a second to import)
    return hog


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--workload", choices=("train", "pipeline"), default="train",
                        help="train: `fit` on ResNet-20 (train_step.py); pipeline: the batch "
                             "pipeline alone with standard augmentation (pipeline.py)")
    parser.add_argument("--images", type=int, default=None,
                        help="images per measurement (default 1280 train, 50000 pipeline)")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--hog", choices=tuple(HOGS), default="loop",
                        help="loop: a busy loop pinned to one core; torch: an unpinned torch "
                             "process at default threads (a neighbour's job)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per measurement")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.threads, args.workload)
    images = args.images or (1280 if args.workload == "train" else 50000)

    import torch

    from thresher.data import load
    from thresher.models import build
    from thresher.train import set_seed

    set_seed(0)
    full = load(args.dataset, "train")
    data = full.subset(torch.randperm(len(full))[:images])
    init = build("resnet20", data.num_classes, data.in_shape).state_dict()
    rates: dict[tuple[str, str], list[float]] = {
        (name, cond): [] for name in SETTINGS for cond in ("idle", "busy")}
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "data.pt")
        torch.save({"images": data.images, "labels": data.labels, "classes": data.classes,
                    "init": init}, path)
        names = list(SETTINGS)
        for trial in range(args.trials):
            order = names[trial % len(names):] + names[:trial % len(names)]
            for cond in (("idle", "busy") if trial % 2 == 0 else ("busy", "idle")):
                hog = start_hog(args.hog) if cond == "busy" else None
                try:
                    for name in order:
                        threads, omp = SETTINGS[name]
                        rates[name, cond].append(
                            measure(path, threads, omp, args.workload, args.timeout))
                        print(f"trial {trial + 1} {cond:4s} {name:24s} "
                              f"{rates[name, cond][-1]:8.1f} images/s", flush=True)
                finally:
                    if hog is not None:
                        hog.kill()
                        hog.wait()
    median = {key: statistics.median(v) for key, v in rates.items()}
    base = median["(a) default threads", "idle"]
    what = "ResNet-20 fit" if args.workload == "train" else "batch pipeline (standard aug.)"
    print(f"\n{what} on {args.dataset}: {images} images x {args.trials} trials, "
          f"{os.cpu_count()} CPUs; busy = {args.hog} hog running (median images/s, "
          "ratio to (a) idle)")
    print(f"{'setting':24s} {'idle':>16s} {'busy':>16s}")
    for name in SETTINGS:
        cells = [f"{median[name, c]:8.1f} ({median[name, c] / base:4.2f}x)"
                 for c in ("idle", "busy")]
        print(f"{name:24s} {cells[0]:>16s} {cells[1]:>16s}")


if __name__ == "__main__":
    main()
