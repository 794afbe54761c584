"""The lean masked PPO that self-play trains with (deeplops/ppo.py).

Specifications: advantages are GAE as stable-baselines3 computes them (worked by hand here);
masked actions are never played; the same seed trains the same weights; it learns CartPole as
SB3's PPO does at the same settings; ``deeplops bench train`` reports both rates and their ratio.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO as SB3PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from deeplops.actions import Role
from deeplops.agents import AgentConfig
from deeplops.game import INVALID, GameConfig
from deeplops.policies import load_policy
from deeplops.ppo import PPO, PPOSettings, _gae
from deeplops.selfplay import make_model, pool_sampler
from deeplops.topology import load_topology
from deeplops.training_env import GameVecEnv

TINY = AgentConfig(n_steps=8, batch_size=64, n_epochs=2, hidden=8, rounds=1, n_games=2, envs_per_game=4)


def test_advantages_are_gae_with_the_episode_cut_where_a_new_one_starts():
    # One env, three ticks; an episode starts at tick 2 (so tick 1 does not look past it).
    rewards = torch.tensor([[1.0], [0.0], [2.0]])
    values = torch.tensor([[0.5], [0.4], [1.0]])
    starts = torch.tensor([[1.0], [0.0], [1.0]])
    gamma, lam = 0.9, 0.8
    last_value, last_done = torch.tensor([3.0]), torch.tensor([0.0])
    # By hand, from the last tick back:
    d2 = 2.0 + 0.9 * 3.0 - 1.0  # 3.7
    a2 = d2
    d1 = 0.0 + 0.0 - 0.4  # the next tick starts an episode: no bootstrap
    a1 = d1
    d0 = 1.0 + 0.9 * 0.4 - 0.5  # 0.86
    a0 = d0 + 0.9 * 0.8 * a1
    got = _gae(rewards, values, starts, last_value, last_done, gamma, lam)
    assert torch.allclose(got[:, 0], torch.tensor([a0, a1, a2]))


def _order_env(seed: int = 0) -> GameVecEnv:
    shop = load_topology("shop")
    chaos = pool_sampler([lambda: load_policy("random", Role.CHAOS)])
    return GameVecEnv(Role.ORDER, lambda rng: shop, chaos, TINY.n_games, TINY.envs_per_game, GameConfig(), seed=seed)


def test_training_never_plays_a_masked_action():
    env = _order_env()
    model = make_model(Role.ORDER, TINY, env, 0, "cpu")
    model.learn(3 * TINY.n_steps * TINY.n_envs)
    assert model.num_timesteps == 3 * TINY.n_steps * TINY.n_envs
    # An untrained network spreads its choice over every action: a masked one would have been
    # played (as a counted invalid action) within these ticks had the mask not been applied.
    for game in env.games:
        assert game.tick > 0
        assert (game.stats[:, INVALID] == 0).all()


def test_the_same_seed_trains_the_same_weights_and_another_seed_others():
    def trained(seed: int) -> list[torch.Tensor]:
        model = make_model(Role.ORDER, TINY, _order_env(seed), seed, "cpu")
        model.learn(2 * TINY.n_steps * TINY.n_envs)
        return [p.detach().clone() for p in model.policy.parameters()]

    first, again, other = trained(1), trained(1), trained(2)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.slow
def test_it_learns_cartpole_as_stable_baselines3_does_at_the_same_settings():
    steps = 40_000
    settings = {"n_steps": 128, "batch_size": 256, "n_epochs": 4}
    returns = {}
    for name in ("sb3", "ours"):
        env = make_vec_env("CartPole-v1", n_envs=8, seed=0)
        model = SB3PPO("MlpPolicy", env, seed=0, device="cpu", **settings)  # type: ignore[arg-type]
        if name == "sb3":
            model.learn(steps)
        else:
            PPO(model.policy, env, PPOSettings(gamma=0.99, gae_lambda=0.95, **settings), seed=0).learn(steps)
        returns[name], _ = evaluate_policy(model, make_vec_env("CartPole-v1", n_envs=1, seed=7), n_eval_episodes=20)
    # An untrained policy holds the pole about 20 ticks; both learners get far past it, and near each other.
    assert returns["sb3"] > 200 and returns["ours"] > 200, returns
    assert abs(returns["ours"] - returns["sb3"]) < 0.5 * max(returns.values()), returns


def test_bench_train_reports_both_rates_and_their_ratio(cli, tmp_path):
    path = tmp_path / "train.json"
    result = cli("bench", "train", "--seconds", "0.5", "--json", str(path))
    assert result.code == 0, result.err
    data = json.loads(path.read_text())
    assert set(data) == {"order_transitions_per_s", "cartpole_ppo_transitions_per_s", "ratio_to_cartpole_ppo", "n_envs"}
    assert data["order_transitions_per_s"] > 0 and data["cartpole_ppo_transitions_per_s"] > 0
    assert data["ratio_to_cartpole_ppo"] == pytest.approx(
        data["order_transitions_per_s"] / data["cartpole_ppo_transitions_per_s"]
    )
    assert data["n_envs"] == 256  # the shipped agents/order.yaml: 16 games of 16 envs
    assert "ratio to CartPole PPO" in result.out
    assert np.isfinite(data["ratio_to_cartpole_ppo"])
