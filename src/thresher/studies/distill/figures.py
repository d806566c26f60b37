"""The distillation's pictures: the points each method keeps, as images, and where they sit
among the latents."""

from __future__ import annotations

import torch

from thresher.runs.plots import figure


def image_grid(images: torch.Tensor, labels: torch.Tensor, title: str):
    """One row per class, its points' images left to right (uint8 ``[N, C, H, W]``)."""
    labels = labels.cpu()
    classes = sorted(set(labels.tolist()))
    per_class = max(int((labels == c).sum()) for c in classes)
    fig, axes = figure(len(classes), per_class, size=(per_class * 0.8, len(classes) * 0.8))
    for ax in axes.flat:
        ax.axis("off")
    for row, c in enumerate(classes):
        for col, i in enumerate((labels == c).nonzero().flatten().tolist()):
            img = images[i].cpu().permute(1, 2, 0).numpy()
            axes[row, col].imshow(img[..., 0] if img.shape[2] == 1 else img,
                                  cmap="gray" if img.shape[2] == 1 else None)
    fig.suptitle(title)
    return fig


def embedding_figure(x: torch.Tensor, y: torch.Tensor,
                     methods: dict[str, tuple[torch.Tensor, torch.Tensor]], seed: int,
                     shown: int = 3000):
    """A 2-D PCA of (a sample of) the latents, coloured by class, with each method's points
    overlaid in its own marker."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(x), generator=g)[:shown].to(x.device)
    mean = x.mean(0)
    _, _, v = torch.pca_lowrank(x[idx] - mean, q=2, center=False)

    def project(p: torch.Tensor):
        return ((p - mean) @ v[:, :2]).cpu().numpy()

    fig, axes = figure(1, 1, size=(7, 6))
    ax = axes[0, 0]
    xy = project(x[idx])
    ax.scatter(xy[:, 0], xy[:, 1], c=y[idx].cpu().numpy(), cmap="tab10", s=3, alpha=0.3)
    for marker, (name, (points, labels)) in zip("ov^sD*", methods.items()):
        pts = project(points)
        ax.scatter(pts[:, 0], pts[:, 1], c=labels.cpu().numpy(), cmap="tab10", marker=marker,
                   s=40, edgecolors="black", linewidths=0.6, label=name, vmin=0, vmax=9)
    ax.legend(loc="best", fontsize=8)
    ax.set_title("latents (PCA) and the points each method keeps")
    return fig
