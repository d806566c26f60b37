"""Deep Q-learning (Mnih et al. 2015) in one file, with the double-DQN target (van Hasselt et
al. 2016) and Polyak-averaged target networks as options.

The agent keeps an online Q-network, a target network, a FIFO replay ring of transitions and
an Adam optimiser. ``act`` is epsilon-greedy with epsilon falling linearly from
``epsilon_start`` to ``epsilon_end`` over the first ``exploration_fraction`` of ``total_steps``
observed transitions. ``update`` runs every burst of gradient steps that has fallen due
(``gradient_steps`` of them every ``train_frequency`` transitions once ``learning_starts`` have
been seen), each a Huber TD loss on a uniformly drawn batch and gradient-norm clipping; then
every ``target_update_interval`` transitions the target moves ``tau`` of the way to the online
network (``tau=1``: a hard copy). The target stays fixed within a burst, as in
Stable-Baselines3, so a burst values all its batches' next states in one forward pass.
Steps and intervals count transitions, as in CleanRL and Stable-Baselines3, so their settings
carry over.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from thresher.models.mlp import MLP
from thresher.optim.projection import flatten_parameters
from thresher.rl.core import Transition
from thresher.seeding import derive_seed, make_generator


@dataclass
class DQNConfig:
    """DQN's settings; the defaults are CleanRL's for CartPole, with SB3's network and clip."""

    lr: float = 2.5e-4
    gamma: float = 0.99
    buffer_size: int = 10_000
    batch_size: int = 128
    learning_starts: int = 10_000  # transitions observed before the first gradient step
    train_frequency: int = 10  # transitions between bursts of gradient steps
    gradient_steps: int = 1  # gradient steps per burst (RL Zoo's CartPole: 128 every 256)
    target_update_interval: int = 500  # transitions between target updates
    tau: float = 1.0  # 1: hard copy; < 1: Polyak averaging at each target update
    double: bool = False
    epsilon_start: float = 1.0
    epsilon_end: float = 0.05
    exploration_fraction: float = 0.5  # of total_steps, over which epsilon falls
    total_steps: int = 500_000  # the step budget the epsilon schedule is a fraction of
    max_grad_norm: float = 10.0
    widths: tuple[int, ...] = (64, 64)  # the default MLP's hidden layers

    def validate(self) -> None:
        for name in ("lr", "buffer_size", "batch_size", "train_frequency", "gradient_steps",
                     "target_update_interval", "total_steps", "max_grad_norm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"DQNConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if self.learning_starts < 0:
            raise ValueError(f"DQNConfig.learning_starts must be >= 0, got {self.learning_starts}")
        for name in ("gamma", "epsilon_start", "epsilon_end", "exploration_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"DQNConfig.{name} must lie in [0, 1], got "
                                 f"{getattr(self, name)!r}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"DQNConfig.tau must lie in (0, 1], got {self.tau!r}")


class ReplayRing:
    """The last ``capacity`` transitions, each packed into one float row
    ``[state, next_state, action, reward, done]`` so storing one is a single row copy and a
    batch is a single ``index_select``.

    Not `thresher.data.memory`'s memories: the reservoir keeps a uniform sample of all history
    (DQN replays the recent past, first in first out) and both draw batches without replacement
    through a permutation of the whole memory, O(capacity) per batch; this ring draws indices
    with replacement, O(batch). Actions are stored as floats (exact below 2**24).
    """

    def __init__(self, capacity: int, state_dim: int, device: torch.device,
                 generator: torch.Generator) -> None:
        self.capacity = capacity
        self.state_dim = state_dim
        self.rows = torch.zeros(capacity, 2 * state_dim + 3, device=device)
        self.added = 0
        self.generator = generator

    def __len__(self) -> int:
        return min(self.added, self.capacity)

    def add(self, t: Transition) -> None:
        tail = torch.tensor([float(t.action), float(t.reward), float(t.done)])
        row = torch.cat([t.state.reshape(-1).float(), t.next_state.reshape(-1).float(),
                         tail.to(self.rows.device, non_blocking=True)])
        self.rows[self.added % self.capacity] = row
        self.added += 1

    def sample(self, n: int) -> tuple[torch.Tensor, ...]:
        """``(states, actions, rewards, next_states, dones)`` of ``n`` rows drawn uniformly."""
        idx = torch.randint(len(self), (n,), generator=self.generator, device=self.rows.device)
        batch = self.rows.index_select(0, idx)
        d = self.state_dim
        return (batch[:, :d], batch[:, 2 * d].long(), batch[:, 2 * d + 1], batch[:, d:2 * d],
                batch[:, 2 * d + 2])


def _mlp_values(linears: tuple[nn.Linear, ...], x: torch.Tensor,
                inputs: list[torch.Tensor] | None = None) -> torch.Tensor:
    """The default MLP's forward (its ``body`` then ``head``, the same addmm and ReLU) without
    the modules' call overhead; ``inputs`` collects each layer's input for a backward."""
    x = x.flatten(1)
    for layer in linears[:-1]:
        if inputs is not None:
            inputs.append(x)
        x = torch.addmm(layer.bias, x, layer.weight.t()).relu_()
    if inputs is not None:
        inputs.append(x)
    return torch.addmm(linears[-1].bias, x, linears[-1].weight.t())


def _adam(params: list[nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam with torch's fused kernel (one kernel for every parameter's update, about 3x
    faster than the per-tensor loop on CPU for small networks) where the parameters' device
    and dtypes allow it; otherwise torch's default implementation. Same update rule."""
    fused_devices = torch.utils._foreach_utils._get_fused_kernels_supported_devices()
    fused = bool(params) and all(p.device.type in fused_devices and p.is_floating_point()
                                 for p in params)
    return torch.optim.Adam(params, lr=lr, fused=fused or None)


class DQN:
    """An epsilon-greedy deep Q-learning agent over ``n_actions`` discrete actions.

    ``network`` (any module mapping ``[B, *state_shape]`` float states to ``[B, n_actions]``
    values) replaces the default MLP; it is used as given (its initialisation is the caller's)
    and moved to ``device``. The default MLP is initialised from ``seed`` without touching the
    global generators, so two agents with one seed are identical.

    Speed (benchmarks/rl_cartpole.py): Adam is torch's fused kernel where the device has one,
    and the default MLP (no dropout) takes its gradient step and its greedy action through
    hand-written products (`_mlp_loss_grad`: autograd's gradient bit for bit, with no graph or
    module calls); any other network goes through autograd. A gradient step keeps its
    diagnostics on the device; ``update`` reads them to the host once per call.
    """

    def __init__(self, state_dim: int | tuple[int, ...], n_actions: int,
                 config: DQNConfig | None = None, seed: int = 0,
                 device: torch.device | str = "cpu", network: nn.Module | None = None) -> None:
        self.config = config = config if config is not None else DQNConfig()
        config.validate()
        self.state_shape = (state_dim,) if isinstance(state_dim, int) else tuple(state_dim)
        self.n_actions = n_actions
        self.seed = seed
        self.device = torch.device(device)
        if network is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(seed, "dqn", "init"))
                network = MLP(n_actions, self.state_shape, config.widths)
        self.q = network.to(self.device)
        self.target = copy.deepcopy(self.q).requires_grad_(False)
        self.params = [p for p in self.q.parameters() if p.requires_grad]
        # the default MLP (no dropout, every parameter trained) gets its gradient by hand
        self._linears = None
        if isinstance(self.q, MLP) and not self.q.dropout and \
                len(self.params) == 2 * len(self.q.linears) == len(list(self.q.parameters())):
            self._linears = self.q.linears
            # clipping and Adam run over one flat vector the layers are views of
            layers = [p for layer in self._linears for p in (layer.weight, layer.bias)]
            self.params = [flatten_parameters(layers)]
            self._grads = [p.grad for p in layers]
        self.optimizer = _adam(self.params, config.lr)
        self.explore_generator = make_generator(seed, "dqn", "explore")  # host: one draw a step
        self.replay = ReplayRing(config.buffer_size, math.prod(self.state_shape), self.device,
                                 make_generator(seed, "dqn", "replay", device=self.device))
        self.steps = 0  # transitions observed
        self.updates = 0  # gradient steps taken
        self.target_updates = 0
        self.last = {"td_loss": math.nan, "q_mean": math.nan}
        self._stats: torch.Tensor | None = None  # [td_loss, q_mean] of the latest step, unread


    @property
    def epsilon(self) -> float:
        """The exploration rate at the current step of the linear schedule."""
        c = self.config
        span = c.exploration_fraction * c.total_steps
        progress = min(self.steps / span, 1.0) if span > 0 else 1.0
        return c.epsilon_start + progress * (c.epsilon_end - c.epsilon_start)

    def act(self, state: torch.Tensor, explore: bool = True) -> torch.Tensor:
        """A 0-d long action: uniformly random with probability epsilon when ``explore``,
        else the greedy one. No graph is built and the greedy choice stays on the device."""
        if explore:
            draw = torch.rand(2, generator=self.explore_generator)
            if draw[0].item() < self.epsilon:
                return (draw[1] * self.n_actions).long().clamp_(max=self.n_actions - 1).to(
                    self.device)
        x = state.to(self.device, torch.float32).reshape(1, *self.state_shape)
        with torch.no_grad():
            if self._linears is None:
                return self.q(x)[0].argmax()
            return _mlp_values(self._linears, x)[0].argmax()

    def observe(self, transition: Transition) -> None:
        self.replay.add(transition)
        self.steps += 1

    def _due_bursts(self) -> int:
        """Bursts fall due at transitions ``start, start + train_frequency, ...``."""
        start = max(self.config.learning_starts, 1)  # never on an empty replay
        if self.steps < start:
            return 0
        done = self.updates // self.config.gradient_steps
        return (self.steps - start) // self.config.train_frequency + 1 - done

    def update(self) -> dict[str, float]:
        """Every burst of gradient steps that is due (usually none or one; more if calls were
        skipped), then the target update if its interval has passed. The diagnostics'
        ``td_loss`` and ``q_mean`` are those of the latest gradient step (NaN before the
        first)."""
        for _ in range(self._due_bursts()):
            self._burst(self.config.gradient_steps)
        if self._stats is not None:  # one host read per call, however many steps were due
            stats, self._stats = self._stats.tolist(), None
            self.last = {"td_loss": stats[0], "q_mean": stats[1]}
        if self.steps >= max(self.config.learning_starts, 1) and \
                self.steps // self.config.target_update_interval > self.target_updates:
            self.target_updates = self.steps // self.config.target_update_interval
            self._update_target()
        return {"td_loss": self.last["td_loss"], "q_mean": self.last["q_mean"],
                "epsilon": self.epsilon, "steps": float(self.steps),
                "updates": float(self.updates)}

    def _values(self, online: bool, x: torch.Tensor) -> torch.Tensor:
        if self._linears is None:
            return (self.q if online else self.target)(x)
        return _mlp_values(self._linears if online else self.target.linears, x)

    def _burst(self, n: int) -> None:
        """``n`` gradient steps on ``n`` batches drawn at once. Plain DQN's targets depend only
        on the target network, fixed for the burst, so they come from one forward pass over
        all ``n`` batches; double DQN's need the online network as it moves, step by step."""
        c = self.config
        states, actions, rewards, next_states, dones = self.replay.sample(n * c.batch_size)
        states = states.view(n, c.batch_size, *self.state_shape)
        next_states = next_states.view(-1, *self.state_shape)
        targets = None
        if not c.double:
            with torch.no_grad():
                next_value = self._values(False, next_states).amax(1)
                targets = torch.addcmul(rewards, next_value, 1.0 - dones, value=c.gamma)
            targets = targets.view(n, c.batch_size)
        rewards, dones = rewards.view(n, -1), dones.view(n, -1)
        next_states = next_states.view(n, c.batch_size, *self.state_shape)
        actions = actions.view(n, -1)
        for i in range(n):
            if targets is None:
                with torch.no_grad():
                    # the online network picks the action, the target network values it
                    best = self._values(True, next_states[i]).argmax(1, keepdim=True)
                    next_value = self._values(False, next_states[i]).gather(1, best).squeeze(1)
                    target = torch.addcmul(rewards[i], next_value, 1.0 - dones[i],
                                           value=c.gamma)
            else:
                target = targets[i]
            self._gradient_step(states[i], actions[i], target, last=i == n - 1)

    def _gradient_step(self, states: torch.Tensor, actions: torch.Tensor,
                       target: torch.Tensor, last: bool) -> None:
        """One Huber TD step; the diagnostics (the loss, mean Q(s, a)) are kept from the
        ``last`` step of a burst only, the one `update` reports."""
        c = self.config
        if self._linears is not None:
            q_taken = self._mlp_loss_grad(states, actions, target)
        else:
            q_taken = self.q(states).gather(1, actions[:, None]).squeeze(1)
            self.optimizer.zero_grad(set_to_none=True)
            F.smooth_l1_loss(q_taken, target).backward()
        if last:
            with torch.no_grad():
                self._stats = torch.stack([F.smooth_l1_loss(q_taken, target), q_taken.mean()])
        nn.utils.clip_grad_norm_(self.params, c.max_grad_norm, foreach=self._foreach)
        self.optimizer.step()
        self.updates += 1

    def _mlp_loss_grad(self, states: torch.Tensor, actions: torch.Tensor,
                       target: torch.Tensor) -> torch.Tensor:
        """The default MLP's Huber TD loss and its gradient by hand (as `MLP.loss_grad` does
        for cross-entropy): the same products autograd runs, bit for bit, written straight
        into each parameter's ``.grad`` with no graph to build. Returns Q(s, a)."""
        linears, grads = self._linears, self._grads
        for layer, k in zip(linears, range(0, len(grads), 2)):  # kept through any zero_grad
            layer.weight.grad, layer.bias.grad = grads[k], grads[k + 1]
        with torch.no_grad():
            inputs: list[torch.Tensor] = []  # inputs[k] feeds linears[k]
            values = _mlp_values(linears, states, inputs)
            q_taken = values.gather(1, actions[:, None]).squeeze(1)
            # d loss / d Q(s, a): the TD error clipped to [-1, 1] (Huber, beta 1), over the batch
            step = (q_taken - target).clamp_(-1.0, 1.0).mul_(1.0 / len(target))
            delta = torch.zeros_like(values).scatter_(1, actions[:, None], step[:, None])
            for k in range(len(linears) - 1, -1, -1):
                torch.mm(delta.t(), inputs[k], out=grads[2 * k])
                torch.sum(delta, 0, out=grads[2 * k + 1])
                if k:
                    # ReLU's backward, the kernel autograd runs: zero where the unit was off
                    delta = torch.ops.aten.threshold_backward(delta.mm(linears[k].weight),
                                                              inputs[k], 0)
        return q_taken

    @property
    def _foreach(self) -> bool | None:
        """Fused norms for clipping where torch has them for these parameters' device."""
        return True if self.device.type in ("cpu", "cuda") else None

    def _update_target(self) -> None:
        with torch.no_grad():
            for t, o in zip(self.target.parameters(), self.q.parameters()):
                if self.config.tau == 1.0:
                    t.copy_(o)
                else:
                    t.lerp_(o, self.config.tau)
            for t, o in zip(self.target.buffers(), self.q.buffers()):
                t.copy_(o)

    def state_dict(self) -> dict[str, Any]:
        """A snapshot (copies, not views of live tensors) of everything learning depends on:
        networks, optimiser, counters (hence epsilon's position), replay contents and both
        random streams."""
        return copy.deepcopy({
            "config": asdict(self.config),
            "q": self.q.state_dict(),
            "target": self.target.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "steps": self.steps, "updates": self.updates, "target_updates": self.target_updates,
            "last": dict(self.last),
            "replay_rows": self.replay.rows, "replay_added": self.replay.added,
            "explore_rng": self.explore_generator.get_state(),
            "replay_rng": self.replay.generator.get_state(),
        })

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore an agent saved by `state_dict`, its config included (the schedule's position
        means nothing under another schedule); the networks must have the same shapes."""
        if state["replay_rows"].shape != self.replay.rows.shape:
            raise ValueError(f"replay shape {tuple(state['replay_rows'].shape)} does not match "
                             f"this agent's {tuple(self.replay.rows.shape)}")
        self.config = DQNConfig(**{**state["config"], "widths": tuple(state["config"]["widths"])})
        self.q.load_state_dict(state["q"])
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps, self.updates = state["steps"], state["updates"]
        self.target_updates = state["target_updates"]
        self.last = dict(state["last"])
        self.replay.rows.copy_(state["replay_rows"])
        self.replay.added = state["replay_added"]
        self.explore_generator.set_state(state["explore_rng"])
        self.replay.generator.set_state(state["replay_rng"])
