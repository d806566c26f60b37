"""The weight-trajectory figure: each auxiliary weight against the optimiser step, one thin
line per seed, one colour per term."""

from __future__ import annotations

from thresher.runs.plots import figure


def weight_figure(units: list[dict], task: str):
    """Weights as set by one method's policy over training, every seed overlaid."""
    fig, axes = figure(1, 1, (6.0, 3.6))
    ax = axes[0, 0]
    names = units[0]["terms"][1:]
    colours = ["C0", "C1", "C2", "C3"]
    for u in units:
        log = u["weights_log"]
        steps = [e["step"] for e in log] + [u["steps"]]
        for i, term in enumerate(names):
            values = [e["weights"][i] for e in log]
            ax.step(steps, values + values[-1:], where="post", color=colours[i % 4], lw=0.8,
                    alpha=0.7, label=term if u is units[0] else None)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("beta" if task == "vae" else "auxiliary weight (before normalisation)")
    ax.set_yscale("log" if task != "vae" else "linear")
    ax.set_title(f"{units[0]['method']}: {len(units)} seed(s)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
