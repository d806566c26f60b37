"""The distillation's two RL parts, each measured against a random policy at equal compute
(the same number of probe trainings, the cost axis such methods are judged on).

Selection: which real latents to keep. The action space is small and the credit assignment
direct: each class's pool is summarised by ``candidates_per_class`` k-means medoids, and per
class a Gaussian Thompson-sampling semi-bandit (`thresher.rl.bandits.GaussianThompson`, one
problem per class) keeps the ``budget`` candidates with the highest posterior draws. A round
plays ``episodes`` such selections at once, scores them all with one batched probe training
(validation accuracy), and credits every kept candidate with its episode's accuracy minus the
round's mean. The random policy draws the same number of uniformly random selections of the
same candidates and keeps the best on validation.

Shaping: the loss-weight schedule of prototype optimisation. An actor-critic agent
(`thresher.rl.policy_gradient.ActorCritic`) sees the optimisation's progress, its three loss
terms, the current weights and the last validation accuracy, and every ``steps_per_decision``
steps keeps the weights or multiplies one of them by 1.5 or 1/1.5; its reward is the gain in
validation accuracy (percentage points) of a fresh probe on the prototypes (or on the decoded
and re-encoded prototypes). Every episode starts from the non-RL prototypes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from thresher.rl.bandits import GaussianThompson
from thresher.rl.compare import RandomAgent
from thresher.rl.core import Transition
from thresher.rl.policy_gradient import A2CConfig, ActorCritic
from thresher.seeding import derive_seed
from thresher.select.latent import PrototypeOptimizer, kmeans_medoids
from thresher.studies.distill.config import SelectConfig, ShapeConfig
from thresher.train.probe import ProbeConfig, fit_probes

TERMS = ("class_match", "real_align", "diversity")
WEIGHT_RANGE = (1e-3, 10.0)


@dataclass
class Latents:
    """The normalised latents a method works from: the training pool, the validation split
    carved from train (all the RL parts learn from), and the test split (final scores)."""

    x: torch.Tensor
    y: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int


@dataclass
class RLOutcome:
    """An RL part's result and what it cost."""

    points: torch.Tensor  # the final selection's or prototypes' latents
    labels: torch.Tensor
    curve: list[float]  # per round / episode: mean validation reward
    probe_trainings: int
    random_points: torch.Tensor  # the random policy's best on validation, at equal compute
    random_labels: torch.Tensor
    indices: torch.Tensor | None = None  # selection only: indices into the pool
    diagnostics: dict = field(default_factory=dict)


def probe_scores(points: torch.Tensor, labels: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                 num_classes: int, probe: ProbeConfig) -> torch.Tensor:
    """Accuracy on ``(x, y)`` of fresh probes trained on each problem's points: ``points``
    ``[P, n, D]`` (or ``[n, D]``), labels alike; returns ``[P]``."""
    return fit_probes(points, labels, num_classes, probe).accuracy(x, y)


def rl_select(data: Latents, budget: int, cfg: SelectConfig, probe: ProbeConfig,
              seed: int) -> RLOutcome:
    """Thompson-sampling selection of ``budget`` real latents per class (module docstring)."""
    c, k = data.num_classes, cfg.candidates_per_class
    if budget >= k:
        raise ValueError(f"select.budget_per_class={budget} must be smaller than "
                         f"select.candidates_per_class={k}: otherwise there is nothing to choose")
    g = torch.Generator().manual_seed(derive_seed(seed, "rl_select"))  # host draws, any device
    candidates = kmeans_medoids(data.x, data.y, k, g).view(c, k)  # pool indices, class by class
    agent = GaussianThompson(k, prior_mean=0.0, prior_std=0.05, noise_std=None,
                             noise_prior_std=0.05, problems=c, seed=derive_seed(seed, "arms"),
                             device=data.x.device)
    labels = torch.arange(c, device=data.x.device).repeat_interleave(budget)
    rows = torch.arange(c, device=data.x.device)[None, :, None]

    def points_of(arms: torch.Tensor) -> torch.Tensor:
        """``[E, C, budget]`` arms -> ``[E, C * budget, D]`` latents, class by class."""
        return data.x[candidates[rows, arms].flatten(1)]

    curve, trainings = [], 0
    for _ in range(cfg.rounds):
        mean, std = agent.posterior()
        draws = mean + std * torch.randn((cfg.episodes, c, k), generator=g).to(mean.device)
        arms = draws.topk(budget, dim=-1).indices  # [E, C, budget]
        rewards = probe_scores(points_of(arms), labels.expand(cfg.episodes, -1), data.x_val,
                               data.y_val, c, probe)
        trainings += cfg.episodes
        curve.append(float(rewards.mean()))
        advantage = rewards - rewards.mean()
        for e in range(cfg.episodes):
            for j in range(budget):
                agent.record(arms[e, :, j], advantage[e].expand(c))
    chosen = candidates.gather(1, agent.posterior()[0].topk(budget, dim=-1).indices)
    # the random policy: as many uniformly random selections of the same candidates
    total = cfg.rounds * cfg.episodes
    random_arms = torch.rand((total, c, k), generator=g).argsort(-1)[..., :budget].to(
        data.x.device)
    best_val, best = -1.0, None
    for start in range(0, total, cfg.episodes):
        batch = random_arms[start:start + cfg.episodes]
        acc = probe_scores(points_of(batch), labels.expand(len(batch), -1), data.x_val,
                           data.y_val, c, probe)
        top = int(acc.argmax())
        if float(acc[top]) > best_val:
            best_val, best = float(acc[top]), batch[top]
    return RLOutcome(points=data.x[chosen.reshape(-1)], labels=labels, curve=curve,
                     probe_trainings=trainings, random_points=points_of(best[None])[0],
                     random_labels=labels,
                     indices=chosen.reshape(-1),
                     diagnostics={"candidates_per_class": k, "rounds": cfg.rounds,
                                  "episodes": cfg.episodes,
                                  "random_probe_trainings": total})


