"""Many games as one stable-baselines3 VecEnv, for training one side against a pool of opponents.

The envs are split into games of ``envs_per_game`` copies each; every game has its own topology
and opponent, drawn afresh at each episode from a sampler, so one agent trains on many systems
against many opponents at once. All episodes have the same length, so they end and restart together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

from deeplops.actions import N_ACTIONS, OBSERVATION_SPACE, Policy, Role
from deeplops.backends import make_sandbox
from deeplops.errors import SandboxError
from deeplops.game import Game, GameConfig
from deeplops.sandbox import Sandbox
from deeplops.sim import SimParams, SimSandbox
from deeplops.topology import Topology

TopologySampler = Callable[[np.random.Generator], Topology]
OpponentSampler = Callable[[np.random.Generator], Policy]


class GameVecEnv(VecEnv):
    """``n_games × envs_per_game`` envs of one side of the game, for SB3 (MaskablePPO reads
    ``env_method("action_masks")``)."""

    render_mode: str | None = None

    def __init__(
        self,
        role: Role,
        topologies: TopologySampler,
        opponents: OpponentSampler,
        n_games: int = 8,
        envs_per_game: int = 8,
        game: GameConfig | None = None,
        params: SimParams | None = None,
        seed: int = 0,
        backend: str = "sim",
    ) -> None:
        from gymnasium import spaces

        self.role = role
        self.topologies, self.opponents = topologies, opponents
        self.n_games, self.envs_per_game = n_games, envs_per_game
        self.game_config, self.params = game or GameConfig(), params or SimParams()
        self.rng = np.random.default_rng(seed)
        self.backend = backend
        self._real: list[Sandbox] = []
        """Docker backend: one sandbox per game, made once and reset every episode (a stack is slow to make)."""
        super().__init__(n_games * envs_per_game, OBSERVATION_SPACE[role](), spaces.Discrete(N_ACTIONS[role]))
        self.games: list[Game] = []
        self.rivals: list[Policy] = []
        self._actions = np.zeros(self.num_envs, np.int64)
        self._returns = np.zeros(self.num_envs)
        self.finished: list[dict[str, float]] = []
        """Per finished episode: availability and MTTR figures, for logging (drained by the caller)."""

    def reset(self) -> dict[str, np.ndarray]:
        """New topologies, opponents and episodes everywhere."""
        self.games, self.rivals = [], []
        for i in range(self.n_games):
            game = Game(self._sandbox(i), self.game_config)
            game.reset([int(s) for s in self.rng.integers(2**31 - 1, size=self.envs_per_game)])
            rival = self.opponents(self.rng)
            rival.reset(self.envs_per_game, seed=int(self.rng.integers(2**31 - 1)))
            self.games.append(game)
            self.rivals.append(rival)
        self._returns[:] = 0.0
        return self._obs()

    def step_async(self, actions: np.ndarray) -> None:
        """Remember the learner's actions."""
        self._actions[:] = actions

    def step_wait(self) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """Both sides act in every game; one tick passes."""
        k = self.envs_per_game
        rewards = np.empty(self.num_envs, np.float32)
        done = False
        for i, (game, rival) in enumerate(zip(self.games, self.rivals, strict=True)):
            mine = self._actions[i * k : (i + 1) * k]
            theirs = game.decide(rival)
            done = game.play(self.role, mine, theirs)
            rewards[i * k : (i + 1) * k] = game.reward(self.role)
        self._returns += rewards
        obs = self._obs()
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if done:
            for i, game in enumerate(self.games):
                totals = game.episode_totals()
                for e in range(k):
                    j = i * k + e
                    infos[j] = {
                        "terminal_observation": {key: value[j] for key, value in obs.items()},
                        "TimeLimit.truncated": True,
                        "episode": {"r": float(self._returns[j]), "l": game.tick},
                    }
                    recovered = int(totals["faults_recovered"][e])
                    self.finished.append({
                        "availability": float(totals["availability"][e]),
                        "mttr": float(totals["mttr_sum"][e]) / recovered if recovered else float("nan"),
                    })  # fmt: skip
            obs = self.reset()
        return obs, rewards, np.full(self.num_envs, done), infos

    def action_masks(self) -> np.ndarray:
        """``(num_envs, n_actions)`` valid actions of the learner."""
        return np.concatenate([g.mask(self.role) for g in self.games])

    def env_method(self, method_name: str, *args: Any, indices: Any = None, **kwargs: Any) -> list[Any]:
        """Only ``action_masks`` is served (what MaskablePPO asks for), one row per env."""
        if method_name != "action_masks":
            raise AttributeError(f"GameVecEnv has no env method {method_name!r}")
        return list(self.action_masks()[self._indices(indices)])

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        """Attributes are shared by all envs."""
        return [getattr(self, attr_name)] * len(self._indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        """Set a shared attribute."""
        setattr(self, attr_name, value)

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        """No env is wrapped."""
        return [False] * len(self._indices(indices))

    def close(self) -> None:
        """Release real sandboxes (their containers go)."""
        for sandbox in self._real:
            sandbox.close()
        self._real.clear()

    def _sandbox(self, game: int) -> Sandbox:
        topology = self.topologies(self.rng)
        if self.backend == "sim":
            return SimSandbox(topology, self.envs_per_game, self.params)
        if game < len(self._real):
            if self._real[game].topology != topology:
                raise SandboxError("on real containers every episode of a game must use the same topology")
            return self._real[game]
        self._real.append(make_sandbox(self.backend, topology, self.envs_per_game))
        return self._real[game]

    def _indices(self, indices: Any) -> Sequence[int]:
        if indices is None:
            return range(self.num_envs)
        return [indices] if isinstance(indices, int) else list(indices)

    def _obs(self) -> dict[str, np.ndarray]:
        views = [g.observe(self.role) for g in self.games]
        return {key: np.concatenate([v[key] for v in views]) for key in views[0]}
