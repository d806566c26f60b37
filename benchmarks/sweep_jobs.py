"""Wall time of a sweep at ``--jobs 2`` against ``--jobs 1`` (target on 2 cores: <= 0.6x).

16 short runs — ``thresher train`` on the built-in digits, one grid value x 16 seeds — swept
through the local process pool into a fresh runs folder each time; the two settings alternate,
each is repeated ``--trials`` times, and the medians are compared. Each worker gets
``cores // jobs`` torch threads, so two jobs on two cores do not fight for them. Run it on an
otherwise quiet machine:

    python benchmarks/sweep_jobs.py [--runs 16] [--epochs 20] [--trials 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time


def sweep(jobs: int, runs: int, epochs: int) -> float:
    with tempfile.TemporaryDirectory() as root:
        command = [sys.executable, "-m", "thresher.cli", "-q", "sweep", "train",
                   "--set", "dataset=digits", "--set", f"fit.epochs={epochs}",
                   "--seeds", *map(str, range(runs)), "--jobs", str(jobs), "--runs-dir", root]
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    times: dict[int, list[float]] = {1: [], 2: []}
    for trial in range(args.trials):
        for jobs in ((1, 2) if trial % 2 == 0 else (2, 1)):
            times[jobs].append(sweep(jobs, args.runs, args.epochs))
            print(f"trial {trial + 1} --jobs {jobs}: {times[jobs][-1]:.1f} s", flush=True)
    one, two = statistics.median(times[1]), statistics.median(times[2])
    print(f"\n{args.runs} runs of train on digits ({args.epochs} epochs), median of "
          f"{args.trials}: --jobs 1 {one:.1f} s, --jobs 2 {two:.1f} s, ratio {two / one:.2f}x "
          "(target <= 0.6x)")


if __name__ == "__main__":
    main()
