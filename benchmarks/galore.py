"""GaLore: Thresher's `GaLoreAdamW` against the reference package (galore-torch 1.0) and
`torch.optim.AdamW`: agreement, optimiser-state bytes and step time.

Two parts, both printed as tables:

1. ``--check`` (agreement): an MLP 784-256-256-10 trained for 50 steps on fixed random
   batches from the same initial weights by both GaLore implementations (rank 32, projector
   gap 10, scale 0.25, std projection, full SVD, lr 1e-3, weight decay 0 and 0.01), only the
   two hidden-layer weights projected as in the reference's own examples. Prints the largest
   absolute difference of the weights after steps 1, 10, 25, 50, and of the per-step losses.
2. (default) state and speed on three models: an MLP 784-1024-1024-10, ResNet-20 and VGG-16
   (conv kernels included, as ``out x in*k*k`` matrices), batch 128 of 32x32 images (MNIST
   shape for the MLP). Per optimiser: state bytes after a step, the optimiser step alone
   averaged over ``--gap`` steps (so one projector refresh is included, as in training), and
   a whole training step (forward and backward, measured once per model, plus that optimiser
   step). Ranks are width / 8: on the MLP rank 128 for both GaLores on the same two hidden
   weights (the head stays with plain AdamW, as in the reference's examples); on the CNNs
   ``rank_fraction=0.125`` of each weight's smaller side. galore-torch runs on the MLP only: its
   convolution path needs tensorly's Tucker decomposition and is broken at its HEAD. Sides
   alternate per repeat and the medians are printed.

The reference lives in its own virtual environment (it needs transformers and bitsandbytes
beside torch; it imports nothing of Thresher's and is run as a subprocess):

    python3 -m venv benchmarks/.venv-galore
    benchmarks/.venv-galore/bin/pip install torch==2.13.0 galore-torch==1.0 transformers \\
        bitsandbytes

3. ``--per-layer``: the peak bytes of gradients alive at once during one GaLore-AdamW step,
   stepping the whole model after backward vs each weight from its post-accumulate-grad hook.

Run (a few minutes on 2 CPU cores):

    .venv/bin/python benchmarks/galore.py --check
    .venv/bin/python benchmarks/galore.py --per-layer
    .venv/bin/python benchmarks/galore.py [--models mlp resnet20 vgg16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

SIDE_PYTHON = Path(__file__).resolve().parent / ".venv-galore" / "bin" / "python"
CHECK = {"rank": 32, "update_proj_gap": 10, "scale": 0.25, "lr": 1e-3, "steps": 50}
SNAPSHOTS = (1, 10, 25, 50)


def mlp(widths: tuple[int, ...]) -> nn.Sequential:
    """A ReLU MLP from plain torch layers (both environments build it identically)."""
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(widths, widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def check_batches(steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(64, 784, generator=g), torch.randint(10, (64,), generator=g))
            for _ in range(steps)]


def check_run(side: str, weight_decay: float, out: Path) -> None:
    """Train the check MLP with one side's GaLore; save weight snapshots and losses."""
    torch.manual_seed(0)
    model = mlp((784, 256, 256, 10))
    hidden = [model[1].weight, model[3].weight]
    rest = [p for p in model.parameters() if all(p is not h for h in hidden)]
    if side == "reference":
        from galore_torch import GaLoreAdamW as Reference

        opt = Reference([{"params": rest},
                         {"params": hidden, "rank": CHECK["rank"],
                          "update_proj_gap": CHECK["update_proj_gap"], "scale": CHECK["scale"],
                          "proj_type": "std"}],
                        lr=CHECK["lr"], weight_decay=weight_decay, eps=1e-6,
                        no_deprecation_warning=True)
    else:
        from thresher.optim import GaLoreAdamW

        opt = GaLoreAdamW(model.parameters(), lr=CHECK["lr"], projected=set(hidden),
                          rank=CHECK["rank"], update_proj_gap=CHECK["update_proj_gap"],
                          scale=CHECK["scale"], proj_type="std", weight_decay=weight_decay,
                          eps=1e-6)
    losses, snaps = [], {}
    for step, (x, y) in enumerate(check_batches(CHECK["steps"]), 1):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step in SNAPSHOTS:
            snaps[step] = [p.detach().clone() for p in model.parameters()]
    torch.save({"losses": losses, "snaps": snaps}, out)


def side(args: list[str]) -> subprocess.CompletedProcess:
    if not SIDE_PYTHON.exists():
        sys.exit(f"no galore-torch environment at {SIDE_PYTHON}; create it as the docstring "
                 f"of {Path(__file__).name} says")
    proc = subprocess.run([str(SIDE_PYTHON), __file__, *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())})
    if proc.returncode:
        sys.exit(f"galore-torch side failed:\n{proc.stderr[-3000:]}")
    return proc


