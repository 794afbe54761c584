"""Self-play on a Ray cluster: actors each step their share of the training games with a copy of
the network; the learner (this process) sends the weights out each update and trains on every
actor's rollout. The same actors play the report's games, batch by batch. Ray is an optional extra
(``pip install "deeplops[ray]"``), imported here only.

    RayCluster       a connection to a running cluster (``connect``) and its actors, for a whole run;
     │               ``play(games)`` is an ``evaluate.Runner`` (the report's games, played on the
     │               actors), ``call(tasks)`` an ``evaluate.Caller`` (a drill on real containers)
     └── RayRollouts a training phase's ``Rollouts``: ``collect(policy)`` is one rollout of every actor
          └── RolloutWorker   one actor: its share of the games and a ``LocalRollouts`` of them; or
                              one task at a time (``run``: a batch of a report's games, a drill)

On real containers (``--backend docker``) an actor's games run on its own node's Docker engine, the
one the node's ``DOCKER_HOST`` names (its default socket without one): the Docker backend acts on
its engine's machine (network, cgroups, volumes), so every node needs a local engine, root and the
sandbox images.

The actors live as long as the connection: each phase hands them its games. An actor that dies (its
process, or its node) is replaced by a fresh one and its share of the rollout (or its task) played
again, up to ``MAX_REPLACEMENTS`` times a rollout (or a call of ``play`` or ``call``); past that
the cluster is unusable (``ClusterError``). Closing the connection lets every actor release its
games (real containers go) before it is ended.
"""

from __future__ import annotations

import copy
import logging
import socket
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv

from deeplops.errors import ConfigError, DeeplopsError
from deeplops.evaluate import Games, play_batch
from deeplops.metrics import EpisodeStats
from deeplops.ppo import ActorCritic, Batch, LocalRollouts, PPOSettings

INSTALL = 'pip install "deeplops[ray]"'
"""How to install the optional extra."""
REACH_TIMEOUT_S = 5.0
"""How long the head's port may take to accept a connection before the cluster counts as unreachable."""
WORKER_START_S = 300.0
"""How long actors may take to be placed and started (a cluster may first have to find room)."""
MAX_REPLACEMENTS = 3
"""Actors replaced in one rollout (or one call of ``RayCluster.play`` or ``call``) before the cluster counts as
unusable."""
MAX_WORKERS = 4_096
"""Most rollout actors (``--workers``); a phase uses at most one per game."""
CLOSE_S = 120.0
"""How long actors may take to release their games (a sandbox's containers) when the connection closes."""

MakeGames = Callable[[int, int], VecEnv]
"""``make(n_games, seed)``: an actor's share of a phase's training games (picklable)."""


class ClusterError(DeeplopsError):
    """The Ray cluster could not run the rollouts: actors kept dying, or found no room to start."""


@dataclass(frozen=True)
class WorkerRollout:
    """What one actor sends back of one rollout."""

    batch: Batch
    """Its envs' transitions, flattened over ticks and envs."""
    finished: list[dict[str, float]]
    """Figures of its episodes finished meanwhile."""
    node: str
    """Id of the Ray node it ran on."""


@dataclass(frozen=True)
class Done:
    """What one actor sends back of one task."""

    result: Any
    """What the task returned."""
    node: str
    """Id of the Ray node it ran on."""


@dataclass(frozen=True)
class Share:
    """One actor's share of a training phase: what it needs to make and play its games."""

    games: MakeGames
    """Makes the games."""
    n_games: int
    """How many games it plays."""
    env_seed: int
    """Seed of its games."""
    seed: int
    """Seed of its sampling of actions."""
    settings: PPOSettings
    """PPO's settings (ticks per rollout, discount, GAE)."""
    policy: ActorCritic
    """A CPU copy of the network; its weights come with each rollout."""


