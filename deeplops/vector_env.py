"""Native vector versions of Order-v0 and Chaos-v0: all envs stepped in one batched call.

``gymnasium.make_vec("deeplops/Order-v0", num_envs=N, vectorization_mode="vector_entry_point")``
builds these. Every episode has the same length and no terminal state, so all envs end
together and reset together (same-step autoreset: the last observation of the finished
episode is in ``info["final_obs"]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from deeplops.actions import N_ACTIONS, OBSERVATION_SPACE, OPPONENT, Policy, Role
from deeplops.game import GameConfig
from deeplops.gym_env import DEFAULT_OPPONENT, SEED_SPACE, build_game
from deeplops.policies import as_policy
from deeplops.sim import SimParams
from deeplops.topology import Topology


class _GameVectorEnv(VectorEnv):
    """``num_envs`` copies of one side of the game, in one sandbox."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}
    role: Role

    def __init__(
        self,
        num_envs: int,
        env: str | Path | Topology = "shop",
        backend: str = "sim",
        opponent: Policy | str | None = None,
        game: GameConfig | None = None,
        params: SimParams | None = None,
        copy: bool = True,
    ) -> None:
        self.num_envs = num_envs
        self.opponent = as_policy(opponent, OPPONENT[self.role], DEFAULT_OPPONENT[self.role])
        self.game = build_game(env, backend, num_envs, game, params)
        self.copy = copy
        self.single_observation_space = OBSERVATION_SPACE[self.role]()
        self.single_action_space = spaces.Discrete(N_ACTIONS[self.role])
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._truncations = np.zeros(num_envs, np.bool_)
        self._terminations = np.zeros(num_envs, np.bool_)

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):  # type: ignore[override]
        """Start new episodes; an int seed gives env i the seed ``seed + i``."""
        first = seed[0] if isinstance(seed, list) else seed
        super().reset(seed=first)
        if isinstance(seed, list):
            seeds = seed
        elif seed is not None:
            seeds = [seed + i for i in range(self.num_envs)]
        else:
            seeds = [int(s) for s in self.np_random.integers(SEED_SPACE, size=self.num_envs)]
        self._start(seeds)
        return self._obs(), {}

    def step(self, actions: Any):  # type: ignore[override]
        """Both sides act in every env, one tick passes."""
        game = self.game
        actions = np.asarray(actions, dtype=np.int64)
        opp = game.decide(self.opponent)
        done = game.play(self.role, actions, opp)
        rewards = game.reward(self.role).copy()
        infos: dict[str, Any] = {}
        self._truncations[:] = done
        if done:
            final = self._obs(copy=True)
            infos = {
                "final_obs": _per_env(final, self.num_envs),
                "_final_obs": np.ones(self.num_envs, np.bool_),
                "final_info": game.episode_totals(),
                "_final_info": np.ones(self.num_envs, np.bool_),
            }
            self._start([int(s) for s in self.np_random.integers(SEED_SPACE, size=self.num_envs)])
        return self._obs(), rewards, self._terminations.copy(), self._truncations.copy(), infos

    def action_masks(self) -> np.ndarray:
        """``(num_envs, n_actions)`` bool: valid actions now, per env."""
        return np.array(self.game.mask(self.role))

    def close_extras(self, **kwargs: Any) -> None:
        """Release the sandbox."""
        self.game.sandbox.close()

    def _start(self, seeds: list[int]) -> None:
        self.game.reset(seeds)
        self.opponent.reset(self.num_envs, seed=int(self.np_random.integers(SEED_SPACE)))

    def _obs(self, copy: bool | None = None) -> dict[str, np.ndarray]:
        obs = self.game.observe(self.role)
        if self.copy if copy is None else copy:
            return {k: np.array(v) for k, v in obs.items()}
        return obs


def _per_env(obs: dict[str, np.ndarray], n_envs: int) -> np.ndarray:
    """``(n_envs,)`` object array of each env's observation (views of ``obs``'s rows), as
    ``info["final_obs"]`` holds them; built without numpy inspecting a list of dicts."""
    out = np.empty(n_envs, dtype=object)
    out[:] = [dict(zip(obs, rows, strict=True)) for rows in zip(*obs.values(), strict=True)]
    return out


class OrderVectorEnv(_GameVectorEnv):
    """Batched ``deeplops/Order-v0``: learn to repair, against a chaos policy (default random).

    With ``copy=False`` observations are the simulator's own buffers, overwritten by the next
    step (as ``SyncVectorEnv(copy=False)``): faster, for loops that consume them at once.
    """

    role = Role.ORDER


class ChaosVectorEnv(_GameVectorEnv):
    """Batched ``deeplops/Chaos-v0``: learn to break, against an order policy (default runbook)."""

    role = Role.CHAOS
