"""RL agents on CartPole-v1: Thresher's DQN and actor-critic (A2C) against Stable-Baselines3's.

Both sides learn gymnasium's ``CartPole-v1`` (episodes cut at 500 steps; a cut is not a
termination, so it is bootstrapped through) for the same number of environment steps with the
same hyperparameters, written once below in Stable-Baselines3's terms (`HYPER`) and mapped onto
Thresher's config dataclasses name by name by `thresher_agent`. They are RL Zoo's CartPole-v1
settings with one change: A2C runs one environment instead of the zoo's eight (a Thresher
agent observes one transition at a time). DQN takes the zoo's bursts: 128 gradient steps every
256 environment steps, the target copied every 10 steps (so it stays fixed within a burst).
Both sides' A2C rollouts are ``n_steps`` long and run across episode boundaries (no
bootstrapping past a termination; a cut bootstraps from its last state).

Per algorithm, side and seed the benchmark records every training episode's return and
the environment step it ended on, then prints

- the mean return of the last 20 episodes finished within the step budget;
- the environment steps until the 20-episode mean first reached 475 ("solved"), or "not solved";
- the wall time of learning (everything from the first environment step to the last: acting,
  stepping, storing, updating; not imports or building) and environment steps per second;
- "greedy": the mean return of 20 episodes the learned policy plays greedily afterwards (the
  score RL Zoo reports);

and, per algorithm, Thresher over Stable-Baselines3: return at the budget, and speed per
environment step. Target: equal or better return at equal environment steps, at least 2x the
speed. Runs alternate sides seed by seed (Thresher first on even seeds), because this machine's
speed drifts; both sides get the same torch threads (default 1: the networks are small).

Stable-Baselines3 lives in its own virtual environment (it imports nothing of Thresher's; the
benchmark runs it as a subprocess that prints its results as JSON):

    python3 -m venv benchmarks/.venv-sb3
    benchmarks/.venv-sb3/bin/pip install torch==2.13.0 "stable-baselines3==2.9.2" \\
        "gymnasium==1.4.0"

and Thresher's side needs gymnasium in the project's environment:

    .venv/bin/pip install "gymnasium==1.4.0"

Run (about 15 minutes on 2 busy CPU cores; ``--algos``/``--seeds``/``--steps`` for less):

    .venv/bin/python benchmarks/rl_cartpole.py [--algos dqn a2c] [--seeds 3] [--threads 1]

Found on the 2-core development CPU (torch 2.13, 1 thread, 3 seeds; return = mean of the last
20 training episodes at the budget, greedy = 20 greedy episodes after learning):

    algo  side      return at budget   greedy  solved (20-ep mean >= 475)   steps/s  speed
    DQN   Thresher  280.3 (50k steps)  330.7   0/3                          2824     1.76x
    DQN   SB3       330.3              339.7   0/3                          1596
    A2C   Thresher  414.6 (200k)       382.4   3/3, median 70,629 steps     5685     2.45x
    A2C   SB3       497.3              500.0   3/3, median 57,355 steps     2318

A2C meets the speed target; DQN does not: a gradient step's three 64x256x256 products and the
burst's batched target pass are arithmetic both sides pay, and they are about half of
Thresher's time per step. Returns at the budget do not separate the sides over 3 seeds (one
Thresher A2C seed collapsed late, as constant-learning-rate A2C on CartPole does); DQN solves
on neither side within RL Zoo's 50k steps with these settings, though the greedy policies of 4
of the 6 runs score 500.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SB3_PYTHON = Path(__file__).resolve().parent / ".venv-sb3" / "bin" / "python"
ENV_ID = "CartPole-v1"
WINDOW, SOLVED = 20, 475.0
EVAL_EPISODES, EVAL_SEED = 20, 10_000  # greedy episodes after learning, as RL Zoo scores

# One set of hyperparameters per algorithm, in Stable-Baselines3's names (RL Zoo, CartPole-v1).
HYPER: dict[str, dict] = {
    "dqn": {
        "steps": 50_000,
        "net_arch": [256, 256],  # ReLU hidden layers
        "learning_rate": 2.3e-3,  # Adam, constant
        "batch_size": 64,
        "buffer_size": 100_000,
        "learning_starts": 1_000,
        "gamma": 0.99,
        "train_freq": 256,  # environment steps between bursts of gradient steps
        "gradient_steps": 128,  # per burst
        "target_update_interval": 10,  # environment steps between hard target copies
        "exploration_initial_eps": 1.0,
        "exploration_final_eps": 0.04,
        "exploration_fraction": 0.16,  # of the step budget, linear decay
        "max_grad_norm": 10.0,  # Huber loss, plain (not double) DQN
    },
    "a2c": {
        "steps": 200_000,
        "net_arch": [64, 64],  # tanh hidden layers, separate policy and value networks
        "learning_rate": 7e-4,  # constant
        "use_rms_prop": True,  # RMSprop(alpha=0.99), eps below
        "n_steps": 5,
        "gamma": 0.99,
        "gae_lambda": 1.0,  # plain n-step returns
        "ent_coef": 0.0,
        "vf_coef": 0.5,
        "max_grad_norm": 0.5,
        "normalize_advantage": False,
        "rms_prop_eps": 1e-8,  # torch's default, which Thresher's RMSprop keeps
    },
}
NAMES = {"dqn": "DQN", "a2c": "A2C"}


def summarize(returns: list[float], lengths: list[int], steps: int) -> dict:
    """Return at the budget (mean of the last `WINDOW` finished episodes) and the environment
    step at which the `WINDOW`-episode mean first reached `SOLVED` (None: never)."""
    ends = np.cumsum(lengths)
    keep = ends <= steps
    r = np.asarray(returns, dtype=float)[keep]
    ends = ends[keep]
    solved = None
    if len(r) >= WINDOW:
        means = np.convolve(r, np.ones(WINDOW) / WINDOW, mode="valid")
        hit = np.flatnonzero(means >= SOLVED)
        if len(hit):
            solved = int(ends[hit[0] + WINDOW - 1])
    return {"final": float(r[-WINDOW:].mean()) if len(r) else float("nan"), "solved": solved,
            "episodes": int(len(r))}


# ---------------------------------------------------------------- Stable-Baselines3's side


def sb3_run(algo: str, seed: int, threads: int) -> dict:
    """Stable-Baselines3's agent for the budget; runs in the side environment."""
    import warnings

    warnings.filterwarnings("ignore")
    import gymnasium as gym
    import torch
    from stable_baselines3 import A2C, DQN
    from stable_baselines3.common.monitor import Monitor

    torch.set_num_threads(threads)
    h = dict(HYPER[algo])
    steps = h.pop("steps")
    env = Monitor(gym.make(ENV_ID))
    if algo == "dqn":
        model = DQN("MlpPolicy", env, policy_kwargs={"net_arch": h.pop("net_arch")},
                    seed=seed, device="cpu", verbose=0, **h)
    else:
        model = A2C("MlpPolicy", env, policy_kwargs={"net_arch": h.pop("net_arch")},
                    seed=seed, device="cpu", verbose=0, **h)
    start = time.perf_counter()
    model.learn(total_timesteps=steps, log_interval=10**9)  # never dumped: the last values stay
    seconds = time.perf_counter() - start
    eval_env = gym.make(ENV_ID)
    greedy = []
    for episode in range(EVAL_EPISODES):
        obs, _ = eval_env.reset(seed=EVAL_SEED + 1000 * seed + episode)
        total, done = 0.0, False
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = eval_env.step(int(action))
            total, done = total + reward, terminated or truncated
        greedy.append(total)
    logged = model.logger.name_to_value
    diagnostics = {k.split("/")[-1]: float(v) for k, v in logged.items()
                   if k.split("/")[-1] in ("loss", "exploration_rate", "entropy_loss",
                                           "value_loss", "policy_loss")}
    return {"returns": [float(x) for x in env.get_episode_rewards()],
            "lengths": [int(x) for x in env.get_episode_lengths()],
            "seconds": seconds, "steps": steps, "diagnostics": diagnostics,
            "greedy": statistics.mean(greedy)}


