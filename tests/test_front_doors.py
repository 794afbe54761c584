"""The envs through the loaders the RL libraries' own documentation starts from.

Specifications: SB3's ``make_vec_env``, Gymnasium's ``make_vec`` in each vectorization mode,
PettingZoo's AEC conversion and its API test, and TorchRL's ``GymEnv`` all build the registered
envs by id and play them; an unsupported render mode is accepted as Gymnasium's convention says
(``gym.make`` warns, ``render()`` returns None), never an error.
"""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest

import deeplops

ORDER_ID, CHAOS_ID = "deeplops/Order-v0", "deeplops/Chaos-v0"
N_ACTIONS = {ORDER_ID: 81, CHAOS_ID: 129}  # 1 + 16 slots * 5 repairs, 1 + 16 slots * 8 faults
MAX_TICKS = 200  # GameConfig.max_ticks default


@pytest.mark.parametrize("env_id", [ORDER_ID, CHAOS_ID])
def test_sb3_make_vec_env_builds_the_env_by_id_and_steps_it(env_id: str) -> None:
    from sb3_contrib.common.maskable.utils import get_action_masks
    from stable_baselines3.common.env_util import make_vec_env

    # make_vec_env asks for render_mode="rgb_array" and falls back only on a TypeError.
    venv = make_vec_env(env_id, n_envs=3, seed=0)
    obs = venv.reset()
    assert obs["services"].shape == (3, 16, 15)
    masks = get_action_masks(venv)
    assert masks.shape == (3, N_ACTIONS[env_id]) and masks[:, 0].all()
    for _ in range(MAX_TICKS):
        obs, rewards, dones, infos = venv.step(np.zeros(3, np.int64))
    assert rewards.shape == (3,)
    assert dones.all()  # the Monitor wrapper's episode ends at the truncation
    assert all(info["episode"]["l"] == MAX_TICKS for info in infos)
    venv.close()


def test_maskable_ppo_trains_through_make_vec_env() -> None:
    from sb3_contrib import MaskablePPO
    from stable_baselines3.common.env_util import make_vec_env

    venv = make_vec_env(ORDER_ID, n_envs=2, seed=0)
    model = MaskablePPO("MultiInputPolicy", venv, n_steps=32, batch_size=32, seed=0, device="cpu")
    model.learn(64)
    assert model.num_timesteps == 64
    venv.close()


@pytest.mark.parametrize("mode", ["sync", "async", "vector_entry_point"])
def test_gymnasium_make_vec_plays_a_whole_episode_in_every_vectorization_mode(mode: str) -> None:
    envs = gym.make_vec(ORDER_ID, num_envs=2, vectorization_mode=mode)
    obs, _ = envs.reset(seed=0)
    assert obs["services"].shape == (2, 16, 15)
    truncations = 0
    for _ in range(MAX_TICKS):
        _, _, terminated, truncated, _ = envs.step(np.zeros(2, np.int64))
        truncations += int(truncated.sum())
        assert not terminated.any()
    assert truncations == 2
    envs.close()


def test_an_unsupported_render_mode_is_accepted_with_a_warning_and_renders_nothing() -> None:
    with pytest.warns(UserWarning, match="render_mode"):
        env = gym.make(ORDER_ID, render_mode="rgb_array")
    env.reset(seed=0)
    env.step(0)
    with pytest.warns(UserWarning, match="ansi"):
        assert env.unwrapped.render() is None  # (gym.make's checker asserts on a first render call)
    env.close()


def test_pettingzoo_aec_conversion_passes_the_api_test_with_masked_sampling() -> None:
    from pettingzoo.test import api_test
    from pettingzoo.utils.conversions import parallel_to_aec

    env = parallel_to_aec(deeplops.parallel_env(env="shop"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the test's style advice (agent names, Dict spaces)
        api_test(env, num_cycles=MAX_TICKS + 20)  # samples every action with info["action_mask"]


def test_pettingzoo_masks_are_int8_and_sample_only_valid_actions() -> None:
    env = deeplops.parallel_env(env="chain")
    _, infos = env.reset(seed=0)
    for agent in env.agents:
        mask = infos[agent]["action_mask"]
        assert mask.dtype == np.int8
        for _ in range(50):
            assert mask[env.action_space(agent).sample(mask)] == 1


def test_torchrl_gym_env_wraps_the_env_and_rolls_out_to_the_truncation() -> None:
    from torchrl.envs import GymEnv

    env = GymEnv(ORDER_ID)
    env.set_seed(0)
    rollout = env.rollout(MAX_TICKS + 10, break_when_any_done=True)
    assert rollout.batch_size == (MAX_TICKS,)  # the episode is truncated at the last tick, never terminated
    assert rollout["next", "truncated"][-1].item() and not rollout["next", "terminated"].any()
    assert rollout["next", "services"].shape == (MAX_TICKS, 16, 15)
    assert rollout["action"].shape == (MAX_TICKS, N_ACTIONS[ORDER_ID])  # one-hot, TorchRL's default
