"""Bandit agents on problems with known answers: the 10-armed testbed of Sutton & Barto (ch. 2),
Bernoulli regret, arms that swap mid-run, and linear contextual bandits."""

from __future__ import annotations

import math

import pytest
import torch

from thresher.rl.bandits import (
    UCB,
    BernoulliThompson,
    EpsilonGreedy,
    GaussianThompson,
    LinUCB,
    NeuralEpsilonGreedy,
    sample_gamma,
)
from thresher.rl.core import Transition
from thresher.seeding import make_generator

PROBLEMS, STEPS = 200, 1000


pytestmark = pytest.mark.usefixtures("one_thread")


def play(agent, means: torch.Tensor, steps: int, generator: torch.Generator,
         bernoulli: bool = False, swap_at: int | None = None) -> dict[str, torch.Tensor]:
    """Run ``agent`` (built with ``problems=B``) on B problems with arm ``means [B, K]``:
    rewards ~ N(mean, 1), or Bernoulli(mean). At ``swap_at`` the best and second-best arms of
    every problem trade means. Returns per-step rewards, optimal-arm hits and expected regret,
    each ``[T, B]``."""
    means = means.clone()
    rows = torch.arange(means.shape[0])
    rewards, optimal, regret = [], [], []
    for step in range(steps):
        if step == swap_at:
            ranked = means.argsort(1)
            best, second = ranked[:, -1], ranked[:, -2]
            means[rows, best], means[rows, second] = means[rows, second], means[rows, best]
        action = agent.act(torch.empty(0))
        mean = means[rows, action]
        if bernoulli:
            reward = (torch.rand(mean.shape, generator=generator) < mean).float()
        else:
            reward = mean + torch.randn(mean.shape, generator=generator)
        agent.record(action, reward)
        rewards.append(reward)
        optimal.append(action == means.argmax(1))
        regret.append(means.max(1).values - mean)
    return {"reward": torch.stack(rewards), "optimal": torch.stack(optimal).float(),
            "regret": torch.stack(regret)}


@pytest.fixture(scope="module")
def testbed() -> dict[str, dict[str, float]]:
    """Sutton & Barto's testbed: q*(a) ~ N(0, 1) for 10 arms, 200 problems, 1,000 steps, every
    agent on the same problems and reward stream."""
    means = torch.randn(PROBLEMS, 10, generator=make_generator(0, "testbed"))
    agents = {
        "greedy": EpsilonGreedy(10, 0.0, problems=PROBLEMS, seed=1),
        "eps 0.01": EpsilonGreedy(10, 0.01, problems=PROBLEMS, seed=1),
        "eps 0.1": EpsilonGreedy(10, 0.1, problems=PROBLEMS, seed=1),
        "UCB c=2": UCB(10, 2.0, problems=PROBLEMS, seed=1),
        "Thompson": GaussianThompson(10, problems=PROBLEMS, seed=1),
        "random": EpsilonGreedy(10, 1.0, problems=PROBLEMS, seed=1),
    }
    figures = {}
    for name, agent in agents.items():
        run = play(agent, means, STEPS, make_generator(0, "testbed", "rewards"))
        figures[name] = {"reward_last100": float(run["reward"][-100:].mean()),
                         "optimal_at_1000": float(run["optimal"][-1].mean()),
                         "optimal_last100": float(run["optimal"][-100:].mean())}
    print("\n10-armed testbed, 200 problems, 1,000 steps")
    for name, row in figures.items():
        print(f"{name:10s} avg reward (last 100) {row['reward_last100']:.3f}  % optimal at 1000 "
              f"{100 * row['optimal_at_1000']:.1f}  (last 100: {100 * row['optimal_last100']:.1f})")
    return figures


def test_testbed_ucb_and_epsilon_find_the_optimal_arm(testbed):
    assert testbed["random"]["optimal_last100"] == pytest.approx(0.1, abs=0.02)
    assert testbed["UCB c=2"]["optimal_last100"] > 0.6
    assert testbed["eps 0.1"]["optimal_last100"] > 0.6
    assert testbed["Thompson"]["optimal_last100"] > 0.6