def remote_sb3(algo: str, seed: int, threads: int) -> dict:
    """`sb3_run` in a subprocess of the side environment."""
    proc = subprocess.run([str(SB3_PYTHON), __file__, "--sb3", algo, "--seed", str(seed),
                           "--threads", str(threads), "--steps", str(HYPER[algo]["steps"])],
                          capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    lines = proc.stdout.strip().splitlines()
    if proc.returncode or not lines:
        sys.exit(f"Stable-Baselines3 side failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


# ---------------------------------------------------------------- Thresher's side


def thresher_agent(algo: str, seed: int):
    """Thresher's agent with `HYPER`'s settings (every one of them, name by name)."""
    h = HYPER[algo]
    if algo == "dqn":
        from thresher.rl.dqn import DQN, DQNConfig

        config = DQNConfig(lr=h["learning_rate"], gamma=h["gamma"],
                           buffer_size=h["buffer_size"], batch_size=h["batch_size"],
                           learning_starts=h["learning_starts"],
                           train_frequency=h["train_freq"],
                           gradient_steps=h["gradient_steps"],
                           target_update_interval=h["target_update_interval"], tau=1.0,
                           double=False, epsilon_start=h["exploration_initial_eps"],
                           epsilon_end=h["exploration_final_eps"],
                           exploration_fraction=h["exploration_fraction"],
                           total_steps=h["steps"], max_grad_norm=h["max_grad_norm"],
                           widths=tuple(h["net_arch"]))
        return DQN(4, 2, config=config, seed=seed, device="cpu")
    from thresher.rl.policy_gradient import A2CConfig, ActorCritic

    assert h["use_rms_prop"] and h["rms_prop_eps"] == 1e-8 and not h["normalize_advantage"]
    config = A2CConfig(gamma=h["gamma"], n_steps=h["n_steps"], gae_lambda=h["gae_lambda"],
                       lr=h["learning_rate"], optimizer="rmsprop", hidden=tuple(h["net_arch"]),
                       shared=False, entropy_coef=h["ent_coef"], value_coef=h["vf_coef"],
                       max_grad_norm=h["max_grad_norm"], normalize_rewards=False,
                       ppo_clip=None)
    return ActorCritic(4, 2, config=config, seed=seed, device="cpu")


def thresher_run(algo: str, seed: int, threads: int) -> dict:
    """Thresher's agent for the budget in a plain gymnasium loop."""
    import gymnasium as gym
    import torch

    from thresher.rl.core import Transition

    torch.set_num_threads(threads)
    steps = HYPER[algo]["steps"]
    agent = thresher_agent(algo, seed)
    env = gym.make(ENV_ID)
    returns, lengths, diagnostics = [], [], {}
    start = time.perf_counter()
    obs, _ = env.reset(seed=seed)
    state = torch.as_tensor(obs, dtype=torch.float32)
    total, length = 0.0, 0
    for _ in range(steps):
        action = agent.act(state)
        obs, reward, terminated, truncated, _ = env.step(int(action))
        next_state = torch.as_tensor(obs, dtype=torch.float32)
        # `done` stops bootstrapping: a termination, never the time limit's cut
        agent.observe(Transition(state, action, float(reward), next_state, bool(terminated)))
        info = agent.update()
        if info:
            diagnostics = info
        total += reward
        length += 1
        if terminated or truncated:
            returns.append(total)
            lengths.append(length)
            total, length = 0.0, 0
            obs, _ = env.reset()
            state = torch.as_tensor(obs, dtype=torch.float32)
        else:
            state = next_state
    seconds = time.perf_counter() - start
    greedy = []
    for episode in range(EVAL_EPISODES):
        obs, _ = env.reset(seed=EVAL_SEED + 1000 * seed + episode)
        total, done = 0.0, False
        while not done:
            action = agent.act(torch.as_tensor(obs, dtype=torch.float32), explore=False)
            obs, reward, terminated, truncated, _ = env.step(int(action))
            total, done = total + reward, terminated or truncated
        greedy.append(total)
    return {"returns": returns, "lengths": lengths, "seconds": seconds, "steps": steps,
            "diagnostics": {k: float(v) for k, v in diagnostics.items()},
            "greedy": statistics.mean(greedy)}


# ---------------------------------------------------------------- both


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", nargs="+", choices=sorted(HYPER), default=["dqn", "a2c"])
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per side")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, both sides")
    parser.add_argument("--steps", type=int, help="override every algorithm's step budget "
                        "(for a quick try; the comparison is at the default budgets)")
    parser.add_argument("--side", choices=("both", "thresher", "sb3"), default="both")
    parser.add_argument("--sb3", metavar="ALGO", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps:
        for h in HYPER.values():
            h["steps"] = args.steps
    if args.sb3:  # the subprocess side
        print(json.dumps(sb3_run(args.sb3, args.seed, args.threads)))
        return
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    if args.side != "thresher" and not SB3_PYTHON.exists():
        sys.exit(f"no Stable-Baselines3 environment at {SB3_PYTHON}; create it as the docstring "
                 f"of {Path(__file__).name} says")
    sides = {"Thresher": thresher_run, "SB3": remote_sb3}
    if args.side != "both":
        sides = {k: v for k, v in sides.items() if (k == "SB3") == (args.side == "sb3")}
    results = {}
    for algo in args.algos:
        for seed in range(args.seeds):
            order = list(sides) if seed % 2 == 0 else list(sides)[::-1]
            for side in order:
                run = sides[side](algo, seed, args.threads)
                run.update(summarize(run["returns"], run["lengths"], run["steps"]))
                results[algo, side, seed] = run
                solved = run["solved"] if run["solved"] is not None else "not solved"
                print(f"  {NAMES[algo]} {side:8s} seed {seed}: return {run['final']:6.1f}, "
                      f"greedy {run['greedy']:5.1f}, "
                      f"solved at {solved}, {run['seconds']:6.1f} s, "
                      f"{run['steps'] / run['seconds']:7.0f} steps/s, {run['episodes']} "
                      f"episodes; {json.dumps(run['diagnostics'])}", flush=True)
    report(results, args)


def report(results: dict, args) -> None:
    print(f"\n{ENV_ID}, {args.threads} torch thread(s); return: mean of the last {WINDOW} "
          f"training episodes within the budget; solved: environment steps until the "
          f"{WINDOW}-episode mean first reached {SOLVED:g}")
    print(f"greedy: mean return of {EVAL_EPISODES} episodes of the learned policy acting "
          f"greedily afterwards (RL Zoo's score)")
    print(f"{'algorithm':9s} {'side':8s} {'seed':>4s} {'steps':>7s} {'return':>7s} "
          f"{'greedy':>7s} {'solved at':>10s} {'wall s':>7s} {'steps/s':>8s}  last diagnostics")
    for algo in args.algos:
        steps = HYPER[algo]["steps"]
        summary = {}
        for side in ("Thresher", "SB3"):
            runs = {s: results[algo, side, s] for s in range(args.seeds)
                    if (algo, side, s) in results}
            if not runs:
                continue
            for seed, r in runs.items():
                solved = str(r["solved"]) if r["solved"] is not None else "not solved"
                diag = ", ".join(f"{k} {v:.4g}" for k, v in r["diagnostics"].items()
                                 if k not in ("steps", "updates", "mean_return"))
                print(f"{NAMES[algo]:9s} {side:8s} {seed:4d} {steps:7d} {r['final']:7.1f} "
                      f"{r['greedy']:7.1f} {solved:>10s} {r['seconds']:7.1f} "
                      f"{steps / r['seconds']:8.0f}  {diag}")
            final = statistics.mean(r["final"] for r in runs.values())
            greedy = statistics.mean(r["greedy"] for r in runs.values())
            hits = [r["solved"] for r in runs.values() if r["solved"] is not None]
            seconds = statistics.median(r["seconds"] for r in runs.values())
            solved = (f"{len(hits)}/{len(runs)}, median {statistics.median(hits):.0f}" if hits
                      else f"0/{len(runs)}")
            print(f"{NAMES[algo]:9s} {side:8s} {'all':>4s} {steps:7d} {final:7.1f} "
                  f"{greedy:7.1f} {'':>10s} {seconds:7.1f} {steps / seconds:8.0f}  (mean return, "
                  f"median time) solved {solved}")
            summary[side] = (final, steps / seconds)
        if len(summary) == 2:
            (ours_r, ours_s), (theirs_r, theirs_s) = summary["Thresher"], summary["SB3"]
            pairs = [results[algo, "SB3", s]["seconds"] / results[algo, "Thresher", s]["seconds"]
                     for s in range(args.seeds)]
            print(f"{NAMES[algo]}: Thresher / SB3 return at {steps} steps {ours_r / theirs_r:.2f}x "
                  f"({ours_r - theirs_r:+.1f}; target >= 1x); speed per environment step "
                  f"{ours_s / theirs_s:.2f}x (per seed " + " ".join(f"{p:.2f}" for p in pairs)
                  + "; target >= 2x)")


if __name__ == "__main__":
    main()
