"""`thresher.rl.dqn`: DQN learns the chain MDP's optimal policy (plain, double and Polyak),
really updates and decays epsilon, and restores exactly from its state dict."""

import math

import pytest
import torch

from rl_problems import RIGHT, Chain, greedy_return
from thresher.rl.core import Transition
from thresher.rl.dqn import DQN, DQNConfig

N = 10  # chain length: a random walk from state 1 reaches the paying end first 1 time in 9
BUDGET = 2000  # transitions per training run


pytestmark = pytest.mark.usefixtures("one_thread")


def chain_config(**changes) -> DQNConfig:
    """Settings that solve the 10-state chain within BUDGET transitions."""
    settings = dict(lr=1e-3, gamma=0.95, buffer_size=BUDGET, batch_size=64, learning_starts=200,
                    train_frequency=1, target_update_interval=100, exploration_fraction=0.5,
                    epsilon_end=0.05, total_steps=BUDGET, widths=(64,))
    return DQNConfig(**{**settings, **changes})


def train(agent: DQN, env: Chain, steps: int, max_episode_steps: int = 50) -> list[dict]:
    """Run ``steps`` transitions, calling update after each; episodes are cut (not ended: no
    ``done``) after ``max_episode_steps``. Returns every update's diagnostics."""
    history = []
    state, length = env.reset(), 0
    for _ in range(steps):
        action = agent.act(state)
        next_state, reward, done = env.step(action)
        agent.observe(Transition(state, action, reward, next_state, done))
        history.append(agent.update())
        state, length = next_state, length + 1
        if done or length == max_episode_steps:
            state, length = env.reset(), 0
    return history


def greedy_actions(agent: DQN, env: Chain) -> list[int]:
    return [int(agent.act(s, explore=False)) for s in env.nonterminal_states()]