def test_testbed_orders_as_the_book(testbed):
    # Figure 2.4: UCB (c=2) above epsilon-greedy (0.1) in average reward late in the run
    assert testbed["UCB c=2"]["reward_last100"] > testbed["eps 0.1"]["reward_last100"] + 0.03
    # Figure 2.2: eps 0.1 ~80% optimal at step 1,000, greedy ~1/3; eps 0.01 between them
    assert 0.7 < testbed["eps 0.1"]["optimal_at_1000"] < 0.9
    assert 0.25 < testbed["greedy"]["optimal_at_1000"] < 0.45
    assert testbed["greedy"]["optimal_at_1000"] < testbed["eps 0.01"]["optimal_at_1000"]
    assert testbed["eps 0.1"]["reward_last100"] > testbed["greedy"]["reward_last100"] + 0.2


def test_thompson_bernoulli_regret_is_sublinear():
    generator = make_generator(0, "bernoulli")
    means = torch.rand(20, 5, generator=generator)
    agent = BernoulliThompson(5, problems=20, seed=2)
    regret = play(agent, means, 10_000, generator, bernoulli=True)["regret"].mean(1)
    early, late = float(regret[:5000].sum()), float(regret[5000:].sum())
    uniform = float((means.max(1).values - means.mean(1)).mean()) * 10_000
    print(f"\nThompson regret: steps 0-5000 {early:.1f}, 5000-10000 {late:.1f}, "
          f"uniform policy {uniform:.1f}")
    assert late < 0.5 * early
    assert early + late < 0.05 * uniform


@pytest.mark.parametrize("name, drifting, stationary", [
    ("epsilon-greedy", lambda: EpsilonGreedy(5, 0.1, step_size=0.1, problems=100, seed=3),
     lambda: EpsilonGreedy(5, 0.1, problems=100, seed=3)),
    ("UCB window", lambda: UCB(5, 0.5, window=500, problems=100, seed=3),
     lambda: UCB(5, 0.5, problems=100, seed=3)),
    ("UCB step size", lambda: UCB(5, 0.5, step_size=0.1, problems=100, seed=3),
     lambda: UCB(5, 0.5, problems=100, seed=3)),
    ("Bernoulli Thompson", lambda: BernoulliThompson(5, window=200, problems=100, seed=3),
     lambda: BernoulliThompson(5, problems=100, seed=3)),
    ("Gaussian Thompson",
     lambda: GaussianThompson(5, noise_std=None, window=200, problems=100, seed=3),
     lambda: GaussianThompson(5, noise_std=None, problems=100, seed=3)),
])
def test_forgetting_recovers_after_arms_swap(name, drifting, stationary):
    """Bernoulli arms 0.1, 0.3, ..., 0.9 (a random order per problem); at step 1,500 the best
    (0.9) and second-best (0.7) arms swap. Over the 500 steps after it the forgetting variant
    finds the new best arm (and plays it mostly once its window or step size has passed); the
    sample average is still held by the old one's history."""
    base = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9])
    order = torch.rand(100, 5, generator=make_generator(0, "swap")).argsort(1)
    means = base[order]
    after, last = {}, {}
    for kind, build in (("forgetting", drifting), ("average", stationary)):
        run = play(build(), means, 2000, make_generator(0, "swap", "rewards"), bernoulli=True,
                   swap_at=1500)
        after[kind] = float(run["optimal"][1500:].mean())
        last[kind] = float(run["optimal"][-200:].mean())
    print(f"\n{name}: % new best arm, 500 steps after the swap {after}, last 200 {last}")
    assert after["forgetting"] > after["average"] + 0.2
    assert last["forgetting"] > 0.8


def linear_problem(seed: int, dim: int = 5, arms: int = 4):
    generator = make_generator(seed, "linear")
    theta = torch.randn(arms, dim, generator=generator)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, dim, generator=generator)
        return x, x @ theta.T

    return draw, generator


def train_contextual(agent, draw, generator, rounds: int, learn: bool) -> None:
    for _ in range(rounds):
        x, expected = draw(1)
        action = agent.act(x[0])
        reward = expected[0, action] + 0.5 * torch.randn((), generator=generator)
        agent.observe(Transition(x[0], action, float(reward), x[0], True))
        if learn:
            agent.update()


def greedy_accuracy(agent, draw) -> float:
    x, expected = draw(2000)
    return float((agent.act(x, explore=False) == expected.argmax(1)).float().mean())


