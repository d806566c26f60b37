"""`thresher distill`: latent dataset distillation, judged against k-means.

Per seed: carve a validation split from train; train the autoencoder (`encoder`); encode
pool, validation and test once and cache the latents in the run; centre and L2-normalise
them. Then every method produces ``m_per_class`` points per class in that space, and each is
judged the same way: a FRESH linear probe (`thresher.train.probe`, one recipe for all)
trained on those points only, hard labels, tested on the real test latents.

Methods: ``full`` (a probe on the whole pool: the upper bound), ``random`` real points,
per-class ``kmeans`` centroids, k-means ``medoids`` (the fair selection baseline), ``herding``,
latent distribution matching ``dm``, prototype optimisation at fixed loss weights
``protos``, and the two RL parts (`thresher.studies.distill.rl`): ``rl_select`` (which real
latents to keep) and ``rl_shape`` (the loss-weight schedule, starting from ``protos``), each
beside its random policy at equal compute. Nothing is tuned on test: the RL parts learn from
the validation split, and a seed's units (encoder, each method) are kept as they finish.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict

import torch

from thresher.data.dataset import ArrayDataset
from thresher.data.pipeline import Normalize
from thresher.models import build
from thresher.runs.config import ConfigError
from thresher.runs.report import comparison_table
from thresher.runs.store import Run, RunStore
from thresher.runs.track import run_tracker, track_summary
from thresher.seeding import make_generator, set_seed
from thresher.select.latent import (
    PrototypeOptimizer,
    distribution_matching,
    herding,
    kmeans_centroids,
    kmeans_medoids,
    random_real,
)
from thresher.studies import Flag, Study, register_study
from thresher.studies.common import for_seeds, load_data
from thresher.studies.distill.config import DistillConfig
from thresher.studies.distill.encoder import (
    LatentSpace,
    build_autoencoder,
    decode_images,
    encode,
    reconstruction_error,
    train_autoencoder,
)
from thresher.studies.distill.figures import embedding_figure, image_grid
from thresher.studies.distill.rl import Latents, rl_select, rl_shape
from thresher.train import FitConfig, choose_device, evaluate, fit
from thresher.train.probe import fit_probes

log = logging.getLogger("thresher.distill")
NON_RL = ("random", "kmeans", "medoids", "herding", "dm", "protos")


def val_counts(counts: torch.Tensor, fraction: float) -> torch.Tensor:
    """Validation examples per class: ``fraction`` of the class, at least 2."""
    return torch.round(counts * fraction).clamp(min=2).long()


def split_val(train: ArrayDataset, fraction: float, seed: int
              ) -> tuple[ArrayDataset, ArrayDataset]:
    """A stratified validation split carved from train (the rest is the pool)."""
    order = torch.randperm(len(train), generator=make_generator(seed, "distill", "val"))
    labels = train.labels.cpu()[order]
    val_mask = torch.zeros(len(train), dtype=torch.bool)
    for c, n in enumerate(val_counts(train.class_counts().cpu(), fraction).tolist()):
        val_mask[(labels == c).nonzero().flatten()[:n]] = True
    return (train.subset(order[~val_mask].to(train.device)),
            train.subset(order[val_mask].to(train.device)))


def prepare(cfg: DistillConfig, store: RunStore) -> tuple[torch.device, ArrayDataset,
                                                         ArrayDataset]:
    """Device and data, and every budget checked against them, before the run is opened."""
    device = choose_device(cfg.device)
    train, test = load_data(cfg.dataset, cfg.data_dir, device, cfg.dataset_options)
    if train.is_features:
        raise ConfigError(f"dataset {cfg.dataset!r} holds feature vectors; distill needs images "
                          f"to encode and decode")
    counts = train.class_counts()
    val = val_counts(counts, cfg.val_fraction)
    if (counts - val).min() < 1 or int(counts.min()) < 3:
        raise ConfigError(f"each class needs at least 2 validation examples and a pool; the "
                          f"smallest class of {cfg.dataset!r} has {int(counts.min())} examples")
    pool = counts - val
    need = {"m_per_class": cfg.m_per_class}
    if "rl_select" in cfg.methods:
        need["select.candidates_per_class"] = cfg.select.candidates_per_class
    for name, value in need.items():
        if value > int(pool.min()):
            c = int(pool.argmin())
            raise ConfigError(f"{name}={value} exceeds the pool of class {c} "
                              f"({train.classes[c]!r}: {int(pool[c])} examples after the "
                              f"validation split)")
    if "rl_select" in cfg.methods and cfg.budget >= cfg.select.candidates_per_class:
        raise ConfigError(f"select.budget_per_class={cfg.budget} must be smaller than "
                          f"select.candidates_per_class={cfg.select.candidates_per_class}")
    try:  # the backbone takes these images and the weights file fits, or we stop here
        build_autoencoder(cfg.encoder, train.num_classes, train.in_shape)
    except (ValueError, FileNotFoundError) as e:
        raise ConfigError(str(e)) from None
    return device, train, test


def _encoder_unit(cfg: DistillConfig, run: Run, pool: ArrayDataset, val: ArrayDataset,
                  test: ArrayDataset, normalize: Normalize, device: torch.device,
                  seed: int) -> dict:
    """Train the autoencoder and cache every split's latents in the run."""
    set_seed(seed)
    started = time.perf_counter()
    ae = build_autoencoder(cfg.encoder, pool.num_classes, pool.in_shape)
    history = train_autoencoder(ae, pool, cfg.encoder, normalize, device, seed)
    trained = time.perf_counter() - started
    latents = {name: encode(ae, split, normalize, device).cpu()
               for name, split in (("pool", pool), ("val", val), ("test", test))}
    run.save_torch(f"encoder-seed{seed}.pt", ae.state_dict())
    run.save_torch(f"latents-seed{seed}.pt", {**latents, "pool_y": pool.labels.cpu(),
                                              "val_y": val.labels.cpu(),
                                              "test_y": test.labels.cpu()})
    with torch.inference_mode():  # the head reads the test latents just encoded
        head_acc = (ae.head(latents["test"].to(device)).argmax(1).cpu() == test.labels.cpu())
    return {"seconds": trained, "encode_seconds": time.perf_counter() - started - trained,
            "head_test_acc": float(head_acc.float().mean()),
            "recon_mse": reconstruction_error(ae, test, normalize, device),
            "history": history}


