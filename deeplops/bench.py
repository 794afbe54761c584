"""``deeplops bench``: how fast the environments step, beside Gymnasium's CartPole in the same process."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

import deeplops  # noqa: F401  (registers the environments)


@dataclass(frozen=True)
class Rate:
    """A measured stepping rate."""

    name: str
    """What was stepped."""
    n_envs: int
    """Envs stepped per call."""
    steps_per_s: float
    """Env-steps per second (calls × n_envs)."""


def _measure(step: Callable[[], None], n_envs: int, seconds: float) -> float:
    """Env-steps/s of ``step`` over about ``seconds``, after a warm-up."""
    for _ in range(50):
        step()
    calls, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(100 if n_envs == 1 else 5):
            step()
        calls += 100 if n_envs == 1 else 5
        now = time.perf_counter()
        if now >= deadline:
            return calls * n_envs / (now - start)


def single(env_id: str, seconds: float) -> float:
    """Steps/s of one env made with ``gymnasium.make``, as users step it (resetting at episode end)."""
    env = gym.make(env_id)
    env.reset(seed=0)
    n = env.action_space.n  # type: ignore[attr-defined]
    actions = iter(np.random.default_rng(0).integers(0, n, 10**7).tolist())

    def step() -> None:
        _, _, terminated, truncated, _ = env.step(next(actions))
        if terminated or truncated:
            env.reset()

    try:
        return _measure(step, 1, seconds)
    finally:
        env.close()


def batched(env_id: str, n_envs: int, seconds: float) -> float:
    """Env-steps/s of ``gymnasium.make_vec`` with the native vector entry point."""
    venv = gym.make_vec(env_id, num_envs=n_envs, vectorization_mode="vector_entry_point")
    venv.reset(seed=0)
    actions = np.zeros(n_envs, np.int64)

    def step() -> None:
        venv.step(actions)

    try:
        return _measure(step, n_envs, seconds)
    finally:
        venv.close()


def _batched_of(n_envs: int) -> Callable[[float], float]:
    return lambda seconds: batched("deeplops/Order-v0", n_envs, seconds)


def run(seconds: float = 2.0, batch_sizes: tuple[int, ...] = (64, 4096), rounds: int = 3) -> dict[str, object]:
    """Measure CartPole, Order-v0 and Chaos-v0 singly, and Order-v0 batched; ratios to CartPole.

    Every configuration is measured in ``rounds`` slices taken in turn, and its best slice is
    kept, so a machine that slows down or speeds up mid-run skews no ratio.
    """
    measures: list[tuple[str, int, Callable[[float], float]]] = [
        ("CartPole-v1", 1, lambda s: single("CartPole-v1", s)),
        ("deeplops/Order-v0", 1, lambda s: single("deeplops/Order-v0", s)),
        ("deeplops/Chaos-v0", 1, lambda s: single("deeplops/Chaos-v0", s)),
    ]
    measures += [("deeplops/Order-v0", n, _batched_of(n)) for n in batch_sizes]
    best = [0.0] * len(measures)
    for _ in range(rounds):
        for i, (_, _, measure) in enumerate(measures):
            best[i] = max(best[i], measure(seconds / rounds))
    rates = [Rate(name, n, rate) for (name, n, _), rate in zip(measures, best, strict=True)]
    cartpole = rates[0].steps_per_s
    return {
        "cartpole_steps_per_s": cartpole,
        "results": [
            {
                "env": r.name,
                "n_envs": r.n_envs,
                "steps_per_s": r.steps_per_s,
                "ratio_to_cartpole": r.steps_per_s / cartpole,
            }
            for r in rates
        ],
    }