def _weights_after(action: int, weights: dict[str, float]) -> dict[str, float]:
    """Action 0 keeps the weights; 1 + 2i multiplies term i's by 1.5, 2 + 2i by 1/1.5."""
    out = dict(weights)
    if action:
        term = TERMS[(action - 1) // 2]
        factor = 1.5 if action % 2 else 1 / 1.5
        out[term] = min(max(out[term] * factor, WEIGHT_RANGE[0]), WEIGHT_RANGE[1])
    return out


def rl_shape(data: Latents, init: torch.Tensor, init_labels: torch.Tensor,
             weights: dict[str, float], proto_lr: float, cfg: ShapeConfig, probe: ProbeConfig,
             seed: int, reencode: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None
             ) -> RLOutcome:
    """Actor-critic loss-weight schedules for prototype optimisation (module docstring); the
    greedy policy's final episode gives the prototypes. ``reencode`` (decode then encode
    again) makes the reward image-space."""
    c = data.num_classes
    n_actions = 1 + 2 * len(TERMS)
    state_dim = 2 + 2 * len(TERMS)
    agent = ActorCritic(state_dim, n_actions, A2CConfig(
        gamma=1.0, n_steps=cfg.decisions, lr=cfg.lr, entropy_coef=0.01, hidden=(32, 32)),
        seed=derive_seed(seed, "rl_shape"), device=data.x.device)
    random_agent = RandomAgent(n_actions, seed=derive_seed(seed, "rl_shape_random"))
    trainings = 0

    def accuracy(points: torch.Tensor) -> float:
        nonlocal trainings
        trainings += 1
        seen = points if reencode is None else reencode(points, init_labels)
        return float(probe_scores(seen, init_labels, data.x_val, data.y_val, c, probe)[0])

    def state(step: int, terms: dict[str, float], w: dict[str, float], acc: float
              ) -> torch.Tensor:
        return torch.tensor([step / cfg.decisions, *(terms[t] for t in TERMS),
                             *(math.log(w[t]) for t in TERMS), acc], dtype=torch.float32)

    start_acc = accuracy(init)

    def episode(policy, explore: bool, learn: bool, index: int
                ) -> tuple[float, torch.Tensor]:
        g = torch.Generator().manual_seed(derive_seed(seed, "episode", index))
        opt = PrototypeOptimizer(init, init_labels, data.x, data.y, lr=proto_lr, generator=g)
        w, acc = dict(weights), start_acc
        terms = {t: 0.0 for t in TERMS}  # known after the first interval
        s = state(0, terms, w, acc)
        for d in range(cfg.decisions):
            action = policy.act(s, explore=explore)
            w = _weights_after(int(action), w)
            terms = opt.run(cfg.steps_per_decision, w)
            new_acc = accuracy(opt.points)
            reward = 100.0 * (new_acc - acc)
            acc = new_acc
            s_next = state(d + 1, terms, w, acc)
            if learn:
                policy.observe(Transition(s, action, reward, s_next, d == cfg.decisions - 1))
                policy.update()
            s = s_next
        return acc, opt.points.detach().clone()

    curve = [episode(agent, explore=True, learn=True, index=i)[0]
             for i in range(cfg.episodes)]
    greedy_acc, points = episode(agent, explore=False, learn=False, index=cfg.episodes)
    agent_trainings = trainings
    best_val, best_points = -1.0, init
    for i in range(cfg.episodes + 1):  # equal compute: as many episodes, random weight moves
        acc, pts = episode(random_agent, explore=True, learn=False, index=1000 + i)
        if acc > best_val:
            best_val, best_points = acc, pts
    return RLOutcome(points=points, labels=init_labels, curve=curve,
                     probe_trainings=agent_trainings, random_points=best_points,
                     random_labels=init_labels,
                     diagnostics={"start_val": start_acc, "greedy_val": greedy_acc,
                                  "episodes": cfg.episodes, "decisions": cfg.decisions,
                                  "random_probe_trainings": trainings - agent_trainings})
