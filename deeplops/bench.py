"""``deeplops bench``: how fast the environments step and agents train, beside CartPole in the same process."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
    ratio_to_cartpole: float
    """``steps_per_s`` over CartPole-v1's single-env rate in the same run."""


@dataclass(frozen=True)
class Bench:
    """What one ``deeplops bench`` measured."""

    cartpole_steps_per_s: float
    """CartPole-v1's single-env steps/s: the yardstick."""
    rates: tuple[Rate, ...]
    """Every configuration's rate, CartPole's first."""

    def to_json(self) -> dict[str, Any]:
        """The object ``deeplops bench --json`` writes."""
        return {
            "cartpole_steps_per_s": self.cartpole_steps_per_s,
            "results": [
                {
                    "env": r.name,
                    "n_envs": r.n_envs,
                    "steps_per_s": r.steps_per_s,
                    "ratio_to_cartpole": r.ratio_to_cartpole,
                }
                for r in self.rates
            ],
        }


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


def run(seconds: float = 2.0, batch_sizes: tuple[int, ...] = (64, 4096), rounds: int = 3) -> Bench:
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
    cartpole = best[0]
    rates = tuple(Rate(name, n, rate, rate / cartpole) for (name, n, _), rate in zip(measures, best, strict=True))
    return Bench(cartpole, rates)


def cartpole_ppo_rate(seconds: float = 3.0) -> float:
    """Transitions/s of stable-baselines3 PPO learning CartPole-v1 (8 envs) in this process."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    model = PPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=8, seed=0), n_steps=128, batch_size=256,
                n_epochs=4, seed=0, device="cpu", verbose=0)  # fmt: skip
    steps, start = 0, time.monotonic()
    while time.monotonic() - start < seconds:
        model.learn(1024, reset_num_timesteps=False)
        steps += 1024
    return steps / (time.monotonic() - start)


@dataclass(frozen=True)
class TrainRate:
    """What one ``deeplops bench train`` measured: the order agent's training beside SB3 PPO on CartPole."""

    order_transitions_per_s: float
    """Order-agent training transitions/s, rollout and update, end to end, as ``deeplops selfplay`` trains."""
    cartpole_ppo_transitions_per_s: float
    """SB3 PPO learning CartPole-v1 (8 envs) in the same process: the yardstick."""
    n_envs: int
    """Envs the order agent trains on at once (the shipped ``n_games × envs_per_game``)."""

    @property
    def ratio(self) -> float:
        """The order agent's rate over CartPole PPO's."""
        return self.order_transitions_per_s / self.cartpole_ppo_transitions_per_s

    def to_json(self) -> dict[str, Any]:
        """The object ``deeplops bench train --json`` writes."""
        return {
            "order_transitions_per_s": self.order_transitions_per_s,
            "cartpole_ppo_transitions_per_s": self.cartpole_ppo_transitions_per_s,
            "ratio_to_cartpole_ppo": self.ratio,
            "n_envs": self.n_envs,
        }


def order_training_rate(seconds: float = 10.0) -> tuple[float, int]:
    """Transitions/s of the order agent's training as self-play runs it (shipped hyperparameters, the
    training topologies, random chaos), over whole rollouts after a first one; and its env count."""
    from deeplops.actions import Role
    from deeplops.game import GameConfig
    from deeplops.policies import load_policy
    from deeplops.selfplay import SelfPlayConfig, make_model, pool_sampler, topology_sampler
    from deeplops.training_env import GameVecEnv

    config = SelfPlayConfig.from_files()
    agent = config.agent(Role.ORDER)
    chaos = pool_sampler([lambda: load_policy("random", Role.CHAOS)])
    env = GameVecEnv(Role.ORDER, topology_sampler(config), chaos, agent.n_games, agent.envs_per_game, GameConfig(),
                     config.training_sim)  # fmt: skip
    model = make_model(Role.ORDER, agent, env, 0, "cpu")
    per_rollout = agent.n_steps * agent.n_envs
    model.learn(per_rollout)  # compiles the kernels, warms the allocator
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.learn(per_rollout)
        steps += per_rollout
    return steps / (time.perf_counter() - start), agent.n_envs


def train(seconds: float = 10.0) -> TrainRate:
    """Measure the order agent's training and SB3 PPO on CartPole, ``seconds`` each, in this process."""
    order, n_envs = order_training_rate(seconds)
    return TrainRate(order, cartpole_ppo_rate(seconds), n_envs)