class RolloutWorker:
    """One actor: plays its share of a phase's games with its copy of the network (run as a Ray actor)."""

    def __init__(self) -> None:
        import ray

        self.node = ray.get_runtime_context().get_node_id()
        self.ip = ray.util.get_node_ip_address()
        self.phase = -1
        self.rollouts: LocalRollouts | None = None
        self.policy: ActorCritic = None

    def ready(self) -> str:
        """The node it runs on, once it has started."""
        return self.node

    def collect(self, phase: int, share: list[Any], weights: dict[str, torch.Tensor]) -> WorkerRollout:
        """One rollout of its games of ``phase``, played by the network with ``weights``; ``share``
        holds a reference to its ``Share`` of the phase, read when the phase is new to it (a fresh
        actor replacing a dead one goes on where that one was given work)."""
        import ray

        with self._named():
            if phase != self.phase:
                self.close()
                given: Share = ray.get(share[0])
                self.rollouts = LocalRollouts(given.games(given.n_games, given.env_seed), given.settings, given.seed)
                self.policy, self.phase = given.policy, phase
                self.policy.train(False)
            assert self.rollouts is not None
            self.policy.load_state_dict(weights)
            batch = self.rollouts.collect(self.policy)
        finished = self.rollouts.finished
        drained = list(finished or [])
        if finished:
            finished.clear()
        return WorkerRollout(batch, drained, self.node)

    def run(self, task: Callable[..., Any], *args: Any) -> Done:
        """``task(*args)``, called here (its rollouts' games, if any, are left as they are)."""
        with self._named():
            return Done(task(*args), self.node)

    @contextmanager
    def _named(self) -> Iterator[None]:
        """Our errors (a bad setting, a node without a Docker engine) raised with the node they
        happened on: a cluster's user must know which of its machines to mend."""
        try:
            yield
        except DeeplopsError as exc:
            named = copy.copy(exc)
            named.args = (f"on the Ray node at {self.ip}: {exc}",)
            raise named from None

    def close(self) -> None:
        """Release its games."""
        if self.rollouts is not None:
            self.rollouts.close()
            self.rollouts, self.phase = None, -1


def connect(address: str, workers: int | None = None, per_node: bool = False) -> RayCluster:
    """A connection to the running Ray cluster at ``address`` (``auto``: the one started on this
    machine; ``HOST:PORT`` or ``ray://HOST:PORT``), to collect rollouts on ``workers`` actors (by
    default one per CPU of the cluster, or with ``per_node`` one per node: a game on real
    containers per node's Docker engine).

    Raises:
        ConfigError: Ray is not installed, or no cluster answers at ``address``.
    """
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--ray needs Ray, an optional extra: {INSTALL}") from None
    _check_reachable(address)
    try:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError or ValueError, as it may
        raise ConfigError(f"--ray {address}: no Ray cluster could be reached there ({_first_line(exc)}): "
                          "expected auto or the address of a running cluster's head, HOST:PORT") from None  # fmt: skip
    if workers is None and per_node:
        workers = max(1, sum(1 for node in ray.nodes() if node["Alive"]))
    elif workers is None:
        workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
    return RayCluster(address, workers)


