"""Play episodes of a chaos policy against an order policy and measure them.

``play`` plays a ``Match`` here. A ``Runner`` plays many ``Games`` (a match to be made where it is
played) wherever it plays them: ``play_here`` in this process, ``deeplops.raypool`` on a Ray
cluster's actors, batch by batch, with the same results. A ``Caller`` does the same for any work
without arguments (a drill on real containers): ``call_here``, or on the actors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deeplops.actions import Policy
from deeplops.backends import make_sandbox
from deeplops.game import Game, GameConfig
from deeplops.metrics import EpisodeStats
from deeplops.scenario import ScriptedChaos
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
    if match.backend != "sim":
        batch = 1  # a real system runs one episode at a time
    results: list[EpisodeStats] = []
    for first, n in batches(episodes, batch):
        results.extend(play_batch(match, seed, first, n, on_tick, traces))
    return results


def batches(episodes: int, batch: int) -> list[tuple[int, int]]:
    """(first episode, episodes) of each batch of ``episodes`` played ``batch`` at a time, in order."""
    return [(first, min(batch, episodes - first)) for first in range(0, episodes, batch)]


def play_batch(
    match: Match,
    seed: int,
    first: int,
    n: int,
    on_tick: Callable[[int], None] | None = None,
    traces: list[TraceRecorder] | None = None,
) -> list[EpisodeStats]:
    """The batch of ``play(match, episodes, seed, batch)`` that starts at episode ``first`` and holds
    ``n`` episodes: its results depend on nothing else, so any process may play it."""
    options = {"params": match.params} if match.backend == "sim" and match.params else {}
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
        script = match.chaos if isinstance(match.chaos, ScriptedChaos) else None  # may inject several a tick
        done = False
        while not done:
            chaos = game.decide(match.chaos)
            extra = script.extra_actions() if script is not None else None
            done = game.step(chaos, game.decide(match.order), extra)
            for recorder in recorders:
                recorder(game)
            if on_tick is not None:
                on_tick(n)
        return game.episode_stats()
    finally:
        sandbox.close()


@dataclass(frozen=True)
class Games:
    """A ``play`` given to a ``Runner``: its match is made where it is played, from makers of its
    policies (picklable: baselines by name, saved agents as their file's bytes), afresh for each
    batch. Simulator only, where batches are played ``batch`` at a time as given."""

    topology: Topology
    """The system under test."""
    order: Callable[[], Policy]
    """Makes the order policy."""
    chaos: Callable[[], Policy]
    """Makes the chaos policy."""
    episodes: int
    """Episodes played."""
    seed: int = 0
    """Seed of the first episode, as for ``play``."""
    game: GameConfig = field(default_factory=GameConfig)
    """Episode length, budget, reward weights."""
    params: SimParams | None = None
    """Simulator parameters; None for the calibrated defaults."""
    batch: int = 32
    """Episodes played at once."""

    def match(self) -> Match:
        """The match, with freshly made policies."""
        return Match(self.topology, self.order(), self.chaos(), game=self.game, params=self.params)

    def batches(self) -> list[tuple[int, int]]:
        """(first episode, episodes) of each of its batches, in order."""
        return batches(self.episodes, self.batch)


Runner = Callable[[Sequence[Games]], list[list[EpisodeStats]]]
"""Plays every one of the ``Games`` given; returns each one's ``play`` results, in order."""


def play_here(games: Sequence[Games]) -> list[list[EpisodeStats]]:
    """The ``Runner`` of this process: each of ``games`` played by ``play``, one after the other."""
    return [play(g.match(), g.episodes, seed=g.seed, batch=g.batch) for g in games]


Caller = Callable[[Sequence[Callable[[], Any]]], list[Any]]
"""Calls every task given (picklable, without arguments), perhaps side by side elsewhere; returns
their results, in order."""


def call_here(tasks: Sequence[Callable[[], Any]]) -> list[Any]:
    """The ``Caller`` of this process: each task called, one after the other."""
    return [task() for task in tasks]


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
