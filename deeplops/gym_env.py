"""Gymnasium single-agent views of the game: ``deeplops/Order-v0`` and ``deeplops/Chaos-v0``.

Each learns one side; the other side is a policy object passed in (``opponent``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from deeplops.actions import N_ACTIONS, OBSERVATION_SPACE, OPPONENT, Policy, Role
from deeplops.backends import make_sandbox
from deeplops.display import snapshot
from deeplops.game import Game, GameConfig
from deeplops.policies import as_policy
from deeplops.sim import SimParams
from deeplops.topology import Topology, load_topology

SEED_SPACE = 2**31 - 1
DEFAULT_OPPONENT: dict[Role, str] = {Role.ORDER: "random", Role.CHAOS: "runbook"}
"""The policy each side plays against unless told: random chaos for the order agent, the runbook
for the chaos agent."""


def resolve_topology(env: str | Path | Topology) -> Topology:
    """A Topology from a shipped name, a file path or a Topology."""
    return env if isinstance(env, Topology) else load_topology(env)


def build_game(
    env: str | Path | Topology, backend: str, n_envs: int, game: GameConfig | None, params: SimParams | None
) -> Game:
    """The Game behind an environment, on a fresh sandbox."""
    options: dict[str, Any] = {"params": params} if params is not None else {}
    return Game(make_sandbox(backend, resolve_topology(env), n_envs, **options), game)


class _GameEnv(gym.Env[dict[str, np.ndarray], np.int64]):
    """One side of the game as a Gymnasium env; the other side is ``opponent``."""

    metadata = {"render_modes": ["ansi"], "render_fps": 1}
    role: Role

    def __init__(
        self,
        env: str | Path | Topology = "shop",
        backend: str = "sim",
        opponent: Policy | str | None = None,
        game: GameConfig | None = None,
        params: SimParams | None = None,
        render_mode: str | None = None,
    ) -> None:
        # Gymnasium's convention: a mode the env does not render is accepted (``gym.make`` warns),
        # and ``render()`` then returns None. Loaders such as SB3's ``make_vec_env`` ask for
        # ``rgb_array`` first and fall back only on a TypeError.
        self.render_mode = render_mode
        self.opponent = as_policy(opponent, OPPONENT[self.role], DEFAULT_OPPONENT[self.role])
        self.game = build_game(env, backend, 1, game, params)
        self.topology = self.game.topology
        self.observation_space = OBSERVATION_SPACE[self.role]()  # type: ignore[assignment]
        self.action_space = spaces.Discrete(N_ACTIONS[self.role])
        self._action = np.zeros(1, np.int64)
        self._reward = self.game.reward(self.role)  # updated in place each tick
        # The one env's row of each observation array, made once: the game updates them in place.
        self._rows = [(key, value[0]) for key, value in self.game.observe(self.role).items()]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):  # type: ignore[override]
        """Start a new episode; the same seed gives the same episode."""
        super().reset(seed=seed)
        env_seed, opponent_seed = (int(x) for x in self.np_random.integers(SEED_SPACE, size=2))
        self.game.reset([env_seed])
        self.opponent.reset(1, seed=opponent_seed)
        return self._get_obs(), self._get_info()

    def step(self, action: Any):  # type: ignore[override]
        """Both sides act, one tick passes; returns the learning side's view."""
        game = self.game
        opp = game.decide(self.opponent)
        self._action[0] = action
        truncated = game.play(self.role, self._action, opp)
        reward = self._reward[0]
        info = self._get_info()
        if truncated:
            info["episode_stats"] = game.episode_stats()[0]
        return self._get_obs(), float(reward), False, truncated, info

    def action_masks(self) -> np.ndarray:
        """Valid actions now, as sb3-contrib's MaskablePPO reads them."""
        return self.game.mask(self.role)[0].copy()

    def render(self) -> str | None:  # type: ignore[override]
        """A text table of every service's symptoms (``render_mode="ansi"``)."""
        if self.render_mode != "ansi":
            gym.logger.warn(f"render() draws only with render_mode='ansi'; this env has {self.render_mode!r}")
            return None
        game = self.game
        return snapshot(self.topology, game.sandbox.observe()[0], game.tick, bool(game.sandbox.slo[0]))

    def close(self) -> None:
        """Release the sandbox."""
        self.game.sandbox.close()

    def _get_obs(self) -> dict[str, np.ndarray]:
        return {key: row.copy() for key, row in self._rows}

    def _get_info(self) -> dict[str, Any]:
        return {"slo": bool(self.game.sandbox.slo[0]), "tick": self.game.tick}


class OrderEnv(_GameEnv):
    """## Description

    The order agent keeps a microservice system healthy while a chaos policy injects faults.
    It sees symptoms only (never which fault is active), and picks one repair per tick.

    ## Action Space

    ``Discrete(65)``: ``0`` is noop; ``1 + slot * 4 + k`` applies repair ``k`` (restart,
    clean_disk, rate_limit, recreate) to service ``slot``. ``action_masks()`` marks padded
    slots and clean_disk on services without a volume invalid; invalid actions play as noop.

    ## Observation Space

    ``Dict(services=Box(0, 1, (16, 12)), adjacency=Box(0, 1, (16, 16)))``: per service slot the
    symptoms documented in ``deeplops.observation.Feature``, and the dependency graph.

    ## Rewards

    Per tick: ``0.8 * SLO held + 0.2 * fraction of services healthy - repair cost``
    (restart 0.02, clean_disk and rate_limit 0.01, recreate 0.2: it loses data).

    ## Episode End

    Truncated after ``GameConfig.max_ticks`` (200) ticks; there is no terminal state.

    ## Arguments

    ``env`` (topology name, path or Topology, default ``shop``), ``backend`` (``sim``),
    ``opponent`` (chaos policy object or name, default ``random``), ``game`` (GameConfig),
    ``params`` (SimParams), ``render_mode`` (``ansi`` or None).
    """

    role = Role.ORDER


class ChaosEnv(_GameEnv):
    """## Description

    The chaos agent injects faults into a microservice system defended by an order policy,
    within a budget, looking for the failures the defender handles worst.

    ## Action Space

    ``Discrete(81)``: ``0`` is noop; ``1 + slot * 5 + k`` injects fault ``k`` (kill, pause,
    cpu_hog, disk_full, net_saturation) on service ``slot``. ``action_masks()`` marks padded or
    already-faulted slots, disk_full without a volume, and faults beyond the budget invalid.

    ## Observation Space

    The order agent's view plus ``faulted`` (``(16,)``, its faults not yet recovered) and
    ``budget`` (``(2,)``, fractions of cost budget and concurrent-fault room left).

    ## Rewards

    Per tick: minus the order agent's reward, minus 0.02 per fault cost point spent.

    ## Episode End

    Truncated after ``GameConfig.max_ticks`` (200) ticks.

    ## Arguments

    As ``OrderEnv``; ``opponent`` is an order policy (default ``runbook``).
    """

    role = Role.CHAOS
