"""The study's tables, built from its stored units alone (one run's, or the seeds of a sweep
merged by `analyze`): test accuracy against RS2, RS2 at equal compute and InfoBatch (mean ±
95% CI over seeds, paired t-tests), what full-data training needs to match each accuracy, wall
time and counted compute, the phase detector's transitions, the agent against its random
control, the evolved strategies and the plain verdicts."""

from __future__ import annotations

import math
from collections import Counter

from thresher.runs.report import format_table, mean_ci_cell
from thresher.runs.stats import paired_test

BASES = ("rs2", "rs2_equal", "infobatch")  # the simple baselines every method is tested against
ADAPTIVE = ("policy", "policy_random", "discovered")
FULL_CURVE = ("full_equal", "full_equal_select", "full")  # full data, schedule fully decayed


def by_method(units: list[dict], key: str) -> dict[str, list[float]]:
    """``key`` per method, seeds in ascending order (so every paired test lines seeds up)."""
    methods = list(dict.fromkeys(u["method"] for u in units))
    return {m: [u[key] for u in sorted(units, key=lambda u: u["seed"]) if u["method"] == m]
            for m in methods}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _delta(a: list[float], b: list[float]) -> str:
    """Paired difference in points with its p-value (NaN-free for one seed)."""
    if len(a) != len(b):
        return "n/a"
    diff = 100 * (_mean(a) - _mean(b))
    if len(a) < 2:
        return f"{diff:+.2f}"
    return f"{diff:+.2f} (p={paired_test(a, b).p:.3f})"


def full_data_compute(units: list[dict], num_classes: int) -> list[tuple[float, float]]:
    """(compute, mean test accuracy) of the full-data runs, each schedule fully decayed over
    its own epochs, by compute, starting from (0, chance): the price curve of plain
    training."""
    points = []
    for m in FULL_CURVE:
        runs = [u for u in units if u["method"] == m]
        if runs:
            points.append((_mean([u["passes"]["compute"] for u in runs]),
                           _mean([u["test_acc"] for u in runs])))
    if not points:
        return []
    return [(0.0, 1.0 / num_classes), *sorted(points)]


def matching_compute(curve: list[tuple[float, float]], accuracy: float) -> float:
    """The compute full-data training needs to reach ``accuracy`` (linear between measured
    points, so a lower bound on its cost where the curve is concave); NaN above the curve."""
    for (c0, a0), (c1, a1) in zip(curve, curve[1:]):
        if a0 <= accuracy <= a1 and a1 > a0:
            return c0 + (c1 - c0) * (accuracy - a0) / (a1 - a0)
    return math.nan if not curve or accuracy > max(a for _, a in curve) else 0.0


def main_table(units: list[dict], num_classes: int) -> str:
    scores = by_method(units, "test_acc")
    curve = full_data_compute(units, num_classes)
    rows = []
    for method, values in scores.items():
        runs = [u for u in units if u["method"] == method]
        compute = _mean([u["passes"]["compute"] for u in runs])
        row = {"method": method, "epochs": runs[0]["epochs"],
               "test acc (%)": mean_ci_cell(values, 2, 100.0)}
        for base in BASES:
            if base in scores:
                row[f"Δ vs {base}"] = "-" if method == base else _delta(values, scores[base])
        row["compute"] = f"{compute:.3f}"
        row["seconds"] = mean_ci_cell([u["seconds"] for u in runs], 1)
        if curve:
            matched = matching_compute(curve, _mean(values))
            row["full-data compute at this acc"] = "above full" if math.isnan(matched) \
                else f"{matched:.3f}"
            row["saved"] = "-" if math.isnan(matched) else f"{matched - compute:+.3f}"
        rows.append(row)
    return ("test accuracy (mean ± 95% CI over seeds; Δ in points, paired t-test p); "
            "compute in full-epoch forward-equivalents, (train fwd + 2 bwd + select fwd) / 3N; "
            "'full-data compute at this acc' interpolates the full-data runs "
            f"({', '.join(m for m in FULL_CURVE if m in scores)}), and 'saved' is it minus the "
            "method's own compute (positive: the method reached its accuracy more cheaply "
            "than plain training):\n" + format_table(rows))


def cost_table(units: list[dict]) -> str:
    rows = []
    for method in by_method(units, "test_acc"):
        runs = [u for u in units if u["method"] == method]
        rows.append({
            "method": method,
            "best val (%)": mean_ci_cell([u["best_val_acc"] for u in runs], 2, 100.0),
            "select fwd": mean_ci_cell([u["passes"]["select_forward"] for u in runs]),
            "train fwd+bwd": mean_ci_cell([u["passes"]["train_backward"] for u in runs]),
            "compute (epochs)": mean_ci_cell([u["passes"]["compute"] for u in runs]),
            "seconds": mean_ci_cell([u["seconds"] for u in runs], 1),
            "transitions": mean_ci_cell([u["phases"]["transitions"] for u in runs], 1),
            "opt state / AdamW": mean_ci_cell([u["optimizer"].get("vs_adamw", math.nan)
                                               for u in runs], 3)})
    return ("wall time and counted passes (full-epoch units: select forward, train "
            "forward+backward; a full epoch = 1):\n" + format_table(rows))