class RayCluster:
    """A connection to a Ray cluster and the rollout actors on it (see ``connect``); closing it ends them."""

    def __init__(self, address: str, workers: int) -> None:
        self.address, self.workers = address, workers
        self.nodes: set[str] = set()
        """Ids of the nodes rollouts were played on."""
        self.evaluation_nodes: set[str] = set()
        """Ids of the nodes the report's games were played on."""
        self.replaced = 0
        """Actors replaced after they died."""
        self._actors: list[Any] = []
        self._worker: Any = None
        """``RolloutWorker`` as a Ray actor class, once made."""
        self._phases = 0

    def rollouts(self, games: MakeGames, n_games: int, settings: PPOSettings, seed: int, env_seed: int) -> RayRollouts:
        """A phase's rollouts of ``n_games`` games made by ``games``, shared among the actors; ``seed``
        seeds the sampling of actions and ``env_seed`` the games, as for ``LocalRollouts``."""
        return RayRollouts(self, games, n_games, settings, seed, env_seed)

    def play(self, games: Sequence[Games]) -> list[list[EpisodeStats]]:
        """What ``evaluate.play_here(games)`` returns, the games played on the actors: each actor plays
        whole batches, one at a time, with the seeds ``play`` gives them, and the results are put
        back in order. A batch whose actor dies is played again by its replacement.

        Raises:
            ClusterError: more than ``MAX_REPLACEMENTS`` actors died in this call.
        """
        import ray

        given = [ray.put(g) for g in games]  # each once, however many batches it has
        calls = [(_play_batch, (given[i], first, n)) for i, g in enumerate(games) for first, n in g.batches()]
        results = iter(self._spread(calls, "one round of the report's games"))
        return [[episode for _ in g.batches() for episode in next(results)] for g in games]

    def call(self, tasks: Sequence[Callable[[], Any]]) -> list[Any]:
        """What ``evaluate.call_here(tasks)`` returns, each task called on an actor, side by side. A
        task whose actor dies is called again on its replacement.

        Raises:
            ClusterError: more than ``MAX_REPLACEMENTS`` actors died in this call.
        """
        return self._spread([(task, ()) for task in tasks], "one round of tasks")

    def _spread(self, calls: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]], work: str) -> list[Any]:
        """Each ``(task, args)`` of ``calls`` called on an actor, one at a time each; their results, in
        order. The nodes they ran on are added to ``evaluation_nodes``."""
        import ray

        done: list[Any] = [None] * len(calls)
        waiting = deque(range(len(calls)))
        pending: dict[Any, tuple[int, int]] = {}
        """Each call in flight: (the actor making it, the call)."""

        def hand(actor: int) -> None:
            if waiting:
                k = waiting.popleft()
                task, args = calls[k]
                pending[self.actor(actor).run.remote(task, *args)] = (actor, k)

        for actor in range(min(self.workers, len(calls))):
            hand(actor)
        replaced = 0
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            actor, k = pending.pop(ref)
            try:
                part: Done = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                replaced = self.replace_dead(actor, replaced, exc, work)
                waiting.appendleft(k)
            except ray.exceptions.RayTaskError as exc:
                raise _failure(self.address, "an evaluation worker", exc) from None
            else:
                done[k] = part.result
                self.evaluation_nodes.add(part.node)
            hand(actor)
        return done

    def replace_dead(self, i: int, replaced: int, exc: BaseException, work: str) -> int:
        """Replace the dead ``i``-th actor, ``replaced`` having been replaced already during ``work``
        (a rollout, a round of games); the count with it.

        Raises:
            ClusterError: ``MAX_REPLACEMENTS`` had been replaced already.
        """
        if replaced == MAX_REPLACEMENTS:
            raise ClusterError(f"--ray {self.address}: {replaced + 1} workers died in {work}, the last with: "
                               f"{_first_line(exc)}") from None  # fmt: skip
        self.actor(i, fresh=True)
        return replaced + 1

    def new_phase(self) -> int:
        """A number for a new training phase, which no phase of this connection had."""
        self._phases += 1
        return self._phases

    def actor(self, i: int, fresh: bool = False) -> Any:
        """The ``i``-th actor, started now if there is none yet (or ``fresh``: replacing a dead one)."""
        import ray

        if fresh:
            ray.kill(self._actors[i])
            self._actors[i] = self._start()
            self.replaced += 1
        while len(self._actors) <= i:
            self._actors.append(self._start())
        return self._actors[i]

    def close(self) -> None:
        """Let the actors release their games, end them and disconnect."""
        import ray

        if self._actors:  # queued behind each actor's work in flight; a dead actor's fails at once
            ray.wait([actor.close.remote() for actor in self._actors], num_returns=len(self._actors),
                     timeout=CLOSE_S)  # fmt: skip
        for actor in self._actors:
            ray.kill(actor)
        self._actors.clear()
        ray.shutdown()

    def __enter__(self) -> RayCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> Any:
        import ray

        if self._worker is None:
            # SPREAD: one actor per node before two on any, so a cluster's machines share the work.
            self._worker = ray.remote(num_cpus=1, scheduling_strategy="SPREAD")(RolloutWorker)
        actor = self._worker.remote()
        ready, _ = ray.wait([actor.ready.remote()], timeout=WORKER_START_S)
        if not ready:
            raise ClusterError(f"--ray {self.address}: a rollout worker found no room on the cluster in "
                               f"{WORKER_START_S:.0f} s: expected a free CPU for each of {self.workers}")  # fmt: skip
        try:
            ray.get(ready[0])
        except ray.exceptions.RayError as exc:
            raise ClusterError(f"--ray {self.address}: a rollout worker did not start ({_first_line(exc)}): "
                               "expected deeplops installed on every node of the cluster") from None  # fmt: skip
        return actor