def check() -> None:
    print(f"GaLore agreement, Thresher vs galore-torch 1.0: MLP 784-256-256-10, {CHECK}")
    print(f"{'weight decay':>12s} " + " ".join(f"{'step ' + str(s):>10s}" for s in SNAPSHOTS)
          + f" {'losses':>10s}   (largest |difference| of any weight / of the step losses)")
    with tempfile.TemporaryDirectory() as tmp:
        for wd in (0.0, 0.01):
            ours, theirs = Path(tmp, f"ours{wd}.pt"), Path(tmp, f"ref{wd}.pt")
            check_run("thresher", wd, ours)
            side(["--side-check", str(wd), str(theirs)])
            a, b = torch.load(ours), torch.load(theirs)
            diffs = [max((p - q).abs().max().item() for p, q in zip(a["snaps"][s],
                                                                    b["snaps"][s]))
                     for s in SNAPSHOTS]
            loss_diff = max(abs(x - y) for x, y in zip(a["losses"], b["losses"]))
            print(f"{wd:12g} " + " ".join(f"{d:10.2e}" for d in diffs) + f" {loss_diff:10.2e}")


# ---------------------------------------------------------------- state and speed


def build(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    if name == "mlp":
        return mlp((784, 1024, 1024, 10)), (1, 28, 28)
    from thresher.models import build as build_model

    return build_model(name, 10, (3, 32, 32)), (3, 32, 32)


def mlp_hidden(model: nn.Module) -> list[nn.Parameter]:
    """The MLP's weights galore-torch is given (all but the 10-way head, as its examples
    leave the output layer to plain AdamW); Thresher's GaLore gets the same ones."""
    return [m.weight for m in model.modules() if isinstance(m, nn.Linear) and m.out_features != 10]


def make_optimizer(kind: str, model: nn.Module, name: str) -> torch.optim.Optimizer:
    if kind == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=1e-3)
    from thresher.optim import GaLoreAdamW

    svd = "randomized" if kind == "galore-rsvd" else "full"
    if name == "mlp":  # rank 128 = width / 8 on the same weights as galore-torch
        return GaLoreAdamW(model.parameters(), lr=1e-3, projected=set(mlp_hidden(model)),
                           rank=128, update_proj_gap=ARGS.gap, svd=svd)
    return GaLoreAdamW(model.parameters(), lr=1e-3, rank_fraction=0.125,
                       update_proj_gap=ARGS.gap, svd=svd)


def state_size(opt: torch.optim.Optimizer) -> int:
    total = 0
    for s in opt.state.values():
        for v in s.values():
            if isinstance(v, torch.Tensor):
                total += v.numel() * v.element_size()
            elif hasattr(v, "ortho_matrix") and v.ortho_matrix is not None:  # the reference's
                mats = v.ortho_matrix if isinstance(v.ortho_matrix, list) else [v.ortho_matrix]
                total += sum(m.numel() * m.element_size() for m in mats)
    return total


def time_optimizer(opt: torch.optim.Optimizer, model: nn.Module, steps: int) -> float:
    """Seconds per optimiser step over ``steps`` steps (a refresh at the first), on fixed
    random gradients; the timing starts after one untimed warm-up step."""
    g = torch.Generator().manual_seed(1)
    grads = [torch.randn(p.shape, generator=g) * 1e-3 for p in model.parameters()]
    for p, gr in zip(model.parameters(), grads):
        p.grad = gr
    opt.step()
    start = time.perf_counter()
    for _ in range(steps):
        opt.step()
    return (time.perf_counter() - start) / steps


def time_forward_backward(model: nn.Module, in_shape: tuple[int, ...], reps: int = 5) -> float:
    x = torch.randn(128, *in_shape)
    y = torch.randint(10, (128,))
    F.cross_entropy(model(x), y).backward()
    start = time.perf_counter()
    for _ in range(reps):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
    return (time.perf_counter() - start) / reps


def measure(kind: str, name: str) -> dict:
    """State bytes and amortised optimiser-step seconds of one optimiser on one model."""
    torch.manual_seed(0)
    model, _ = build(name)
    if kind == "galore-torch":
        from galore_torch import GaLoreAdamW as Reference

        hidden = mlp_hidden(model)
        rest = [p for p in model.parameters() if all(p is not h for h in hidden)]
        opt = Reference([{"params": rest}, {"params": hidden, "rank": 128,
                                            "update_proj_gap": ARGS.gap, "scale": 0.25,
                                            "proj_type": "std"}], lr=1e-3,
                        no_deprecation_warning=True)
    else:
        opt = make_optimizer(kind, model, name)
    seconds = time_optimizer(opt, model, ARGS.gap)
    return {"bytes": state_size(opt), "seconds": seconds}


