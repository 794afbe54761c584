"""The Gymnasium, vector and PettingZoo faces of the game (docs/design.md §2, §4.4, §4.5).

Specifications: the registered envs pass the checkers that ship with Gymnasium,
stable-baselines3 and PettingZoo; a seed fixes a rollout; masks say which actions are valid;
the batched env truncates and resets as Gymnasium's same-step autoreset does; the opponent is
a policy object of the other role; bad input raises the documented errors.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gymnasium_check_env
from pettingzoo.test import parallel_api_test, parallel_seed_test
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import deeplops
from deeplops.actions import Role
from deeplops.baselines import NoopPolicy, RunbookPolicy
from deeplops.errors import ConfigError, PolicyError, SandboxError

ORDER_ID, CHAOS_ID = "deeplops/Order-v0", "deeplops/Chaos-v0"
ENV_IDS = [ORDER_ID, CHAOS_ID]
N_ACTIONS = {ORDER_ID: 81, CHAOS_ID: 129}  # 1 + 16 slots * 5 repairs, 1 + 16 slots * 8 faults
MAX_TICKS = 200  # GameConfig.max_ticks default
TOPOLOGIES = ["shop", "chain", "bank"]

# Service names as written in envs/*.yaml.
SERVICE_NAMES = {
    "shop": ["gateway", "api", "cache", "db", "queue", "worker"],
    "chain": ["web", "app", "db"],
    "bank": [
        "web", "mobile", "auth", "accounts", "payments", "fraud",
        "ledger", "sessions", "cache", "queue", "users-db", "ledger-db",
    ],
}  # fmt: skip
SINCE_REPAIR = 9  # Feature.SINCE_REPAIR, as documented in observation.py

# A fixed, arbitrary action script per role: mostly noops, sometimes an action on a low slot.
ORDER_SCRIPT = [0 if t % 3 else (t * 7) % 25 for t in range(60)]
CHAOS_SCRIPT = [0 if t % 6 else 1 + (t * 11) % 30 for t in range(60)]


def _script(env_id: str) -> list[int]:
    return ORDER_SCRIPT if env_id == ORDER_ID else CHAOS_SCRIPT


def _rollout(env: gym.Env, seed: int, actions: list[int]) -> tuple[list[dict[str, np.ndarray]], list[float]]:
    obs, _ = env.reset(seed=seed)
    observations, rewards = [obs], []
    for action in actions:
        obs, reward, _, _, _ = env.step(action)
        observations.append(obs)
        rewards.append(reward)
    return observations, rewards


def _same_observations(a: list[dict[str, np.ndarray]], b: list[dict[str, np.ndarray]]) -> bool:
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(a, b, strict=True)
    )


def _parallel_rollout(seed: int) -> tuple[list[dict], list[dict[str, float]]]:
    env = deeplops.parallel_env()
    obs, _ = env.reset(seed=seed)
    observations, rewards = [obs], []
    for chaos, order in zip(CHAOS_SCRIPT, ORDER_SCRIPT, strict=True):
        obs, reward, _, _, _ = env.step({"chaos": chaos, "order": order})
        observations.append(obs)
        rewards.append(reward)
    return observations, rewards


def _same_parallel_observations(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        _same_observations([x[agent] for x in a], [y[agent] for y in b]) for agent in ("chaos", "order")
    )


def _make_vec(env_id: str, num_envs: int = 8, **kwargs: object) -> gym.vector.VectorEnv:
    return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs)


# --- the checkers that ship with the libraries -------------------------------------------------


@pytest.mark.parametrize("topology", TOPOLOGIES)
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gymnasium_env_checker_passes_without_warnings(env_id: str, topology: str) -> None:
    env = gym.make(env_id, env=topology).unwrapped
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gymnasium_check_env(env)


@pytest.mark.parametrize("topology", TOPOLOGIES)
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_stable_baselines3_env_checker_passes(env_id: str, topology: str) -> None:
    env = gym.make(env_id, env=topology).unwrapped
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # Per-slot matrices are the design (docs/design.md §4.4); SB3 only suggests flattening them.
        warnings.filterwarnings("ignore", message="Your observation .* has an unconventional shape")
        sb3_check_env(env)


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_pettingzoo_parallel_api_test_passes_through_a_whole_episode(topology: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parallel_api_test(deeplops.parallel_env(env=topology), num_cycles=MAX_TICKS + 50)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gymnasium_env_checker_passes_with_ansi_rendering(env_id: str) -> None:
    env = gym.make(env_id, render_mode="ansi").unwrapped
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gymnasium_check_env(env)


def test_pettingzoo_parallel_seed_test_passes() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parallel_seed_test(lambda: deeplops.parallel_env(env="bank"), num_cycles=MAX_TICKS + 50)


def test_parallel_env_has_agents_chaos_and_order() -> None:
    env = deeplops.parallel_env()
    env.reset(seed=0)
    assert sorted(env.possible_agents) == ["chaos", "order"]
    assert sorted(env.agents) == ["chaos", "order"]


# --- episodes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_env_truncates_exactly_at_max_ticks_and_never_terminates(env_id: str) -> None:
    env = gym.make(env_id)
    env.reset(seed=0)
    for tick in range(1, MAX_TICKS + 1):
        _, _, terminated, truncated, info = env.step(0)
        assert not terminated
        assert truncated == (tick == MAX_TICKS), f"truncated={truncated} at step {tick}"
    assert info["episode_stats"].ticks == MAX_TICKS


def test_parallel_env_truncates_both_agents_at_max_ticks_and_empties_agents() -> None:
    env = deeplops.parallel_env()
    env.reset(seed=0)
    for tick in range(1, MAX_TICKS + 1):
        _, _, terminations, truncations, _ = env.step({"chaos": 0, "order": 0})
        assert not any(terminations.values())
        assert truncations == {"chaos": tick == MAX_TICKS, "order": tick == MAX_TICKS}
    assert env.agents == []


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_returned_observations_are_not_overwritten_by_later_steps(env_id: str) -> None:
    env = gym.make(env_id)
    obs, _ = env.reset(seed=0)
    kept = {key: value.copy() for key, value in obs.items()}
    for _ in range(5):
        env.step(1)
    assert all(np.array_equal(obs[key], kept[key]) for key in kept)


def test_order_env_plays_a_masked_action_as_a_free_noop() -> None:
    env = gym.make(ORDER_ID, opponent="noop")  # shop: slots 6..15 are padding
    env.reset(seed=0)
    padded_restart = 1 + 10 * 5
    assert not env.unwrapped.action_masks()[padded_restart]
    rewards = [env.step(padded_restart)[1] for _ in range(MAX_TICKS)]
    stats = env.unwrapped.game.episode_stats()[0]
    assert rewards == pytest.approx([1.0] * MAX_TICKS)
    assert stats.repairs == 0
    assert stats.invalid_actions == MAX_TICKS


# --- seeding -----------------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_same_seed_gives_identical_rollouts_in_fresh_envs(env_id: str) -> None:
    first = _rollout(gym.make(env_id), 123, _script(env_id))
    second = _rollout(gym.make(env_id), 123, _script(env_id))
    assert _same_observations(first[0], second[0])
    assert first[1] == second[1]


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_reseeding_the_same_env_replays_its_rollout(env_id: str) -> None:
    env = gym.make(env_id)
    first = _rollout(env, 7, _script(env_id))
    _rollout(env, 8, _script(env_id))
    again = _rollout(env, 7, _script(env_id))
    assert _same_observations(first[0], again[0])
    assert first[1] == again[1]


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_different_seeds_give_different_rollouts(env_id: str) -> None:
    first = _rollout(gym.make(env_id), 123, _script(env_id))
    other = _rollout(gym.make(env_id), 124, _script(env_id))
    assert not _same_observations(first[0], other[0])


def test_parallel_env_same_seed_gives_identical_rollouts() -> None:
    first, second = _parallel_rollout(5), _parallel_rollout(5)
    assert _same_parallel_observations(first[0], second[0])
    assert first[1] == second[1]


def test_parallel_env_different_seeds_give_different_rollouts() -> None:
    first, other = _parallel_rollout(5), _parallel_rollout(6)
    assert not _same_parallel_observations(first[0], other[0])


def test_vector_env_same_seed_gives_identical_rollouts() -> None:
    def rollout() -> list[dict[str, np.ndarray]]:
        envs = _make_vec(ORDER_ID, num_envs=4)
        obs, _ = envs.reset(seed=11)
        observations = [obs]
        for action in ORDER_SCRIPT:
            obs, *_ = envs.step(np.full(4, action))
            observations.append(obs)
        return observations

    assert _same_observations(rollout(), rollout())


def test_make_vec_seeds_env_i_with_seed_plus_i() -> None:
    def env_rollout(seed: int, index: int) -> list[np.ndarray]:
        envs = _make_vec(ORDER_ID, num_envs=3, opponent="noop")
        obs, _ = envs.reset(seed=seed)
        observations = [obs["services"][index].copy()]
        for action in ORDER_SCRIPT:
            obs, *_ = envs.step(np.full(3, action))
            observations.append(obs["services"][index].copy())
        return observations

    assert all(np.array_equal(a, b) for a, b in zip(env_rollout(20, 2), env_rollout(22, 0), strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(env_rollout(20, 1), env_rollout(22, 0), strict=True))


# --- action masks ------------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_action_masks_is_a_bool_vector_over_the_action_space(env_id: str) -> None:
    env = gym.make(env_id)
    env.reset(seed=0)
    mask = env.unwrapped.action_masks()
    assert mask.dtype == np.bool_
    assert mask.shape == (env.action_space.n,) == (N_ACTIONS[env_id],)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_action_masks_allow_noop(env_id: str) -> None:
    env = gym.make(env_id)
    env.reset(seed=0)
    assert env.unwrapped.action_masks()[0]


@pytest.mark.parametrize("topology", TOPOLOGIES)
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_action_masks_forbid_every_padded_slot(env_id: str, topology: str) -> None:
    env = gym.make(env_id, env=topology)
    env.reset(seed=0)
    per_slot = 5 if env_id == ORDER_ID else 8
    first_padded_action = 1 + len(SERVICE_NAMES[topology]) * per_slot
    mask = env.unwrapped.action_masks()
    assert not mask[first_padded_action:].any()
    assert mask[1:first_padded_action].any()


def test_order_mask_allows_clean_disk_only_on_services_with_a_volume() -> None:
    env = gym.make(ORDER_ID, env="chain")  # slots in dependency order: db, app, web; only db has a disk
    env.reset(seed=0)
    mask = env.unwrapped.action_masks()
    clean_disk = [mask[1 + slot * 5 + 1] for slot in range(3)]
    assert clean_disk == [True, False, False]


def test_chaos_mask_forbids_a_second_fault_on_a_faulted_service() -> None:
    env = gym.make(CHAOS_ID, opponent="noop")  # shop: slot 0 is cache, slot 1 is db (with a volume)
    env.reset(seed=0)
    db_faults = slice(1 + 1 * 8, 1 + 1 * 8 + 7)  # all but conn_leak: shop has no PostgreSQL
    assert env.unwrapped.action_masks()[db_faults].all()
    env.step(1 + 1 * 8 + 2)  # cpu_hog on db
    mask = env.unwrapped.action_masks()
    assert not mask[db_faults].any()
    assert mask[1 : 1 + 8].any()


def test_sb3_contrib_reads_the_masks_through_a_dummy_vec_env() -> None:
    from sb3_contrib.common.maskable.utils import get_action_masks
    from stable_baselines3.common.vec_env import DummyVecEnv

    venv = DummyVecEnv([lambda: gym.make(ORDER_ID)])
    venv.seed(0)
    venv.reset()
    masks = get_action_masks(venv)
    assert masks.shape == (1, N_ACTIONS[ORDER_ID])
    assert masks[0, 0]
    assert not masks[0, -1]


def test_maskable_ppo_learns_and_predicts_only_allowed_actions() -> None:
    from sb3_contrib import MaskablePPO

    model = MaskablePPO(
        "MultiInputPolicy",
        gym.make(ORDER_ID),
        n_steps=64,
        batch_size=32,
        policy_kwargs={"net_arch": [8]},
        seed=0,
        device="cpu",
    )
    model.learn(128)
    env = gym.make(ORDER_ID)
    obs, _ = env.reset(seed=0)
    for _ in range(50):
        mask = env.unwrapped.action_masks()
        action, _ = model.predict(obs, action_masks=mask, deterministic=False)
        assert mask[int(action)]
        obs, *_ = env.step(int(action))


# --- the native vector env ---------------------------------------------------------------------


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_make_vec_returns_observations_batched_along_a_leading_axis(env_id: str) -> None:
    envs = _make_vec(env_id)
    obs, _ = envs.reset(seed=0)
    single = envs.single_observation_space
    assert set(obs) == set(single.spaces)
    for key, value in obs.items():
        assert value.shape == (8, *single[key].shape)
    assert envs.observation_space.contains(obs)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_make_vec_steps_return_one_reward_per_env(env_id: str) -> None:
    envs = _make_vec(env_id)
    envs.reset(seed=0)
    obs, rewards, terminations, truncations, _ = envs.step(np.zeros(8, np.int64))
    assert rewards.shape == terminations.shape == truncations.shape == (8,)
    assert envs.observation_space.contains(obs)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_make_vec_truncates_every_env_exactly_at_max_ticks(env_id: str) -> None:
    envs = _make_vec(env_id)
    envs.reset(seed=0)
    for tick in range(1, MAX_TICKS + 1):
        _, _, terminations, truncations, infos = envs.step(np.zeros(8, np.int64))
        assert not terminations.any()
        if tick < MAX_TICKS:
            assert not truncations.any(), f"truncated early, at step {tick}"
            assert "final_obs" not in infos
    assert truncations.all()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_make_vec_reports_final_observations_on_truncation(env_id: str) -> None:
    envs = _make_vec(env_id)
    envs.reset(seed=0)
    for _ in range(MAX_TICKS):
        _, _, _, _, infos = envs.step(np.zeros(8, np.int64))
    assert len(infos["final_obs"]) == 8
    assert infos["_final_obs"].all()
    assert all(envs.single_observation_space.contains(final) for final in infos["final_obs"])


def test_make_vec_order_env_starts_a_fresh_episode_after_truncation() -> None:
    envs = _make_vec(ORDER_ID)
    envs.reset(seed=0)
    restart_slot_0 = np.ones(8, np.int64)
    for _ in range(MAX_TICKS):
        obs, _, _, _, infos = envs.step(restart_slot_0)
    # The last tick restarted slot 0; the new episode has never repaired anything.
    assert all(final["services"][0, SINCE_REPAIR] < 1.0 for final in infos["final_obs"])
    assert (obs["services"][:, 0, SINCE_REPAIR] == 1.0).all()
    for tick in range(1, MAX_TICKS + 1):
        _, _, _, truncations, _ = envs.step(np.zeros(8, np.int64))
        assert truncations.all() == (tick == MAX_TICKS)
        assert truncations.any() == (tick == MAX_TICKS)


def test_make_vec_chaos_env_refills_the_budget_after_truncation() -> None:
    envs = _make_vec(CHAOS_ID)
    envs.reset(seed=0)
    envs.step(np.ones(8, np.int64))  # kill slot 0: spends budget
    for _ in range(MAX_TICKS - 1):
        obs, _, _, _, infos = envs.step(np.zeros(8, np.int64))
    assert all(final["budget"][0] < 1.0 for final in infos["final_obs"])
    assert (obs["budget"][:, 0] == 1.0).all()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_make_vec_action_masks_have_one_row_per_env(env_id: str) -> None:
    envs = _make_vec(env_id)
    envs.reset(seed=0)
    masks = envs.action_masks()
    assert masks.shape == (8, N_ACTIONS[env_id])
    assert masks.dtype == np.bool_
    assert masks[:, 0].all()


# --- the opponent is a policy object -----------------------------------------------------------


def test_order_env_with_noop_opponent_never_sees_a_fault() -> None:
    env = gym.make(ORDER_ID, opponent="noop")
    env.reset(seed=0)
    rewards = []
    for _ in range(MAX_TICKS):
        _, reward, _, _, info = env.step(0)
        rewards.append(reward)
    assert rewards == pytest.approx([1.0] * MAX_TICKS)
    assert info["episode_stats"].faults_injected == 0


def test_order_env_default_opponent_injects_faults() -> None:
    env = gym.make(ORDER_ID)
    env.reset(seed=0)
    for _ in range(MAX_TICKS):
        _, _, _, _, info = env.step(0)
    assert info["episode_stats"].faults_injected > 0


def test_order_env_accepts_a_chaos_policy_object_as_opponent() -> None:
    opponent = NoopPolicy(Role.CHAOS)
    env = gym.make(ORDER_ID, opponent=opponent)
    env.reset(seed=0)
    for _ in range(MAX_TICKS):
        _, reward, _, _, info = env.step(0)
        assert reward == pytest.approx(1.0)
    assert env.unwrapped.opponent is opponent
    assert info["episode_stats"].faults_injected == 0


def test_chaos_env_accepts_an_order_policy_object_as_opponent() -> None:
    opponent = RunbookPolicy()
    env = gym.make(CHAOS_ID, opponent=opponent)
    env.reset(seed=0)
    env.step(1 + 1 * 6)  # kill slot 1
    for _ in range(20):
        env.step(0)
    assert env.unwrapped.opponent is opponent
    assert env.unwrapped.game.episode_stats()[0].faults_recovered == 1


@pytest.mark.parametrize(
    "make",
    [
        lambda: gym.make(ORDER_ID, opponent=RunbookPolicy()),
        lambda: gym.make(CHAOS_ID, opponent=NoopPolicy(Role.CHAOS)),
        lambda: _make_vec(ORDER_ID, opponent=RunbookPolicy()),
    ],
    ids=["order-env-given-order-policy", "chaos-env-given-chaos-policy", "vector-order-env-given-order-policy"],
)
def test_opponent_of_the_wrong_role_raises_policy_error(make: Callable[[], object]) -> None:
    with pytest.raises(PolicyError, match=r"expected an? (chaos|order) policy"):
        make()


def test_order_env_opponent_name_is_looked_up_among_chaos_policies() -> None:
    with pytest.raises(PolicyError, match="runbook"):
        gym.make(ORDER_ID, opponent="runbook")


# --- bad input ---------------------------------------------------------------------------------

CONSTRUCTORS: dict[str, Callable[..., object]] = {
    "order": lambda **kw: gym.make(ORDER_ID, **kw),
    "chaos": lambda **kw: gym.make(CHAOS_ID, **kw),
    "vector": lambda **kw: _make_vec(ORDER_ID, num_envs=2, **kw),
    "parallel": lambda **kw: deeplops.parallel_env(**kw),
}


@pytest.mark.parametrize("make", CONSTRUCTORS.values(), ids=CONSTRUCTORS.keys())
def test_unknown_topology_raises_config_error(make: Callable[..., object]) -> None:
    with pytest.raises(ConfigError, match="no-such-topology"):
        make(env="no-such-topology")


@pytest.mark.parametrize("make", CONSTRUCTORS.values(), ids=CONSTRUCTORS.keys())
def test_unknown_backend_raises_sandbox_error(make: Callable[..., object]) -> None:
    with pytest.raises(SandboxError, match="kubernetes"):
        make(backend="kubernetes")


# --- rendering ---------------------------------------------------------------------------------


@pytest.mark.parametrize("topology", ["shop", "bank"])
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_ansi_render_names_every_service(env_id: str, topology: str) -> None:
    env = gym.make(env_id, env=topology, render_mode="ansi")
    env.reset(seed=0)
    env.step(0)
    text = env.render()
    assert isinstance(text, str)
    for name in SERVICE_NAMES[topology]:
        assert name in text


def test_parallel_env_ansi_render_names_every_service() -> None:
    env = deeplops.parallel_env(env="bank", render_mode="ansi")
    env.reset(seed=0)
    text = env.render()
    assert isinstance(text, str)
    for name in SERVICE_NAMES["bank"]:
        assert name in text