def phase_summary(units: list[dict]) -> str:
    """How often the detector fired, on what, and where in training."""
    events = [(u, e) for u in units for e in u["phases"]["events"]]
    runs_with = sum(1 for u in units if u["phases"]["transitions"])
    triggers = Counter(e["trigger"] for _, e in events)
    labels = Counter(f"{e['label_before']}->{e['label_after'] or 'run ended'}"
                     for _, e in events)
    steps = [e["step"] / max(1, u["phases"]["observations"]) for u, e in events]
    where = ", ".join(f"{s:.2f}" for s in sorted(steps)[:12]) + (" ..." if len(steps) > 12
                                                                 else "")
    return (f"phase detector: {len(events)} transitions in {runs_with} of {len(units)} runs; "
            f"triggers {dict(triggers) or '{}'}; labels {dict(labels) or '{}'}; positions "
            f"(fraction of the run's steps) {where or '-'}")


def agent_evidence(units: list[dict]) -> str | None:
    """The agent's rewards and choices against the uniform-random control's."""
    parts = []
    for method in ("policy", "policy_random"):
        runs = [u for u in units if u["method"] == method]
        if not runs:
            continue
        late = [e["reward"] for u in runs for e in u["epochs_log"][len(u["epochs_log"]) // 2:]
                if e.get("reward") is not None]
        usage: Counter = Counter()
        for u in runs:
            usage.update(u["strategy_usage"])
        total = sum(usage.values())
        top = ", ".join(f"{s} {100 * c / total:.0f}%" for s, c in usage.most_common(4))
        parts.append(f"{method}: reward over the second half {mean_ci_cell(late, 3)} "
                     f"(n={len(late)}); choices {top}")
    policy = [u for u in units if u["method"] == "policy"]
    if not policy:
        return None
    usage_by_phase: dict[str, Counter] = {}
    for u in policy:
        for e in u["epochs_log"]:
            usage_by_phase.setdefault(e["phase"], Counter())[e["strategy"]] += 1
    pref = [{"phase": phase, "strategy usage (epochs)": ", ".join(
        f"{s}: {c}" for s, c in counts.most_common())}
        for phase, counts in usage_by_phase.items()]
    return ("the agent against its random control (same actions, same reward):\n"
            + "\n".join(parts) + "\nthe policy's choices per detected phase:\n"
            + format_table(pref))


def evolution_table(searches: list[dict]) -> str:
    rows = []
    for s in searches:
        c = s["passes_full_epochs"]
        for rank, t in enumerate(s["top"]):
            rows.append({"seed": s.get("seed", "-"), "rank": rank + 1, "expression": t["text"],
                         "proxy val acc": f"{t['fitness']:.3f}",
                         "warm val acc": f"{s['warm_val_acc']:.3f}"
                         if "warm_val_acc" in s else "-",
                         "evaluations": s["search"]["evaluations"],
                         "search compute": f"{(c['train_forward'] + 2 * c['train_backward'] + c['select_forward']) / 3:.1f}",  # noqa: E501
                         "seconds": f"{s['seconds']:.0f}"})
    return ("evolved strategies (a one-off search per seed, its compute in full-epoch "
            "forward-equivalents and not in the tables above):\n" + format_table(rows))


def verdicts(units: list[dict]) -> str:
    """One plain sentence per adaptive method and baseline."""
    scores = by_method(units, "test_acc")
    compute = {m: _mean([u["passes"]["compute"] for u in units if u["method"] == m])
               for m in scores}
    lines = []
    for method in ADAPTIVE:
        for base in (*BASES, "full_equal_select", "policy_random"):
            if method not in scores or base not in scores or method == base or (
                    base == "policy_random" and method != "policy"):
                continue
            a, b = scores[method], scores[base]
            if len(a) != len(b):
                continue
            diff = 100 * (_mean(a) - _mean(b))
            p = paired_test(a, b).p if len(a) > 1 else math.nan
            sig = "" if math.isnan(p) else (" (significant, p < 0.05)" if p < 0.05
                                            else f" (not significant, p = {p:.3f})")
            word = "BEATS" if diff > 0 else "does NOT beat"
            lines.append(f"{method} {word} {base}: {diff:+.2f} points{sig}; compute "
                         f"{compute[method]:.3f} vs {compute[base]:.3f}")
    return "\n".join(lines) or "verdict: no adaptive method and baseline both ran"


def tables(units: list[dict], title: str, searches: list[dict], num_classes: int) -> str:
    """Every table of one dataset's units (``searches``: the evolution units, one per run)."""
    seeds = sorted({u["seed"] for u in units})
    parts = [f"{title}: {len(seeds)} seed(s) {seeds}", main_table(units, num_classes),
             cost_table(units),
             phase_summary(units)]
    evidence = agent_evidence(units)
    if evidence:
        parts.append(evidence)
    if searches:
        parts.append(evolution_table(searches))
    parts.append(verdicts(units))
    return "\n\n".join(parts)


def corruption_table(rows: list[dict]) -> str:
    """Clean and corrupted accuracy per method, overall and per severity (mean over the 15
    corruptions), with the fraction of clean accuracy kept."""
    out = []
    for m in dict.fromkeys(r["method"] for r in rows):
        mine = sorted((r for r in rows if r["method"] == m), key=lambda r: r["seed"])
        row = {"method": m,
               "clean (%)": mean_ci_cell([r["clean_accuracy"] for r in mine], 2, 100.0),
               "CIFAR-10-C (%)": mean_ci_cell([r["mean_accuracy"] for r in mine], 2, 100.0)}
        for severity in mine[0]["severity_means"]:
            row[f"sev {severity} (%)"] = mean_ci_cell(
                [r["severity_means"][severity] for r in mine], 2, 100.0)
        row["kept"] = mean_ci_cell([r["mean_accuracy"] / r["clean_accuracy"] for r in mine], 3)
        out.append(row)
    return "CIFAR-10-C (15 corruptions, mean over corruptions):\n" + format_table(out)
