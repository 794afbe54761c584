"""The game as a PettingZoo ``ParallelEnv``: agents ``chaos`` and ``order`` act simultaneously."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from deeplops.actions import N_ACTIONS, OBSERVATION_SPACE, Role
from deeplops.display import snapshot
from deeplops.game import GameConfig
from deeplops.gym_env import SEED_SPACE, build_game
from deeplops.sim import SimParams
from deeplops.topology import Topology

CHAOS, ORDER = Role.CHAOS.value, Role.ORDER.value
_ROLES = {CHAOS: Role.CHAOS, ORDER: Role.ORDER}
"""Each agent's role, chaos first as it moves first."""


class DeeplopsParallelEnv(ParallelEnv[str, dict[str, np.ndarray], np.int64]):
    """Chaos injects faults, order repairs them, both in the same tick.

    Observations, actions and rewards are as in ``deeplops/Chaos-v0`` and ``deeplops/Order-v0``.
    Each agent's ``infos[agent]["action_mask"]`` marks its valid actions with 1, as an int8 array
    (PettingZoo's convention: ``env.action_space(agent).sample(mask)`` takes it); an invalid
    action is played as noop. Every episode is truncated after ``GameConfig.max_ticks`` ticks, when
    ``agents`` becomes empty.
    """

    metadata = {"name": "deeplops_v0", "render_modes": ["ansi"], "is_parallelizable": True}

    def __init__(
        self,
        env: str | Path | Topology = "shop",
        backend: str = "sim",
        game: GameConfig | None = None,
        params: SimParams | None = None,
        render_mode: str | None = None,
    ) -> None:
        self.possible_agents = list(_ROLES)
        self.agents: list[str] = []
        self.render_mode = render_mode
        self.game = build_game(env, backend, 1, game, params)
        self.topology = self.game.topology
        self._rng = np.random.default_rng()
        self._order_keys = tuple(self.game.observe(Role.ORDER))
        """What order sees: a part of what chaos sees."""

    @functools.cache  # noqa: B019 - one space object per agent, as PettingZoo expects
    def observation_space(self, agent: str) -> spaces.Space:
        """Chaos or order observation space."""
        return OBSERVATION_SPACE[_ROLES[agent]]()

    @functools.cache  # noqa: B019
    def action_space(self, agent: str) -> spaces.Space:
        """``Discrete(81)`` for chaos, ``Discrete(65)`` for order."""
        return spaces.Discrete(N_ACTIONS[_ROLES[agent]])

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None):  # type: ignore[override]
        """Start a new episode; the same seed gives the same episode."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.game.reset([int(self._rng.integers(SEED_SPACE))])
        self.agents = self.possible_agents[:]
        return self._observations(), self._infos()

    def step(self, actions: dict[str, Any]):  # type: ignore[override]
        """Both agents act; one tick passes."""
        game = self.game
        chaos = np.array([actions.get(CHAOS, 0)], np.int64)
        order = np.array([actions.get(ORDER, 0)], np.int64)
        done = game.step(chaos, order)
        observations, infos = self._observations(), self._infos()
        rewards = {agent: float(game.reward(role)[0]) for agent, role in _ROLES.items()}
        terminations = {a: False for a in self.agents}
        truncations = {a: done for a in self.agents}
        if done:
            self.agents = []
        return observations, rewards, terminations, truncations, infos

    def render(self) -> str | None:
        """A text table of every service's symptoms (``render_mode="ansi"``)."""
        if self.render_mode != "ansi":
            return None
        return snapshot(self.topology, self.game.sandbox.observe()[0], self.game.tick, bool(self.game.sandbox.slo[0]))

    def state(self) -> np.ndarray:
        """The global state: every slot's symptoms, flattened."""
        return self.game.sandbox.observe()[0].ravel().copy()

    def close(self) -> None:
        """Release the sandbox."""
        self.game.sandbox.close()

    def _observations(self) -> dict[str, dict[str, np.ndarray]]:
        chaos = {k: np.array(v[0]) for k, v in self.game.observe(Role.CHAOS).items()}
        return {CHAOS: chaos, ORDER: {k: chaos[k] for k in self._order_keys}}  # the same arrays

    def _infos(self) -> dict[str, dict[str, Any]]:
        return {agent: {"action_mask": self.game.mask(role)[0].astype(np.int8)} for agent, role in _ROLES.items()}


def parallel_env(**kwargs: Any) -> DeeplopsParallelEnv:
    """The PettingZoo ParallelEnv of the game (keywords as :class:`DeeplopsParallelEnv`)."""
    return DeeplopsParallelEnv(**kwargs)