def _load_latents(run: Run, seed: int, latent_dim: int, device: torch.device) -> dict:
    cached = torch.load(run.path(f"latents-seed{seed}.pt"), weights_only=True)
    if cached["pool"].shape[1] != latent_dim:
        raise ConfigError(f"the cached latents of seed {seed} have {cached['pool'].shape[1]} "
                          f"dimensions, the config says encoder.latent_dim={latent_dim}")
    return {k: v.to(device) for k, v in cached.items()}


def run_seed(cfg: DistillConfig, run: Run, train: ArrayDataset, test: ArrayDataset,
             device: torch.device, seed: int) -> dict:
    pool, val = split_val(train, cfg.val_fraction, seed)
    normalize = Normalize.from_dataset(pool)
    encoder = run.unit(f"seed{seed}/encoder", lambda: _encoder_unit(
        cfg, run, pool, val, test, normalize, device, seed))
    cached = _load_latents(run, seed, cfg.encoder.latent_dim, device)
    c, m = train.num_classes, cfg.m_per_class
    space = LatentSpace.fit(cached["pool"], cached["pool_y"], c, raw=cfg.raw_latents)
    data = Latents(space.forward(cached["pool"]), cached["pool_y"], space.forward(cached["val"]),
                   cached["val_y"], space.forward(cached["test"]), cached["test_y"], c)
    ae = build_autoencoder(cfg.encoder, c, train.in_shape).to(device)
    ae.load_state_dict(torch.load(run.path(f"encoder-seed{seed}.pt"), weights_only=True))
    made: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # method -> (points, labels)
    extra: dict[str, dict] = {}  # method -> its saved points, labels and indices

    def score(points: torch.Tensor, labels: torch.Tensor) -> dict:
        """One fresh probe on the points, read on validation and on test."""
        probe = fit_probes(points, labels, c, cfg.probe)
        return {"test_acc": float(probe.accuracy(data.x_test, data.y_test)[0]),
                "val_acc": float(probe.accuracy(data.x_val, data.y_val)[0])}

    def method(name: str) -> dict:
        g = make_generator(seed, "distill", name)  # CPU: k-means++ draws on the host
        started = time.perf_counter()
        info: dict = {}
        if name == "full":
            points, labels = data.x, data.y
        elif name == "random":
            idx = random_real(data.y, m, g)
            points, labels, info = data.x[idx], data.y[idx], {"indices": idx.tolist()}
        elif name == "kmeans":
            points, labels = kmeans_centroids(data.x, data.y, m, g)
        elif name == "medoids":
            idx = kmeans_medoids(data.x, data.y, m, g)
            points, labels, info = data.x[idx], data.y[idx], {"indices": idx.tolist()}
        elif name == "herding":
            idx = herding(data.x, data.y, m)
            points, labels, info = data.x[idx], data.y[idx], {"indices": idx.tolist()}
        elif name == "dm":
            points, labels = distribution_matching(data.x, data.y, m, g)
        elif name == "protos":
            points, labels = protos_from_kmeans()
        elif name == "rl_select":
            out = rl_select(data, cfg.budget, cfg.select, cfg.probe, seed)
            points, labels = out.points, out.labels
            info = {"indices": out.indices.tolist(), "curve": out.curve,
                    "probe_trainings": out.probe_trainings,
                    "random_policy": score(out.random_points, out.random_labels),
                    **out.diagnostics}
        else:  # rl_shape
            init, init_labels = protos_from_kmeans()
            reencode = None
            if cfg.shape.reward == "image":
                def reencode(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
                    images = ArrayDataset(decode_images(ae, space, p, y, normalize), y.cpu(),
                                          list(train.classes), "prototypes")
                    return space.forward(encode(ae, images, normalize, device))
            out = rl_shape(data, init, init_labels, cfg.proto_weights, cfg.proto_lr, cfg.shape,
                           cfg.probe, seed, reencode)
            points, labels = out.points, out.labels
            info = {"curve": out.curve, "probe_trainings": out.probe_trainings,
                    "random_policy": score(out.random_points, out.random_labels),
                    **out.diagnostics}
        result = {"method": name, "seed": seed, **score(points, labels),
                  "seconds": time.perf_counter() - started, **info}
        if name != "full":  # kept for the figures, the pixel check and a resumed run
            run.save_torch(f"points-seed{seed}-{name}.pt", {
                "points": points.cpu(), "labels": labels.cpu(),
                "indices": torch.tensor(info.get("indices", []), dtype=torch.long)})
        return result

    protos_cache: list = []

    def protos_from_kmeans() -> tuple[torch.Tensor, torch.Tensor]:
        if not protos_cache:
            g = make_generator(seed, "distill", "protos")
            init, labels = kmeans_centroids(data.x, data.y, m, g)
            opt = PrototypeOptimizer(init, labels, data.x, data.y, lr=cfg.proto_lr, generator=g)
            opt.run(cfg.proto_steps, dict(cfg.proto_weights))
            protos_cache.append((opt.points.detach().clone(), labels))
        return protos_cache[0]

    results = []
    for name in cfg.methods:  # a finished method is read back on resume, with its points
        results.append(run.unit(f"seed{seed}/{name}", lambda name=name: method(name)))
        if name != "full":
            saved = torch.load(run.path(f"points-seed{seed}-{name}.pt"), weights_only=True)
            made[name] = (saved["points"].to(device), saved["labels"].to(device))
            extra[name] = saved
    artifacts = {"seed": seed, "methods": extra, "pool_y": data.y.cpu()}
    run.save_torch(f"distillation_artifacts-seed{seed}.pt", artifacts)
    _figures(run, seed, data, space, ae, normalize, made)
    pixel = run.unit(f"seed{seed}/pixel", lambda: _pixel_check(
        cfg, made, pool, test, space, ae, normalize, device, seed)) if cfg.pixel_check else {}
    return {"seed": seed, "encoder": {k: v for k, v in encoder.items() if k != "history"},
            "methods": results, "pixel": pixel}


def _figures(run: Run, seed: int, data: Latents, space: LatentSpace, ae, normalize: Normalize,
             made: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
    """A grid of each method's points decoded to images, and a 2-D PCA of the latents with
    the methods' points overlaid."""
    for name, (points, labels) in made.items():
        images = decode_images(ae, space, points, labels, normalize)
        run.save_figure(f"grid-{name}-seed{seed}.png", image_grid(images, labels, name),
                        dpi=100)
    shown = {k: v for k, v in made.items() if k in ("kmeans", "medoids", "protos", "rl_select",
                                                   "rl_shape")}
    if shown:
        run.save_figure(f"embedding-seed{seed}.png",
                        embedding_figure(data.x, data.y, shown, seed), dpi=110)


def _pixel_check(cfg, made, pool, test, space, ae, normalize, device, seed) -> dict:
    """The small CNN trained from scratch on decoded prototypes vs on real images (M per
    class). Context only: pixel-space distillation is a different protocol."""
    n = cfg.m_per_class * pool.num_classes
    fit_cfg = FitConfig(epochs=math.ceil(cfg.pixel_steps / math.ceil(n / 32)), batch_size=32,
                        optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4,
                        schedule="cosine", augment="standard", eval_every=0)
    sets: dict[str, ArrayDataset] = {}
    idx = random_real(pool.labels, cfg.m_per_class, make_generator(seed, "distill", "pixel"))
    sets["random real images"] = pool.subset(idx)
    for name in ("kmeans", "protos", "rl_shape"):
        if name in made:
            points, labels = made[name]
            sets[f"decoded {name}"] = ArrayDataset(
                decode_images(ae, space, points, labels, normalize), labels.cpu(),
                list(pool.classes), f"decoded-{name}").to(device)
    out = {}
    for name, data in sets.items():
        set_seed(seed)
        model = build("simple_cnn", pool.num_classes, pool.in_shape)
        fit(model, data, fit_cfg, normalize=normalize, device=device, seed=seed)
        out[name] = evaluate(model, test, normalize=normalize, device=device)["accuracy"]
    return out


def run(cfg: DistillConfig, run: Run,
        data: tuple[torch.device, ArrayDataset, ArrayDataset]) -> dict:
    device, train, test = data
    run.device = str(device)
    tracker = run_tracker(cfg, run)
    started = time.perf_counter()
    per_seed = [run_seed(cfg, run, train, test, device, seed) for seed in for_seeds(cfg)]
    run.save_json("per_seed.json", per_seed)
    accs = {name: [next(r["test_acc"] for r in s["methods"] if r["method"] == name)
                   for s in per_seed] for name in cfg.methods}
    tables = [comparison_table(accs, "test accuracy (%)", scale=100,
                               baseline="random" if "random" in accs else None)]
    present = [n for n in NON_RL if n in accs]
    if present:
        best = max(present, key=lambda n: sum(accs[n]) / len(accs[n]))
        tables.append(f"paired against the best non-RL baseline ({best}):\n" + comparison_table(
            accs, "test accuracy (%)", scale=100, baseline=best))
    for name in ("rl_select", "rl_shape"):
        if name in accs:
            rows = [next(r for r in s["methods"] if r["method"] == name) for s in per_seed]
            tables.append(f"{name} against its random policy at equal compute "
                          f"({rows[0]['probe_trainings']} probe trainings each):\n" +
                          comparison_table({name: accs[name], "random policy": [
                              r["random_policy"]["test_acc"] for r in rows]},
                              "test accuracy (%)", scale=100, baseline="random policy"))
    pixel = [s["pixel"] for s in per_seed if s["pixel"]]
    if pixel:
        tables.append("pixel space (context, not a comparison): simple_cnn trained on\n" +
                      comparison_table({k: [p[k] for p in pixel] for k in pixel[0]},
                                       "test accuracy (%)", scale=100))
    text = f"{cfg.dataset}, {cfg.m_per_class} points per class, {cfg.runs} seed(s)\n\n" + \
        "\n\n".join(tables)
    run.save_results(text)
    metrics = {"dataset": cfg.dataset, "m_per_class": cfg.m_per_class, "accuracy": accs,
               # the mean over this run's seeds: what a sweep's table pools across runs
               "test_acc": {n: sum(v) / len(v) for n, v in accs.items()},
               "probe_trainings": {n: [next(r["probe_trainings"] for r in s["methods"]
                                             if r["method"] == n) for s in per_seed]
                                   for n in ("rl_select", "rl_shape") if n in accs},
               "rl_curves": {n: [next(r["curve"] for r in s["methods"] if r["method"] == n)
                                 for s in per_seed] for n in ("rl_select", "rl_shape")
                             if n in accs},
               "encoder": [s["encoder"] for s in per_seed],
               "seconds": time.perf_counter() - started,
               "probe": asdict(cfg.probe)}
    track_summary(tracker, run.dir, metrics)
    return metrics


register_study(Study(
    name="distill",
    help="latent dataset distillation: k-means, herding, DM, prototypes, RL selection/shaping",
    config=DistillConfig,
    run=run,
    prepare=prepare,
    flags=(
        Flag("--dataset", "dataset", "dataset name (see `thresher datasets`)"),
        Flag("--backbone", "encoder.backbone", "encoder: conv_autoencoder, resnet18, vit_tiny, "
             "torchvision:<name>"),
        Flag("--ae-epochs", "encoder.fit.epochs", "autoencoder training epochs"),
        Flag("--latent-dim", "encoder.latent_dim", "latent dimension"),
        Flag("--m-per-class", "m_per_class", "points per class every method produces"),
        Flag("--sel-budget-per-class", "select.budget_per_class",
             "RL selection: real latents kept per class (default: --m-per-class)"),
        Flag("--proto-steps", "proto_steps", "prototype optimisation steps (no RL)"),
        Flag("--proto-rl-lr", "shape.lr", "RL shaping: the actor-critic's learning rate"),
        Flag("--methods", "methods", "methods to run (default all)", nargs="+"),
        Flag("--raw-latents", "raw_latents", "skip centring and L2 normalisation",
             switch=True),
        Flag("--runs", "runs", "number of seeds (mean ± 95%% CI over them)"),
    ),
))