def assert_solves(agent: DQN, env: Chain) -> None:
    optimal = [env.optimal_action(s) for s in env.nonterminal_states()]
    assert greedy_actions(agent, env) == optimal == [RIGHT] * (N - 2)
    assert greedy_return(agent, env, max_steps=4 * N) == (env.optimal_return, N - 2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dqn_solves_the_chain(seed):
    env = Chain(n=N, seed=seed)
    agent = DQN(N, Chain.n_actions, config=chain_config(), seed=seed)
    history = train(agent, env, BUDGET)
    assert_solves(agent, env)
    # right's value at state 1 is gamma ** (N - 3) (the far end pays 1 after N - 2 steps)
    q = agent.q(env.nonterminal_states()[:1]).detach()[0]
    assert q[RIGHT].item() == pytest.approx(0.95 ** (N - 3), abs=0.1)
    assert history[-1]["updates"] == BUDGET - 200 + 1


@pytest.mark.parametrize("changes", [dict(double=True), dict(tau=0.05, target_update_interval=1)],
                         ids=["double", "polyak"])
def test_dqn_variants_solve_the_chain(changes):
    env = Chain(n=N, seed=0)
    agent = DQN(N, Chain.n_actions, config=chain_config(**changes), seed=0)
    train(agent, env, BUDGET)
    assert_solves(agent, env)


def test_an_untrained_or_random_policy_does_not_solve_the_chain():
    env = Chain(n=N, seed=0)
    untrained = DQN(N, Chain.n_actions, config=chain_config(), seed=0)
    assert greedy_return(untrained, env, max_steps=4 * N) != (env.optimal_return, N - 2)
    # a uniformly random policy (epsilon stays 1 before learning starts) mostly takes the lure
    rng = torch.Generator().manual_seed(0)
    far_end = 0
    for _ in range(300):
        env.reset()
        done = False
        while not done:
            _, reward, done = env.step(torch.randint(2, (), generator=rng))
        far_end += reward == 1.0
    assert 15 <= far_end <= 55  # 300 / 9 = 33 expected


def test_diagnostics_show_updates_epsilon_decay_and_falling_td_loss():
    env = Chain(n=N, seed=0)
    config = chain_config()
    agent = DQN(N, Chain.n_actions, config=config, seed=0)
    history = train(agent, env, BUDGET)
    assert set(history[0]) == {"td_loss", "q_mean", "epsilon", "steps", "updates"}
    before = history[config.learning_starts - 2]  # 199 transitions: nothing learned yet
    assert before["updates"] == 0 and math.isnan(before["td_loss"])
    assert history[config.learning_starts - 1]["updates"] == 1
    epsilons = [h["epsilon"] for h in history]
    assert epsilons[0] == pytest.approx(1.0 - 0.95 / 1000)
    assert all(a >= b for a, b in zip(epsilons, epsilons[1:]))
    assert epsilons[999] == pytest.approx(0.05) and epsilons[-1] == pytest.approx(0.05)
    assert [h["steps"] for h in history] == list(range(1, BUDGET + 1))
    early = [h["td_loss"] for h in history[200:500]]
    late = [h["td_loss"] for h in history[-300:]]
    assert sum(late) / len(late) < 0.5 * sum(early) / len(early)


def test_update_catches_up_on_missed_gradient_steps_and_is_idempotent():
    config = chain_config(learning_starts=4, train_frequency=2, batch_size=4)
    agent = DQN(N, Chain.n_actions, config=config, seed=0)
    env = Chain(n=N, seed=0)
    state = env.reset()
    for _ in range(9):
        action = agent.act(state)
        next_state, reward, done = env.step(action)
        agent.observe(Transition(state, action, reward, next_state, done))
        state = env.reset() if done else next_state
    assert agent.update()["updates"] == 3  # due at transitions 4, 6 and 8
    assert agent.update()["updates"] == 3
    eager = DQN(N, Chain.n_actions, config=chain_config(learning_starts=0, batch_size=4), seed=0)
    assert eager.update()["updates"] == 0  # nothing to replay yet
    state = env.reset()
    action = eager.act(state)
    next_state, reward, done = env.step(action)
    eager.observe(Transition(state, action, reward, next_state, done))
    assert eager.update()["updates"] == 1


def test_state_dict_round_trip_acts_and_learns_identically():
    env = Chain(n=N, seed=0)
    agent = DQN(N, Chain.n_actions, config=chain_config(), seed=0)
    train(agent, env, 800)  # mid-schedule: epsilon about 0.5, learning under way
    saved = agent.state_dict()
    restored = DQN(N, Chain.n_actions, config=chain_config(epsilon_end=0.5), seed=7)
    restored.load_state_dict(saved)
    assert restored.epsilon == agent.epsilon and restored.steps == agent.steps == 800
    states = env.nonterminal_states()
    assert [int(restored.act(s)) for s in states.repeat(20, 1)] == \
        [int(agent.act(s)) for s in states.repeat(20, 1)]
    # both continue on identical transitions: identical gradient steps and diagnostics
    a_history = train(agent, Chain(n=N, seed=3), 200)
    b_history = train(restored, Chain(n=N, seed=3), 200)
    assert a_history == b_history
    for p, q in zip(agent.q.parameters(), restored.q.parameters()):
        assert torch.equal(p, q)


def test_target_network_hard_copy_and_polyak():
    config = chain_config(learning_starts=2, train_frequency=1, batch_size=2,
                          target_update_interval=3)
    agent = DQN(N, Chain.n_actions, config=config, seed=0)
    env = Chain(n=N, seed=0)
    first = [p.clone() for p in agent.target.parameters()]
    train(agent, env, 2)  # one gradient step, no target update yet
    assert all(torch.equal(a, b) for a, b in zip(first, agent.target.parameters()))
    train(agent, env, 1)  # transition 3: gradient step, then a hard copy
    assert all(torch.equal(a, b) for a, b in zip(agent.q.parameters(),
                                                 agent.target.parameters()))
    polyak = DQN(N, Chain.n_actions, config=chain_config(tau=0.25, learning_starts=1,
                                                         target_update_interval=1), seed=0)
    before = [p.clone() for p in polyak.target.parameters()]
    train(polyak, env, 1)
    for old, online, new in zip(before, polyak.q.parameters(), polyak.target.parameters()):
        assert torch.allclose(new, 0.75 * old + 0.25 * online)
        assert not torch.equal(new, online)


def test_custom_network_and_config_checks():
    network = torch.nn.Sequential(torch.nn.Linear(N, 2))
    agent = DQN(N, 2, network=network)
    assert agent.q is network and agent.act(torch.eye(N)[1], explore=False).shape == ()
    with pytest.raises(ValueError, match="tau must lie in"):
        DQN(N, 2, config=DQNConfig(tau=0.0))
    with pytest.raises(ValueError, match="batch_size must be > 0"):
        DQN(N, 2, config=DQNConfig(batch_size=0))


def test_hand_written_gradient_equals_autograd():
    """The default MLP's TD-loss gradient by hand is autograd's, bit for bit; a network that
    is not the default MLP takes autograd's path."""
    agent = DQN(N, Chain.n_actions, config=chain_config(widths=(32, 16)), seed=0)
    assert agent._linears is not None
    g = torch.Generator().manual_seed(0)
    states = torch.randn(48, N, generator=g)  # 1 / 48 is inexact: the mean's scaling matters
    actions = torch.randint(2, (48,), generator=g)
    target = 3 * torch.randn(48, generator=g)  # TD errors on both sides of Huber's kink
    q_taken = agent._mlp_loss_grad(states, actions, target)
    hand = [p.grad.clone() for p in agent.q.parameters()]
    # the optimiser steps one flat vector whose gradient the layers' gradients are views of
    (flat,) = agent.params
    assert torch.equal(flat.grad, torch.cat([h.reshape(-1) for h in hand]))
    agent.q.zero_grad(set_to_none=True)
    auto_q = agent.q(states).gather(1, actions[:, None]).squeeze(1)
    auto_loss = torch.nn.functional.smooth_l1_loss(auto_q, target)
    auto_loss.backward()
    assert torch.equal(q_taken, auto_q.detach())
    for h, p in zip(hand, agent.q.parameters()):
        assert torch.equal(h, p.grad)
    agent._mlp_loss_grad(states, actions, target)  # grads reattached after a zero_grad
    assert all(torch.equal(h, p.grad) for h, p in zip(hand, agent.q.parameters()))
    # a step of Adam on the flat vector moves the layers as per-tensor Adam would
    before = [p.detach().clone() for p in agent.q.parameters()]
    reference = [b.clone().requires_grad_() for b in before]
    for r, h in zip(reference, hand):
        r.grad = h.clone()
    torch.optim.Adam(reference, lr=agent.config.lr).step()
    agent.optimizer.step()
    for r, p, b in zip(reference, agent.q.parameters(), before):
        assert not torch.equal(p.detach(), b)  # the layers are live views of the stepped vector
        torch.testing.assert_close(p.detach(), r.detach(), rtol=1e-6, atol=1e-7)
    states_1 = states[:1]
    assert torch.equal(agent.act(states_1[0], explore=False), agent.q(states_1)[0].argmax())
    custom = DQN(N, 2, network=torch.nn.Sequential(torch.nn.Linear(N, 2)))
    assert custom._linears is None
