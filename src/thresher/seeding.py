"""Seeds: one derivation of every random stream from ``(seed, *keys)``.

A run's ``--seed`` is the root; each consumer (data order, initial labelled set, a stream's
permutations, a corruption's chunk) asks for its own stream under its own keys, so adding a
consumer never shifts another's draws and two seeds never share a stream. With no keys the
stream is ``seed`` itself (what ``torch.manual_seed(seed)`` gives); with keys it is NumPy's
`SeedSequence` of the seed and the keys (strings enter as their CRC-32), which mixes them so
that nearby seeds and keys give unrelated streams.
"""

from __future__ import annotations

import os
import random
import zlib

import numpy as np
import torch

Key = int | str


def derive_seed(seed: int, *keys: Key) -> int:
    """A 63-bit integer seed for ``(seed, *keys)``; ``seed`` unchanged when there are no keys."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if not keys:
        return int(seed)
    words = [int(seed)]
    for key in keys:
        if isinstance(key, str):
            words.append(zlib.crc32(key.encode()))
        elif isinstance(key, (int, np.integer)) and not isinstance(key, bool) and key >= 0:
            words.append(int(key))
        else:
            raise ValueError(f"seed keys must be strings or integers >= 0, got {key!r}")
    state = np.random.SeedSequence(words).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))


def make_generator(seed: int, *keys: Key,
                   device: torch.device | str | None = None) -> torch.Generator:
    """A torch generator on ``device`` (default CPU) for the stream ``(seed, *keys)``."""
    generator = torch.Generator(device=device) if device is not None else torch.Generator()
    return generator.manual_seed(derive_seed(seed, *keys))


def make_rng(seed: int, *keys: Key) -> np.random.Generator:
    """The NumPy counterpart of `make_generator`, for code that draws on the host."""
    return np.random.default_rng(derive_seed(seed, *keys))


def set_seed(seed: int, deterministic: bool = True) -> None:
    """Seed the global generators of Python, NumPy and torch (model initialisation draws from
    torch's); with ``deterministic`` CPU runs are bit-reproducible and CUDA ones as close as
    cuDNN allows."""
    derive_seed(seed)  # the same check
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
