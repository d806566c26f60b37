"""k-means on 60,000 x 128 embeddings with k = 100: Thresher's vs scikit-learn's, side by side.

Both run k-means++ seeding plus Lloyd iterations (scikit-learn with ``n_init=1`` and the same
iteration cap) on the same float32 matrix; the script prints wall time, iterations and the
final cost (sum of squared distances) of each, and the ratios. The embeddings are the
128-unit hidden layer of an MLP trained for one epoch on MNIST when the data is available
(`THRESHER_DATA`), else a 100-component Gaussian mixture. Target: Thresher under 5 s here.

    python benchmarks/kmeans.py [--k 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from sklearn.cluster import KMeans

from thresher.data import DataError, load
from thresher.data.pipeline import Normalize
from thresher.models import build
from thresher.select import kmeans
from thresher.train import FitConfig, fit, predict, set_seed


def embeddings() -> tuple[str, torch.Tensor]:
    set_seed(0)
    try:
        train = load("mnist", "train", download=False)
    except DataError:
        g = torch.Generator().manual_seed(0)
        means = 3 * torch.randn(100, 128, generator=g)
        pick = torch.randint(0, 100, (60000,), generator=g)
        return "Gaussian mixture", means[pick] + torch.randn(60000, 128, generator=g)
    model = build("mlp", 10, train.in_shape, widths=(128,))
    norm = Normalize.from_dataset(train)
    fit(model, train, FitConfig(epochs=1, optimizer="adam", lr=1e-3, progress=False),
        normalize=norm)
    return "MNIST MLP embeddings", predict(model, train, normalize=norm).embeddings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    source, x = embeddings()
    x = x.float().contiguous()
    ours, theirs = [], []
    for r in range(args.repeats):
        start = time.perf_counter()
        result = kmeans(x, args.k, torch.Generator().manual_seed(r), iters=args.iters)
        ours.append((time.perf_counter() - start, result.iterations, result.cost))
        start = time.perf_counter()
        ref = KMeans(args.k, n_init=1, max_iter=args.iters, random_state=r).fit(x.numpy())
        theirs.append((time.perf_counter() - start, ref.n_iter_, float(ref.inertia_)))
    t_ours = statistics.median(t for t, _, _ in ours)
    t_ref = statistics.median(t for t, _, _ in theirs)
    c_ours = statistics.median(c for _, _, c in ours)
    c_ref = statistics.median(c for _, _, c in theirs)
    print(f"{source}: {tuple(x.shape)}, k={args.k}, {args.repeats} repeats (medians), "
          f"{torch.get_num_threads()} torch threads")
    print(f"{'implementation':24s} {'seconds':>8s} {'iters':>6s} {'cost':>14s}")
    for name, rows, t, c in (("thresher.select.kmeans", ours, t_ours, c_ours),
                             ("sklearn KMeans n_init=1", theirs, t_ref, c_ref)):
        print(f"{name:24s} {t:8.2f} {statistics.median(i for _, i, _ in rows):6.0f} {c:14.1f}")
    print(f"speed ratio sklearn/thresher: {t_ref / t_ours:.2f}x; cost ratio thresher/sklearn: "
          f"{c_ours / c_ref:.4f}")
    print(f"target: thresher under 5 s -> {'met' if t_ours < 5 else 'NOT met'}")


if __name__ == "__main__":
    main()
