"""The study's tables, built from its stored units alone (the run and `analyze` share them):
the score per method against the baseline and against the strongest control, the costs, the
VAE's ELBO parts, and the RL monitor's learning evidence beside its random policy."""

from __future__ import annotations

import math
from typing import Any

from thresher.runs.report import comparison_table, format_table, mean_ci_cell

MODES = ("baseline", "monitor_only", "controller_only", "full")
AGENT_METHODS = ("monitor_only", "full", "random_schedule")


def _by_method(units: list[dict], key: str) -> dict[str, list[float]]:
    methods = list(dict.fromkeys(u["method"] for u in units))
    return {m: [u[key] for u in units if u["method"] == m] for m in methods}


def tables(units: list[dict], task: str, dataset: str, choice: dict[str, Any]) -> str:
    vae = task == "vae"
    key, name, scale = ("test_neg_elbo", "test -ELBO (nats, lower is better)", 1.0) if vae \
        else ("test_acc", "test accuracy (%)", 100.0)
    scores = _by_method(units, key)
    seeds = sorted({u["seed"] for u in units})
    tuned = {k: v for k, v in choice.items() if not k.endswith("_scores")}
    parts = [f"{dataset}, task={task}, {len(seeds)} seed(s) {seeds}; tuned on the first seed's "
             f"validation split: {tuned or 'nothing'}"]
    if "baseline" in scores:
        parts.append("against the baseline:\n" + comparison_table(
            scores, name, scale=scale, baseline="baseline"))
    controls = [m for m in scores if m not in MODES]
    if controls:
        pick = min if vae else max
        best = pick(controls, key=lambda m: sum(scores[m]) / len(scores[m]))
        parts.append(f"against the strongest control ({best}):\n" + comparison_table(
            scores, name, scale=scale, baseline=best))
    cost = []
    for method, rows in ((m, [u for u in units if u["method"] == m]) for m in scores):
        row = {"method": method,
               "seconds (mean ± 95% CI)": mean_ci_cell([u["seconds"] for u in rows], 1),
               "skipped steps": sum(u["skipped_steps"] for u in rows),
               "weight changes / run": sum(len(u["weights_log"]) - 1 for u in rows) / len(rows)}
        if vae:
            row.update({"bits/dim": mean_ci_cell([u["test_bits_per_dim"] for u in rows], 4),
                        "recon (nats)": mean_ci_cell([u["test_recon"] for u in rows]),
                        "KL (nats)": mean_ci_cell([u["test_kl"] for u in rows])})
        cost.append(row)
    parts.append("cost (equal epochs for every method)" + (" and the ELBO's parts on test"
                                                            if vae else "") + ":\n"
                 + format_table(cost))
    agents = [m for m in AGENT_METHODS if m in scores]
    if agents:
        rows = []
        for method in agents:
            runs = [u for u in units if u["method"] == method]
            counts = [sum(u["policy"]["action_counts"][a] for u in runs)
                      for a in range(len(runs[0]["policy"]["action_counts"]))]
            total = max(sum(counts), 1)
            last = [next((d for d in reversed(u["policy"]["diagnostics"])
                          if d.get("td_loss") is not None and math.isfinite(d["td_loss"])), {})
                    for u in runs]
            rows.append({
                "method": method,
                "reward, all decisions": mean_ci_cell(
                    [u["policy"]["mean_reward"] for u in runs], 3),
                "reward, second half": mean_ci_cell(
                    [u["policy"]["late_mean_reward"] for u in runs], 3),
                "final epsilon": mean_ci_cell([d.get("epsilon", math.nan) for d in last], 3),
                "final TD loss": mean_ci_cell([d.get("td_loss", math.nan) for d in last], 4),
                "actions (keep, then each weight up/down), %": " ".join(
                    f"{100 * c / total:.0f}" for c in counts)})
        parts.append("the monitor's learning evidence (reward: % drop of the validation loss "
                     "per decision interval):\n" + format_table(rows))
        late = {m: [u["policy"]["late_mean_reward"] for u in units if u["method"] == m]
                for m in agents}
        if "random_schedule" in late and len(late) > 1:
            parts.append("second-half reward against the random policy (same actions, same "
                         "interval):\n" + comparison_table(late, "reward", digits=3,
                                                           baseline="random_schedule"))
    ctrl = [u for u in units if "controller" in u["policy"]]
    if ctrl:
        rows = []
        for method in dict.fromkeys(u["method"] for u in ctrl):
            states = [u["policy"]["controller"] for u in ctrl if u["method"] == method]
            rows.append({"method": method,
                         "final steps (log scale)": " ".join(
                             f"{sum(s['step'][i] for s in states) / len(states):.3f}"
                             for i in range(len(states[0]["step"]))),
                         "pairs judged": mean_ci_cell([s["pairs"] for s in states], 1),
                         "prior weights (exp of mean log prior)": " ".join(
                             f"{math.exp(sum(s['prior'][i] for s in states) / len(states)):.3f}"
                             for i in range(len(states[0]["prior"])))})
        parts.append("the meta-controller at the end of the run:\n" + format_table(rows))
    return "\n\n".join(parts)
