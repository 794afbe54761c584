"""Play episodes of a chaos policy against an order policy and measure them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from deeplops.actions import Policy
from deeplops.backends import make_sandbox
from deeplops.game import Game, GameConfig
from deeplops.metrics import EpisodeStats
from deeplops.sim import SimParams
from deeplops.topology import Topology, topology_to_dict
from deeplops.trace import TraceRecorder


@dataclass(frozen=True)
class Match:
    """Who plays whom, where, under which rules."""

    topology: Topology
    """The system under test."""
    order: Policy
    """The order (repair) policy."""
    chaos: Policy
    """The chaos (fault) policy."""
    backend: str = "sim"
    """Sandbox backend."""
    game: GameConfig = field(default_factory=GameConfig)
    """Episode length, budget, reward weights."""
    params: SimParams | None = None
    """Simulator parameters (sim backend only); None for the calibrated defaults."""


def play(
    match: Match,
    episodes: int,
    seed: int = 0,
    batch: int = 32,
    on_tick: Callable[[int], None] | None = None,
    traces: list[TraceRecorder] | None = None,
) -> list[EpisodeStats]:
    """Play ``episodes`` episodes, ``batch`` at a time; episode k uses seed ``seed + k``.

    ``on_tick(n)`` is called after every batched tick with the number of env-ticks played.
    If ``traces`` is a list, one TraceRecorder per episode is appended to it.
    Results depend only on ``seed``, ``episodes`` and ``batch``.
    """
    results: list[EpisodeStats] = []
    options = {"params": match.params} if match.backend == "sim" and match.params else {}
    if match.backend != "sim":
        batch = 1  # a real system runs one episode at a time
    for first in range(0, episodes, batch):
        n = min(batch, episodes - first)
        sandbox = make_sandbox(match.backend, match.topology, n, **options)
        try:
            game = Game(sandbox, match.game)
            game.reset([seed + first + k for k in range(n)])
            policy_seeds = np.random.SeedSequence([seed, first]).generate_state(2)
            match.order.reset(n, seed=int(policy_seeds[0]))
            match.chaos.reset(n, seed=int(policy_seeds[1]))
            recorders = [] if traces is None else [_recorder(match, k, first + k, seed + first + k) for k in range(n)]
            if traces is not None:
                traces.extend(recorders)
            done = False
            while not done:
                done = game.step(game.decide(match.chaos), game.decide(match.order))
                for recorder in recorders:
                    recorder(game)
                if on_tick is not None:
                    on_tick(n)
            results.extend(game.episode_stats())
        finally:
            sandbox.close()
    return results


def _recorder(match: Match, env: int, episode: int, seed: int) -> TraceRecorder:
    header = {
        "topology": match.topology.name,
        "topology_spec": topology_to_dict(match.topology),
        "services": list(match.topology.names),
        "episode": episode,
        "seed": seed,
        "backend": match.backend,
        "order": match.order.name,
        "chaos": match.chaos.name,
        "ticks": match.game.max_ticks,
    }
    return TraceRecorder(env=env, header=header)
