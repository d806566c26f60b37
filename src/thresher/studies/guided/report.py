"""The study's tables, built from its stored units alone: test accuracy against RS2 and
against InfoBatch (mean ± 95% CI over seeds, paired t-test), wall time and counted compute per
method, the policy's learned preferences per phase and the plain verdict."""

from __future__ import annotations

import math

from thresher.runs.report import comparison_table, format_table, mean_ci_cell
from thresher.runs.stats import paired_test


def _by_method(units: list[dict], key: str) -> dict[str, list[float]]:
    methods = list(dict.fromkeys(u["method"] for u in units))
    return {m: [u[key] for u in units if u["method"] == m] for m in methods}


def verdict(scores: dict[str, list[float]], against: str, compute: dict[str, float]) -> str:
    if "policy" not in scores or against not in scores:
        return f"policy vs {against}: not both run"
    diff = sum(scores["policy"]) / len(scores["policy"]) - \
        sum(scores[against]) / len(scores[against])
    p = paired_test(scores["policy"], scores[against]).p if len(scores["policy"]) > 1 \
        else math.nan
    sig = "" if math.isnan(p) else (" (significant, p < 0.05)" if p < 0.05
                                    else f" (not significant, p = {p:.3f})")
    word = "BEATS" if diff > 0 else "does NOT beat"
    return (f"the policy {word} {against} at the same budget: {100 * diff:+.2f} points{sig}; "
            f"measured compute {compute['policy']:.2f} vs {compute[against]:.2f} full-epoch "
            f"units" + (" (the policy spent more)" if compute["policy"] > compute[against]
                        else ""))


def tables(units: list[dict], title: str, search: dict | None) -> str:
    scores = _by_method(units, "test_acc")
    seeds = sorted({u["seed"] for u in units})
    parts = [f"{title}: {len(seeds)} seed(s) {seeds}"]
    for base in ("rs2", "infobatch"):
        if base in scores:
            parts.append(f"test accuracy against {base}:\n" + comparison_table(
                scores, "test accuracy (%)", scale=100.0, baseline=base))
    if not any(b in scores for b in ("rs2", "infobatch")):
        parts.append(comparison_table(scores, "test accuracy (%)", scale=100.0))
    rows = []
    for method in scores:
        runs = [u for u in units if u["method"] == method]
        rows.append({
            "method": method, "epochs": runs[0]["epochs"],
            "best val (%)": mean_ci_cell([u["best_val_acc"] for u in runs], 2, 100.0),
            "seconds": mean_ci_cell([u["seconds"] for u in runs], 1),
            "select fwd": mean_ci_cell([u["passes"]["select_forward"] for u in runs]),
            "train fwd+bwd": mean_ci_cell([u["passes"]["train_backward"] for u in runs]),
            "compute (epochs)": mean_ci_cell([u["passes"]["compute"] for u in runs]),
            "transitions": mean_ci_cell([u["phases"]["transitions"] for u in runs], 1),
            "opt state / AdamW": mean_ci_cell([u["optimizer"].get("vs_adamw", math.nan)
                                           for u in runs], 3)})
    parts.append("wall time and counted compute (passes in full-epoch units: select forward, "
                 "train forward+backward; compute = (fwd + 2 bwd + select) / 3N, a full "
                 "epoch = 1):\n"
                 + format_table(rows))
    policy = [u for u in units if u["method"] == "policy"]
    if policy:
        usage: dict[str, dict[str, int]] = {}
        for u in policy:
            for e in u["epochs_log"]:
                usage.setdefault(e["phase"], {}).setdefault(e["strategy"], 0)
                usage[e["phase"]][e["strategy"]] += 1
        pref = [{"phase": phase, "strategy usage (epochs)": ", ".join(
            f"{s}: {c}" for s, c in sorted(counts.items(), key=lambda kv: -kv[1]))}
            for phase, counts in usage.items()]
        rewards = [e["reward"] for u in policy for e in u["epochs_log"]
                   if e.get("reward") is not None]
        parts.append(f"the policy's learned preferences per phase (mean reward "
                     f"{mean_ci_cell(rewards, 3)}):\n" + format_table(pref))
    if search is not None:
        c = search["passes_full_epochs"]
        parts.append("evolved strategies (one-off search cost, not in the table above: "
                     f"{search['search']['evaluations']} evaluations, "
                     f"{c['train_backward']:.2f} train + {c['select_forward']:.2f} select "
                     f"full-epoch passes, {search['seconds']:.1f} s):\n" + format_table(
                         [{"expression": t["text"], "proxy val acc": t["fitness"]}
                          for t in search["top"]]))
    compute = {m: sum(u["passes"]["compute"] for u in units if u["method"] == m)
               / len(scores[m]) for m in scores}
    parts.append("\n".join(verdict(scores, b, compute) for b in ("rs2", "infobatch")))
    return "\n\n".join(parts)


def corruption_table(rows: list[dict]) -> str:
    methods = list(dict.fromkeys(r["method"] for r in rows))
    out = [{"method": m,
            "clean (%)": mean_ci_cell([r["clean_accuracy"] for r in rows if r["method"] == m],
                                  2, 100.0),
            "CIFAR-10-C mean (%)": mean_ci_cell([r["mean_accuracy"] for r in rows
                                             if r["method"] == m], 2, 100.0)}
           for m in methods]
    return "CIFAR-10-C (15 corruptions):\n" + format_table(out)