def test_linucb_finds_the_best_arm_per_context():
    draw, generator = linear_problem(0)
    agent = LinUCB(4, 5, alpha=1.0, seed=4)
    train_contextual(agent, draw, generator, 1000, learn=False)
    accuracy = greedy_accuracy(agent, draw)
    print(f"\nLinUCB greedy = best arm on {100 * accuracy:.1f}% of fresh contexts")
    assert accuracy > 0.95
    assert agent.update()["steps"] == 1000


def test_neural_epsilon_greedy_finds_the_best_arm_per_context():
    draw, generator = linear_problem(1)
    agent = NeuralEpsilonGreedy(4, 5, epsilon=0.1, lr=3e-3, seed=5)
    train_contextual(agent, draw, generator, 2000, learn=True)
    accuracy = greedy_accuracy(agent, draw)
    print(f"\nneural epsilon-greedy greedy = best arm on {100 * accuracy:.1f}% of fresh contexts")
    assert accuracy > 0.9
    assert agent.update()["loss"] < 1.0


@pytest.mark.parametrize("build, context", [
    (lambda: EpsilonGreedy(4, 0.3, epsilon_end=0.05, decay_steps=50, seed=6), None),
    (lambda: UCB(4, 2.0, window=10, seed=6), None),
    (lambda: BernoulliThompson(4, window=10, seed=6), None),
    (lambda: GaussianThompson(4, noise_std=None, seed=6), None),
    (lambda: LinUCB(4, 3, seed=6), 3),
    (lambda: NeuralEpsilonGreedy(4, 3, learning_starts=8, batch_size=8, seed=6), 3),
])
def test_state_dict_round_trip_repeats_future_actions(build, context):
    """A copy restored from ``state_dict`` (after the original moves on) makes the same choices
    as the original did from the saved point, rewards and updates included."""
    world = make_generator(7, "round trip")

    def steps(agent, n: int, generator: torch.Generator) -> list[int]:
        chosen = []
        for _ in range(n):
            state = torch.empty(0) if context is None else torch.randn(context, generator=generator)
            action = agent.act(state)
            reward = float(torch.rand((), generator=generator) < 0.2 + 0.2 * action)
            agent.observe(Transition(state, action, reward, state, True))
            agent.update()
            chosen.append(int(action))
        return chosen

    agent = build()
    steps(agent, 30, world)
    saved = agent.state_dict()
    world_saved = world.get_state()
    first = steps(agent, 40, world)
    restored = build()
    steps(restored, 5, make_generator(8, "other"))  # a different history, overwritten below
    restored.load_state_dict(saved)
    world.set_state(world_saved)
    second = steps(restored, 40, world)
    assert first == second
    assert len(set(first)) > 1
    assert restored.update() == agent.update()


def test_diagnostics_report_epsilon_entropy_and_mean_reward():
    agent = EpsilonGreedy(4, 1.0, epsilon_end=0.0, decay_steps=10)
    for reward in (1.0, 0.0, 1.0, 1.0):
        agent.record(torch.tensor(2), reward)
    out = agent.update()
    assert out["epsilon"] == pytest.approx(0.6)
    assert out["mean_reward"] == pytest.approx(0.75)
    assert out["count_entropy"] == pytest.approx(0.0)  # every pull on one arm
    assert out["steps"] == 4
    agent = UCB(4)
    for arm in range(4):
        agent.record(torch.tensor(arm), 0.0)
    assert agent.update()["count_entropy"] == pytest.approx(math.log(4))


def test_ucb_tries_every_arm_once_first():
    agent = UCB(6, 2.0, seed=9)
    chosen = []
    for _ in range(6):
        action = agent.act(torch.empty(0))
        agent.record(action, 10.0 if int(action) == 0 else 0.0)
        chosen.append(int(action))
    assert sorted(chosen) == list(range(6))
    assert int(agent.act(torch.empty(0), explore=False)) == 0


def test_sample_gamma_matches_its_moments():
    concentration = torch.tensor([0.5, 1.0, 3.0, 20.0]).repeat(20_000, 1)
    draws = sample_gamma(concentration, make_generator(0, "gamma"))
    mean, var = draws.mean(0), draws.var(0)
    assert torch.allclose(mean, concentration[0], rtol=0.03)
    assert torch.allclose(var, concentration[0], rtol=0.08)
