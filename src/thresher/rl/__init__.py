"""Reinforcement-learning agents shared by the studies: env-agnostic, each shown to learn on
problems with known answers before a study relies on it.

- `core`: the transition an agent observes and the interface every agent has;
- `bandits`: epsilon-greedy, UCB1, Thompson sampling (Bernoulli, Gaussian), LinUCB and a neural
  epsilon-greedy contextual bandit, with constant-step or sliding-window forgetting;
- `dqn`: DQN with a replay ring, target network (hard or Polyak), double DQN, Huber loss;
- `policy_gradient`: REINFORCE with a learned or moving-average baseline, and advantage
  actor-critic (n-step returns, GAE, entropy bonus, PPO-clip as an option);
- `compare`: a random-action agent and the agent-vs-random comparison every RL study reports.
"""
