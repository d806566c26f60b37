"""REINFORCE and actor-critic learn the chain's optimal policy; the random floor does not."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from rl_problems import RIGHT, Chain, greedy_return
from thresher.rl.compare import RandomAgent, compare_to_random
from thresher.rl.core import Transition
from thresher.rl.policy_gradient import (
    A2CConfig,
    ActorCritic,
    Reinforce,
    ReinforceConfig,
    discounted_returns,
    gae,
)

N = 10  # chain length: a random walk from state 1 reaches the far end first 1 time in 9
CAP = 100  # steps before an episode is cut short (a reset without done)
SEEDS = (0, 1, 2)
A2C = A2CConfig(lr=3e-3, n_steps=5, entropy_coef=0.01)
A2C_STEPS = 2000


pytestmark = pytest.mark.usefixtures("one_thread")


def train(agent, env: Chain, steps: int) -> list[dict[str, float]]:
    """``steps`` environment steps, an update offered after each; the diagnostics returned."""
    state, length, diagnostics = env.reset(), 0, []
    for _ in range(steps):
        action = agent.act(state)
        next_state, reward, done = env.step(action)
        agent.observe(Transition(state, action, reward, next_state, done))
        if out := agent.update():
            diagnostics.append(out)
        length += 1
        if done or length >= CAP:
            state, length = env.reset(), 0
        else:
            state = next_state
    return diagnostics


def greedy_actions(agent, env: Chain) -> list[int]:
    return [int(agent.act(s, explore=False)) for s in env.nonterminal_states()]


def assert_solved(agent, env: Chain) -> None:
    assert greedy_actions(agent, env) == [env.optimal_action(s) for s in
                                          env.nonterminal_states()]
    assert greedy_return(agent, env, max_steps=CAP) == (1.0, N - 2)


@pytest.fixture(scope="module")
def a2c_runs() -> dict[int, tuple[ActorCritic, list[dict[str, float]]]]:
    runs = {}
    for seed in SEEDS:
        agent = ActorCritic(N, Chain.n_actions, A2C, seed=seed)
        runs[seed] = agent, train(agent, Chain(N, seed=seed), A2C_STEPS)
    return runs


@pytest.mark.parametrize("seed", SEEDS)
def test_a2c_solves_chain(a2c_runs, seed: int) -> None:
    agent, diagnostics = a2c_runs[seed]
    assert_solved(agent, Chain(N, seed=seed))
    assert diagnostics[-1]["updates"] == len(diagnostics)
    assert set(diagnostics[-1]) == {"policy_loss", "value_loss", "entropy", "mean_return",
                                    "updates"}


@pytest.mark.parametrize("seed", SEEDS)
def test_a2c_entropy_falls_as_policy_sharpens(a2c_runs, seed: int) -> None:
    _, diagnostics = a2c_runs[seed]
    assert diagnostics[0]["entropy"] > 0.68  # log 2 = 0.693: the first policy is near uniform
    assert max(d["entropy"] for d in diagnostics[-20:]) < 0.5
    assert diagnostics[-1]["mean_return"] > 0.9


@pytest.mark.parametrize("seed", SEEDS)
def test_reinforce_value_baseline_solves_chain(seed: int) -> None:
    agent = Reinforce(N, Chain.n_actions, ReinforceConfig(lr=1e-2), seed=seed)
    diagnostics = train(agent, Chain(N, seed=seed), 1500)
    assert_solved(agent, Chain(N, seed=seed))
    assert diagnostics[0]["entropy"] > 0.65 and diagnostics[-1]["entropy"] < 0.3
    assert not any(math.isnan(d["mean_return"]) for d in diagnostics)  # one per episode


@pytest.mark.parametrize("seed", SEEDS)
def test_reinforce_average_baseline_solves_chain(seed: int) -> None:
    config = ReinforceConfig(lr=3e-3, baseline="average")
    agent = Reinforce(N, Chain.n_actions, config, seed=seed)
    diagnostics = train(agent, Chain(N, seed=seed), 2000)
    assert_solved(agent, Chain(N, seed=seed))
    assert math.isnan(diagnostics[-1]["value_loss"])  # no critic to report on


@pytest.mark.parametrize("seed", (0, 1))
def test_ppo_clip_solves_chain(seed: int) -> None:
    config = A2CConfig(lr=1e-3, n_steps=16, gae_lambda=0.95, ppo_clip=0.2, ppo_epochs=4)
    agent = ActorCritic(N, Chain.n_actions, config, seed=seed)
    train(agent, Chain(N, seed=seed), 2000)
    assert_solved(agent, Chain(N, seed=seed))


def test_random_agent_does_not_solve_chain_and_loses_the_comparison(a2c_runs) -> None:
    random_scores = []
    for seed in SEEDS:
        env, agent = Chain(N, seed=seed), RandomAgent(Chain.n_actions, seed=seed)
        returns = [greedy_return(agent, env, CAP)[0] for _ in range(200)]
        random_scores.append(sum(returns) / len(returns))
        # far end first 1 time in 9: expected return 1/9 + 0.1 * 8/9 = 0.2
        assert 0.1 < random_scores[-1] < 0.35
    agent_scores = [greedy_return(a2c_runs[s][0], Chain(N, seed=s), CAP)[0] for s in SEEDS]
    result = compare_to_random(agent_scores, random_scores, agent_name="a2c")
    assert result.agent.mean == 1.0
    assert result.paired.mean_diff > 0.6 and result.paired.p < 0.01


def test_compare_to_random_on_hand_made_numbers() -> None:
    # differences 0.8, 0.8, 0.5: mean 0.7, sd 0.1732, se 0.1, t = 7 on 2 df, where the
    # two-sided p is 1 - t / sqrt(t^2 + 2) = 0.0198 and t(0.975, 2) = 4.303
    result = compare_to_random([1.0, 0.9, 0.8], [0.2, 0.1, 0.3], agent_name="a2c")
    assert result.agent.mean == pytest.approx(0.9)
    assert result.random.mean == pytest.approx(0.2)
    assert result.paired.mean_diff == pytest.approx(0.7)
    assert result.paired.t == pytest.approx(7.0)
    assert result.paired.p == pytest.approx(1 - 7 / math.sqrt(51))
    lines = result.table.splitlines()
    assert lines[0].split()[:2] == ["method", "return"]
    assert lines[2].split() == ["a2c", "0.90", "±", "0.25", "3", "+0.70", "±", "0.43", "0.020"]
    assert lines[3].split() == ["random", "0.20", "±", "0.25", "3", "-", "-"]
    with pytest.raises(ValueError, match="equal lengths"):
        compare_to_random([1.0, 0.9], [0.2, 0.1, 0.3])


def test_random_agent_is_seeded_and_uniform() -> None:
    state = torch.zeros(N)
    first, second = RandomAgent(3, seed=4), RandomAgent(3, seed=4)
    a = [int(first.act(state)) for _ in range(3000)]
    assert a == [int(second.act(state)) for _ in range(3000)]
    assert [int(RandomAgent(3, seed=5).act(state)) for _ in range(20)] != a[:20]
    assert all(900 < a.count(k) < 1100 for k in range(3))


def test_gae_lambda_one_is_n_step_return_and_cuts_stop_the_flow() -> None:
    rewards, values, next_values = [1.0, 0.0, 2.0], [0.5, 0.2, 0.4], [0.2, 0.4, 3.0]
    dones, ends, gamma = [False, False, False], [False, False, True], 0.5
    _, targets = gae(rewards, values, next_values, dones, ends, gamma, lam=1.0)
    # n-step: bootstrap from V(s_3) = 3 at the rollout's end
    assert targets == pytest.approx([1 + 0.5 * (0 + 0.5 * (2 + 0.5 * 3)), 0.5 * 3.5, 3.5])
    advantages, _ = gae(rewards, values, next_values, dones, ends, gamma, lam=0.0)
    # λ = 0: one-step TD errors
    assert advantages == pytest.approx([1 + 0.1 - 0.5, 0.2 - 0.2, 2 + 1.5 - 0.4])
    _, targets = gae(rewards, values, next_values, [False, True, False], ends, gamma, 1.0)
    assert targets == pytest.approx([1.0 + 0.5 * 0.0, 0.0, 3.5])  # done: no bootstrap past it
    assert discounted_returns([1.0, 1.0, 1.0], [False, True, False], 0.5) == [1.5, 1.0, 1.0]


def test_a2c_updates_every_n_steps_across_episode_ends() -> None:
    env, agent = Chain(N, seed=0), ActorCritic(N, 2, A2CConfig(n_steps=3), seed=0)
    state = env.reset()
    pattern = []
    for action in [RIGHT, RIGHT, 0, 0, 0, RIGHT]:  # 2, 3, 2, 1, 0 (the lure: done); 2
        action = torch.tensor(action)
        next_state, reward, done = env.step(action)
        agent.observe(Transition(state, action, reward, next_state, done))
        pattern.append(bool(agent.update()))
        state = env.reset() if done else next_state
    # no update at the episode's end: the second rollout runs on into the next episode
    assert pattern == [False, False, True, False, False, True]
    assert agent.updates == 2 and list(agent.returns) == [0.1]


class LinearValues(nn.Module):
    """Uniform policy, V(one-hot s_i) = v[i]; counts its forward passes (rows per call)."""

    def __init__(self, v: torch.Tensor) -> None:
        super().__init__()
        self.v = nn.Parameter(v.clone())
        self.logits = nn.Parameter(torch.zeros(2))
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls.append(len(x))
        return self.logits.expand(len(x), 2), x @ self.v


def one_hot(i: int) -> torch.Tensor:
    return torch.eye(N)[i]


def test_a2c_rollout_stops_at_done_and_bootstraps_a_cut_from_its_last_state() -> None:
    v, gamma = torch.arange(N, dtype=torch.float32) / 10, 0.5
    net = LinearValues(v)
    agent = ActorCritic(N, 2, A2CConfig(n_steps=5, gamma=gamma), network=net)
    steps = [(1, 2, 0.0, False), (2, 3, 1.0, True),  # an episode ends inside the rollout
             (5, 6, 0.0, False), (6, 7, 2.0, False),  # the next one is cut after s_7
             (1, 2, 0.0, False)]  # a new episode (a reset without done)
    for i, (s, n, r, d) in enumerate(steps):
        agent.observe(Transition(one_hot(s), torch.tensor(0), r, one_hot(n), d))
        out = agent.update()
        assert bool(out) == (i == 4)
    assert agent.ends == [] and agent.buffer == []
    t3 = 2.0 + gamma * v[7]  # the cut bootstraps from V(s_7), not from the new episode
    targets = torch.stack([0.0 + gamma * torch.tensor(1.0), torch.tensor(1.0), gamma * t3, t3,
                           0.0 + gamma * v[2]])  # done: no bootstrap; the end: V(s_2)
    expected = ((v[[1, 2, 5, 6, 1]] - targets) ** 2).mean()
    assert out["value_loss"] == pytest.approx(expected.item())


def test_a2c_acts_once_per_step_and_updates_with_one_pass_plus_the_last_value() -> None:
    net = LinearValues(torch.zeros(N))
    agent = ActorCritic(N, 2, A2CConfig(n_steps=5), network=net)
    env = Chain(N, seed=0)
    state = env.reset()
    for _ in range(10):
        action = agent.act(state)
        next_state, reward, done = env.step(action)
        agent.observe(Transition(state, action, reward, next_state, done))
        agent.update()
        state = env.reset() if done else next_state
    # per rollout: 5 acts of one row; the value of the last next state; the gradient pass
    assert net.calls == [1] * 5 + [1, 5] + [1] * 5 + [1, 5]
    assert agent.updates == 2


def test_cut_episode_ends_returns_there() -> None:
    env, agent = Chain(N, seed=0), Reinforce(N, 2, seed=0)
    state = env.reset()
    for action in (RIGHT, RIGHT):  # cut after two steps: reset without done
        action = torch.tensor(action)
        next_state, reward, done = env.step(action)
        agent.observe(Transition(state, action, reward, next_state, done))
        state = next_state
    state = env.reset()
    action = torch.tensor(0)
    next_state, reward, done = env.step(action)
    agent.observe(Transition(state, action, reward, next_state, done))
    assert agent.ends == [False, True, True]
    assert agent.update()["updates"] == 1.0 and agent.buffer == []
    assert list(agent.returns) == [0.1]  # the cut episode's return is not counted


def test_reward_normalisation_divides_by_running_std_of_discounted_return() -> None:
    agent = ActorCritic(2, 2, A2CConfig(normalize_rewards=True, gamma=0.5, n_steps=10), seed=0)
    s = torch.tensor([1.0, 0.0])
    for reward in (1.0, 2.0, 4.0):
        agent.observe(Transition(s, torch.tensor(0), reward, s, False))
    # discounted returns 1, 2.5, 5.25, pooled with a prior of variance 1 worth 1e-4 samples
    prior, stds = 1e-4, []
    for k in (1, 2, 3):
        seen = torch.tensor([1.0, 2.5, 5.25][:k], dtype=torch.float64)
        n = prior + k
        mean = seen.sum() / n
        m2 = prior * (1 + mean ** 2) + ((seen - mean) ** 2).sum()
        stds.append(float((m2 / n + 1e-8).sqrt()))
    assert stds[0] < 0.1  # one value: a variance near 0, so 1 / std is clipped to 10
    assert [t.reward for t in agent.buffer] == pytest.approx(
        [10.0, 2.0 / stds[1], 4.0 / stds[2]], rel=1e-6)


def make_a2c(seed: int) -> ActorCritic:
    return ActorCritic(N, 2, A2CConfig(n_steps=7, normalize_rewards=True), seed=seed)


def make_reinforce(seed: int) -> Reinforce:
    return Reinforce(N, 2, ReinforceConfig(baseline="average"), seed=seed)


@pytest.mark.parametrize("make", [make_a2c, make_reinforce])
def test_state_dict_round_trip_acts_and_learns_identically(make) -> None:
    agent = make(0)
    train(agent, Chain(N, seed=0), 303)  # mid-rollout and mid-episode
    buffer = io.BytesIO()
    torch.save(agent.state_dict(), buffer)
    buffer.seek(0)
    restored = make(1)  # another seed: everything must come from the checkpoint
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    states = Chain(N).nonterminal_states()
    assert [int(agent.act(s)) for s in states.repeat(20, 1)] == [
        int(restored.act(s)) for s in states.repeat(20, 1)]
    first = train(agent, Chain(N, seed=7), 200)
    second = train(restored, Chain(N, seed=7), 200)
    assert first == second and len(first) > 0
    for p, q in zip(agent.network.parameters(), restored.network.parameters()):
        assert torch.equal(p, q)


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="baseline must be one of value, average, none"):
        Reinforce(N, 2, ReinforceConfig(baseline="mean"))
    with pytest.raises(ValueError, match="optimizer must be one of adam, rmsprop"):
        ActorCritic(N, 2, A2CConfig(optimizer="sgd"))
    with pytest.raises(ValueError, match="gae_lambda"):
        ActorCritic(N, 2, A2CConfig(gae_lambda=1.5))