def speed() -> None:
    kinds = ["adamw", "galore", "galore-rsvd", "galore-torch"]
    results: dict[tuple[str, str], list[dict]] = {}
    fwd_bwd: dict[str, float] = {}
    for name in ARGS.models:
        model, in_shape = build(name)
        fwd_bwd[name] = time_forward_backward(model, in_shape)
        for rep in range(ARGS.repeats):
            order = kinds if rep % 2 == 0 else kinds[::-1]
            for kind in order:
                if kind == "galore-torch":
                    if name != "mlp" or not SIDE_PYTHON.exists():
                        continue
                    r = json.loads(side(["--side-speed", name, str(ARGS.gap)]).stdout
                                   .strip().splitlines()[-1])
                else:
                    r = measure(kind, name)
                results.setdefault((name, kind), []).append(r)
                print(f"  {name} {kind}: {r['bytes'] / 1e6:.2f} MB, "
                      f"{r['seconds'] * 1e3:.2f} ms/step", flush=True)
    print(f"\nOptimiser state and step time, batch 128, {torch.get_num_threads()} thread(s); "
          f"optimiser step averaged over {ARGS.gap} steps (one projector refresh); training "
          f"step = forward+backward (measured once per model) + optimiser step; medians of "
          f"{ARGS.repeats}")
    print(f"{'model':9s} {'optimizer':13s} {'state MB':>9s} {'vs AdamW':>9s} "
          f"{'opt ms':>8s} {'vs AdamW':>9s} {'train ms':>9s} {'vs AdamW':>9s}")
    for name in ARGS.models:
        base = results[name, "adamw"]
        base_s = statistics.median(r["seconds"] for r in base)
        base_b = base[0]["bytes"]
        for kind in kinds:
            runs = results.get((name, kind))
            if not runs:
                print(f"{name:9s} {kind:13s} {'n/a (no convolution path)':>40s}")
                continue
            s = statistics.median(r["seconds"] for r in runs)
            b = runs[0]["bytes"]
            train = fwd_bwd[name] + s
            print(f"{name:9s} {kind:13s} {b / 1e6:9.2f} {b / base_b:9.3f} {s * 1e3:8.2f} "
                  f"{s / base_s:9.2f} {train * 1e3:9.1f} {train / (fwd_bwd[name] + base_s):9.2f}")


def peak_gradients(name: str, per_layer: bool) -> int:
    """Peak bytes of gradients alive at once during a training step (forward, backward,
    step), counted by tensor hooks: each gradient is live from its computation until the
    optimiser frees it (per_layer) or until the step ends."""
    from thresher.optim import GaLoreAdamW

    torch.manual_seed(0)
    model, in_shape = build(name)
    opt = GaLoreAdamW(model.parameters(), lr=1e-3, rank_fraction=0.125, per_layer=per_layer)
    live: dict[int, int] = {}
    peak = [0]

    def arrived(p: torch.Tensor, g: torch.Tensor) -> None:
        live[id(p)] = g.numel() * g.element_size()
        peak[0] = max(peak[0], sum(live.values()))

    def freed(p: torch.Tensor) -> None:
        live.pop(id(p), None)

    for p in model.parameters():
        p.register_hook(lambda g, p=p: arrived(p, g))
        if per_layer:  # runs after the optimiser's own hook, which steps and frees the gradient
            p.register_post_accumulate_grad_hook(freed)
    x, y = torch.randn(32, *in_shape), torch.randint(10, (32,))
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    opt.step()
    return peak[0]


def per_layer_memory() -> None:
    print("Peak gradient bytes alive at once in a GaLore-AdamW step (batch 32)")
    print(f"{'model':9s} {'whole step MB':>14s} {'per_layer MB':>13s} {'ratio':>6s}")
    for name in ARGS.models:
        whole, layered = peak_gradients(name, False), peak_gradients(name, True)
        print(f"{name:9s} {whole / 1e6:14.2f} {layered / 1e6:13.2f} {layered / whole:6.3f}")


def main() -> None:
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="agreement with galore-torch")
    parser.add_argument("--per-layer", action="store_true",
                        help="peak gradient memory with and without per-layer steps")
    parser.add_argument("--models", nargs="+", default=["mlp", "resnet20", "vgg16"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gap", type=int, default=200, help="projector refresh interval")
    parser.add_argument("--side-check", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--side-speed", nargs=2, help=argparse.SUPPRESS)
    ARGS = parser.parse_args()
    if ARGS.side_check:
        check_run("reference", float(ARGS.side_check[0]), Path(ARGS.side_check[1]))
    elif ARGS.side_speed:
        ARGS.gap = int(ARGS.side_speed[1])
        print(json.dumps(measure("galore-torch", ARGS.side_speed[0])))
    elif ARGS.check:
        check()
    elif ARGS.per_layer:
        per_layer_memory()
    else:
        speed()


ARGS: argparse.Namespace
if __name__ == "__main__":
    main()