class RayRollouts:
    """One training phase's ``Rollouts`` on a cluster's actors: each steps its share of the games;
    ``collect`` sends them the weights and joins their rollouts into one batch."""

    def __init__(self, cluster: RayCluster, games: MakeGames, n_games: int, settings: PPOSettings, seed: int,
                 env_seed: int) -> None:  # fmt: skip
        self.cluster, self.games, self.settings = cluster, games, settings
        actors = min(cluster.workers, n_games)
        self.shares = [n_games // actors + (i < n_games % actors) for i in range(actors)]
        """Games played by each actor."""
        self.seeds = [(seed, env_seed)] + [_seeds(seed, env_seed, i) for i in range(1, actors)]
        """Each actor's (action sampling, games) seeds: the first actor's are the phase's own."""
        probe = games(1, env_seed)  # no game is made before a reset: only its spaces are read
        self.num_envs = n_games * probe.num_envs
        self.observation_space, self.action_space = probe.observation_space, probe.action_space
        self.phase = cluster.new_phase()
        self._finished: list[dict[str, float]] = []
        self._given: list[Any] = []
        """A reference to each actor's ``Share`` in the cluster's object store, once made."""

    @property
    def finished(self) -> list[dict[str, float]]:
        """Figures of the episodes finished on every actor since last drained."""
        return self._finished

    def collect(self, policy: ActorCritic) -> Batch:
        """One rollout of every actor, played by ``policy`` as its weights are now."""
        import ray

        if not self._given:
            copied = copy.deepcopy(policy).cpu()
            self._given = [ray.put(Share(self.games, n, games, sampling, self.settings, copied))
                           for n, (sampling, games) in zip(self.shares, self.seeds, strict=True)]  # fmt: skip
        weights = ray.put({key: value.detach().cpu() for key, value in policy.state_dict().items()})
        pending = {self._collect(i, weights): i for i in range(len(self.shares))}
        parts: list[WorkerRollout | None] = [None] * len(self.shares)
        replaced = 0
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(ref)
            try:
                parts[i] = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                replaced = self.cluster.replace_dead(i, replaced, exc, "one rollout")
                pending[self._collect(i, weights)] = i
            except ray.exceptions.RayTaskError as exc:
                raise _failure(self.cluster.address, "a rollout worker", exc) from None
        done = [part for part in parts if part is not None]
        for part in done:
            self._finished.extend(part.finished)
            self.cluster.nodes.add(part.node)
        return _joined([part.batch for part in done])

    def close(self) -> None:
        """Have the actors release their games (they stay, for the next phase)."""
        if self._given:
            for i in range(len(self.shares)):
                self.cluster.actor(i).close.remote()  # not waited for: a dead actor holds no games
            self._given = []

    def _collect(self, i: int, weights: Any) -> Any:
        # The share goes inside a list, so that Ray passes the reference and the actor reads it only
        # when the phase is new to it.
        return self.cluster.actor(i).collect.remote(self.phase, [self._given[i]], weights)


def _seeds(seed: int, env_seed: int, i: int) -> tuple[int, int]:
    """The (action sampling, games) seeds of a phase's ``i``-th actor, ``i`` > 0."""
    sampling, games = np.random.SeedSequence([seed, env_seed, i]).generate_state(2)
    return int(sampling), int(games)


def _joined(batches: list[Batch]) -> Batch:
    """One batch of several actors' batches, one after the other."""
    if len(batches) == 1:
        return batches[0]
    joined: Batch = {}
    for key, first in batches[0].items():
        if isinstance(first, dict):
            joined[key] = {name: torch.cat([b[key][name] for b in batches]) for name in first}
        else:
            joined[key] = torch.cat([b[key] for b in batches])
    return joined


def _check_reachable(address: str) -> None:
    """Fail fast where nothing listens at ``HOST:PORT`` (Ray itself retries for a minute or more)."""
    if address == "auto":
        return
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"--ray {address}: expected auto or the address of a running cluster's head, HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=REACH_TIMEOUT_S).close()
    except OSError as exc:
        raise ConfigError(f"--ray {address}: no Ray cluster could be reached there ({exc.strerror or exc}): "
                          "expected auto or the address of a running cluster's head, HOST:PORT") from None  # fmt: skip


def _play_batch(games: Games, first: int, n: int) -> list[EpisodeStats]:
    """The batch of ``games`` that starts at episode ``first`` and holds ``n`` episodes, played with
    freshly made policies."""
    return play_batch(games.match(), games.seed, first, n)


def _failure(address: str, who: str, exc: Any) -> DeeplopsError:
    """The error to raise for a task that failed on an actor (``exc``, Ray's ``RayTaskError``): its own
    when it is one of ours (a bad setting, a node without a Docker engine: no cluster's fault, and
    named after its node by the actor), else a ``ClusterError``."""
    cause = exc.cause
    if isinstance(cause, DeeplopsError):
        return cause
    return ClusterError(f"--ray {address}: {who} failed: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
