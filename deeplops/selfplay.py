"""Alternating self-play: the order agent trains against a pool of chaos policies, then the chaos
agent against a pool of order policies, generation after generation (in the spirit of Robust
Adversarial RL). Every completed generation is checkpointed; a run resumes from the last one.
Rollouts (and the report's games) are played in this process, or on a Ray cluster's actors
(``deeplops.raypool``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from deeplops import agentfile, bounds, outputs
from deeplops.actions import Policy, Role
from deeplops.agent_net import SlotPolicy
from deeplops.agents import AgentConfig, load_agent_config
from deeplops.backends import BACKENDS
from deeplops.baselines import RunbookPolicy
from deeplops.catalog import MAX_DOCUMENT_BYTES, data_dir, parse_json, read_text
from deeplops.errors import ConfigError
from deeplops.evaluate import Caller, Runner, call_here, play_here
from deeplops.game import GameConfig
from deeplops.imitation import imitate
from deeplops.learned import load_agent
from deeplops.policies import baseline_names, load_policy
from deeplops.ppo import PPO, PPOSettings, Rollouts
from deeplops.sim import Randomisation, SimParams
from deeplops.topogen import random_topology
from deeplops.topology import Topology, load_topology
from deeplops.training_env import GameVecEnv

if TYPE_CHECKING:
    from deeplops.raypool import RayCluster

ORDER_NOOP_BIAS = 4.0
"""Starting logit of a fresh order agent's noop (the others start near 0): on a six-service system
it first picks noop about three times in four."""

CHAOS_OPPONENTS: tuple[Callable[[], Policy], ...] = (RunbookPolicy, partial(RunbookPolicy, rollback=False))
"""Order baselines in the chaos agent's pool, beside the run's order generations: the runbook, and
the runbook without its rollback step, against which a bad deploy or a leak is never ended while
every other fault is handled as well as ever, so the chaos agent has reason to learn those faults.
(Restart-only healers teach it nothing: in the training dynamics autoheal and k8s fall below 0.03
availability against pauses alone, so every fault wins against them alike.)"""

TRAIN_SEEDS = 10_000
"""Random topologies with seeds below this may be trained on; seeds from here up are held back."""


@dataclass(frozen=True)
class SelfPlayConfig:
    """One self-play run."""

    generations: int = 4
    """Rounds of (train order, then train chaos)."""
    steps: int = 400_000
    """Reinforcement-learning transitions per generation of each role, times its ``steps_share``."""
    seed: int = 0
    """Seed of everything: the same seed gives the same agents and report on the same machine."""
    device: str = "auto"
    """Torch device: auto, cpu or cuda."""
    train_on: tuple[str, ...] = ("shop", "chain")
    """Hand-written topologies trained on (``bank`` is held out for evaluation)."""
    random_share: float = 0.5
    """Share of training games played on random topologies."""
    order: AgentConfig = field(kw_only=True)
    """The order agent's hyperparameters (``from_files`` reads the shipped ones)."""
    chaos: AgentConfig = field(kw_only=True)
    """The chaos agent's hyperparameters."""
    backend: str = "sim"
    """Where games are played: the simulator, or real containers (one game at a time, one tick a
    second: for fine-tuning trained agents, not for training from scratch)."""
    start_from: str | None = None
    """A directory holding order.zip and chaos.zip to fine-tune rather than start afresh; the docker
    backend starts from the shipped pretrained agents when none is given."""
    ticks: int = 200
    """Ticks per training episode."""
    sim: SimParams | None = None
    """The simulator's dynamics in training and in the report's games (``--sim FILE``); None for
    the calibrated defaults."""
    randomise: bool = True
    """Draw the dynamics of every training episode (restart and recreate times per service,
    probe noise and lag, symptoms) from ranges around ``sim`` (its ``randomise`` ranges, or the
    defaults of ``Randomisation``), so the agents meet many worlds; the report plays ``sim`` as it is."""

    def __post_init__(self) -> None:
        if self.generations < 1 or self.steps < 0 or self.ticks < 1:
            raise ConfigError(f"expected generations >= 1, steps >= 0 and ticks >= 1, got {self.generations}, "
                              f"{self.steps} and {self.ticks}")  # fmt: skip
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend {self.backend!r}: expected one of {', '.join(BACKENDS)}")
        if self.sim is not None and self.real:
            raise ConfigError(f"--sim applies to the simulator only: expected --backend sim, got {self.backend}")
        for role in Role:
            start = self.start_path(role)
            if start is not None and not start.is_file():
                raise ConfigError(
                    f"--from {self.start_from}: no {start.name} there: expected a selfplay output directory"
                )
            if start is not None:
                start_agent(start, role)  # a file that is no saved agent of the role is refused now, not later
            agent = self.given(role)
            problem = agentfile.Network(agent.hidden, agent.rounds, ()).unsupported()
            if problem:
                raise ConfigError(f"{role.value} agent: {problem}: a saved agent cannot hold a larger network")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"--device must be auto, cpu or cuda, got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA device is available here: expected auto or cpu")

    @classmethod
    def from_files(cls, order: Path | None = None, chaos: Path | None = None, **settings: Any) -> SelfPlayConfig:
        """A run whose agents' hyperparameters are read from ``order`` and ``chaos`` (by default the
        shipped ``agents/order.yaml`` and ``agents/chaos.yaml``); ``settings`` are the other fields."""
        return cls(order=load_agent_config(Role.ORDER, order), chaos=load_agent_config(Role.CHAOS, chaos), **settings)

    @property
    def real(self) -> bool:
        """Whether games are played on real containers."""
        return self.backend != "sim"

    def record(self) -> dict[str, Any]:
        """The settings as a run's state records them, which a resumed run must share: all but
        ``generations`` (more may be asked for)."""
        record = json.loads(json.dumps(asdict(self), default=str))
        record.pop("generations")
        return record

    def start_path(self, role: Role) -> Path | None:
        """The agent generation 1 of ``role`` fine-tunes, or None to start afresh."""
        if self.start_from is not None:
            return Path(self.start_from) / f"{role.value}.zip"
        return data_dir("agents") / "pretrained" / f"{role.value}.zip" if self.real else None

    def given(self, role: Role) -> AgentConfig:
        """The role's hyperparameters as given (``order`` or ``chaos``)."""
        return {Role.ORDER: self.order, Role.CHAOS: self.chaos}[role]

    @property
    def training_sim(self) -> SimParams:
        """The dynamics training games are played under."""
        params = self.sim or SimParams()
        if not self.randomise:
            return replace(params, randomise=None)
        return params if params.randomise else replace(params, randomise=Randomisation())

    def agent(self, role: Role, hosts: int = 1) -> AgentConfig:
        """The role's hyperparameters, fitted to the backend: on real containers one game of one env
        on each of ``hosts`` Docker engines (this machine's, or each Ray actor's), rollouts no longer
        than the run, and no imitation (the agents come trained from the sim)."""
        agent = self.given(role)
        if not self.real:
            return agent
        n_steps = max(1, min(agent.n_steps, round(self.steps * agent.steps_share) // hosts))
        return replace(agent, n_games=hosts, envs_per_game=1, n_steps=n_steps,
                       batch_size=min(agent.batch_size, n_steps * hosts), imitation_steps=0)  # fmt: skip


@dataclass
class Progress:
    """What a run reports while it goes: called with (phase label, transitions done, transitions total)."""

    update: Callable[[str, int, int], None] = lambda label, done, total: None


def teacher(name: str) -> str | None:
    """The order baseline ``--imitate`` names (None for ``none``).

    Raises:
        ConfigError: ``name`` is no order baseline that sees only what the agent sees.
    """
    if name == "none":
        return None
    allowed = [b for b in baseline_names(Role.ORDER) if not load_policy(b, Role.ORDER).privileged]
    if name not in allowed:
        raise ConfigError(f"--imitate: expected none or one of {', '.join(allowed)}, got {bounds.shown(name)}")
    return name


def topology_sampler(config: SelfPlayConfig) -> Callable[[np.random.Generator], Topology]:
    """Training topologies: the hand-written ones, and random ones from the training seeds (on real
    containers, the first hand-written one only: a stack is made once per game)."""
    fixed = [load_topology(name) for name in config.train_on]
    if config.real:
        return lambda rng: fixed[0]

    def sample(rng: np.random.Generator) -> Topology:
        if rng.random() < config.random_share or not fixed:
            return random_topology(int(rng.integers(TRAIN_SEEDS)))
        return fixed[int(rng.integers(len(fixed)))]

    return sample


def pool_sampler(pool: list[Callable[[], Policy]]) -> Callable[[np.random.Generator], Policy]:
    """A uniformly drawn member of ``pool``, freshly made."""
    return lambda rng: pool[int(rng.integers(len(pool)))]()


def start_agent(path: Path, role: Role) -> agentfile.SavedAgent:
    """The saved agent at ``path`` that training of ``role`` starts from.

    Raises:
        PolicyError: the file is no saved agent (see ``deeplops.agentfile``).
        ConfigError: it is one of the other role.
    """
    saved = agentfile.load(path, explore=True)  # an earlier world's agent tries what it lacked
    if saved.role is not role:
        raise ConfigError(f"{path} holds the {saved.role.value} agent: expected the {role.value} agent to train on")
    return saved


def ppo_settings(agent: AgentConfig) -> PPOSettings:
    """PPO's hyperparameters of ``agent``."""
    return PPOSettings(
        learning_rate=agent.learning_rate,
        n_steps=agent.n_steps,
        batch_size=agent.batch_size,
        n_epochs=agent.n_epochs,
        gamma=agent.gamma,
        gae_lambda=agent.gae_lambda,
        ent_coef=agent.ent_coef,
        clip_range=agent.clip_range,
    )


@dataclass(frozen=True)
class GameMaker:
    """Makes the training games of one role and phase: ``maker(n_games, seed)`` is a ``GameVecEnv``
    of ``n_games`` games. Picklable, so a Ray worker makes its own share of them."""

    role: Role
    topologies: Callable[[np.random.Generator], Topology]
    """Draws each game's topology."""
    opponents: Callable[[np.random.Generator], Policy]
    """Draws each game's opponent."""
    envs_per_game: int
    game: GameConfig
    sim: SimParams | None
    """The simulator's dynamics; None for real containers."""
    backend: str

    def __call__(self, n_games: int, seed: int) -> GameVecEnv:
        return GameVecEnv(self.role, self.topologies, self.opponents, n_games, self.envs_per_game, self.game,
                          self.sim, seed=seed, backend=self.backend)  # fmt: skip


def make_model(
    role: Role,
    agent: AgentConfig,
    env: GameVecEnv | Rollouts,
    seed: int,
    device: str,
    start: agentfile.SavedAgent | None = None,
) -> PPO:
    """PPO on the slot network: fresh, or going on from the saved agent ``start`` (its network,
    weights, Adam state and counters; this run's hyperparameters)."""
    network = start.network.kwargs() if start else {"hidden": agent.hidden, "rounds": agent.rounds}
    torch.manual_seed(seed)  # the network's first weights
    # A fresh order agent starts mostly doing nothing: from uniform odds over every repair of every
    # service it would restart something nearly every tick, and learn in a storm of its own making.
    noop_bias = ORDER_NOOP_BIAS if role is Role.ORDER and start is None else 0.0
    policy = SlotPolicy(
        env.observation_space, env.action_space, lambda _: agent.learning_rate, noop_bias=noop_bias, **network
    ).to(device)
    if start is not None:
        start.restore(policy)
    model = PPO(policy, env, ppo_settings(agent), seed=seed)
    if start is not None:
        model.num_timesteps, model.n_updates = start.training.timesteps, start.training.updates
    return model


def save_model(model: PPO, role: Role, path: Path) -> None:
    """Write ``model`` as a saved agent: its network's weights, Adam state and counters."""
    training = agentfile.TrainingState(model.num_timesteps, model.n_updates)
    agentfile.save(path, cast(SlotPolicy, model.policy), role, training)


class SelfPlay:
    """A self-play run writing into ``out``: checkpoints, TensorBoard logs, and its state."""

    def __init__(
        self, config: SelfPlayConfig, out: Path, progress: Progress | None = None, cluster: RayCluster | None = None
    ) -> None:
        self.config, self.out = config, out
        self.progress = progress or Progress()
        self.cluster = cluster
        """Where rollouts and the report's games are played: None for this process, else on the Ray
        cluster's actors. Not a setting of the run: a run started here may resume on a cluster, and
        the other way round."""
        self.device = (
            "cuda" if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available()) else "cpu"
        )
        self.history: list[dict[str, Any]] = []
        self.timing: dict[str, float] = {"order_steps": 0, "order_s": 0.0, "chaos_steps": 0, "chaos_s": 0.0}

    @property
    def runner(self) -> Runner:
        """Where the report's games are played: here, or on the cluster's actors with the same results."""
        return play_here if self.cluster is None else self.cluster.play

    @property
    def caller(self) -> Caller:
        """Where other work of the report is done (a drill on real containers): here, or on the actors."""
        return call_here if self.cluster is None else self.cluster.call

    @property
    def hosts(self) -> int:
        """Docker engines training games on real containers are played on: each actor's, or this one."""
        return 1 if self.cluster is None else self.cluster.workers

    @property
    def checkpoints(self) -> Path:
        return self.out / "checkpoints"

    def completed(self) -> int:
        """Generations already completed in ``out`` by a run with the same configuration."""
        state = self.out / "state.json"
        if not state.exists():
            return 0
        expected = "the state of a selfplay run (or an empty --out)"
        saved = parse_json(
            read_text(state, ConfigError, expected, MAX_DOCUMENT_BYTES), ConfigError, str(state), expected
        )
        if not isinstance(saved, dict) or not {"completed", "config"} <= set(saved):
            raise ConfigError(f"{state}: expected {expected}, with completed and config")
        if saved["config"] != self.config.record():
            raise ConfigError(
                f"{self.out} holds a run with other settings: expected an empty --out or the same settings"
            )
        done = bounds.whole(saved["completed"], f"{state}: 'completed'", 0, bounds.MAX_GENERATIONS)
        history, timing = saved.get("history", []), saved.get("timing", self.timing)
        if not isinstance(history, list) or not isinstance(timing, dict) or set(timing) != set(self.timing):
            raise ConfigError(f"{state}: 'history' and 'timing' are not those of a selfplay run: expected {expected}")
        missing = [p.name for p in (self._agent(r, done) for r in Role) if done and not p.is_file()]
        if missing:
            raise ConfigError(f"{state}: generation {done} is completed but {', '.join(missing)} is missing: "
                              "expected its checkpoints beside it (or an empty --out)")  # fmt: skip
        self.history, self.timing = history, timing
        return done

    def run(self) -> tuple[Path, Path]:
        """Train every generation not yet completed; return the final order and chaos agents' paths."""
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        done = self.completed()
        for g in range(done + 1, self.config.generations + 1):
            self._generation(g)
        return self._agent(Role.ORDER, self.config.generations), self._agent(Role.CHAOS, self.config.generations)

    def order_pool(self, upto: int) -> list[Callable[[], Policy]]:
        """Opponents of the chaos agent: ``CHAOS_OPPONENTS`` and every order generation up to ``upto``."""
        return [*CHAOS_OPPONENTS, *(self.frozen(Role.ORDER, g) for g in range(1, upto + 1))]

    def chaos_pool(self, upto: int) -> list[Callable[[], Policy]]:
        """Opponents of the order agent: random chaos, flapping chaos (services that fail again right
        after a repair, which a repairer that waits too long loses to) and every chaos generation up
        to ``upto``."""
        scripted = [lambda: load_policy("random", Role.CHAOS), lambda: load_policy("flapping", Role.CHAOS)]
        return scripted + [self.frozen(Role.CHAOS, g) for g in range(1, upto + 1)]

    def _generation(self, g: int) -> None:
        cfg = self.config
        seeds = np.random.SeedSequence([cfg.seed, g]).generate_state(4)
        tb = self.out / "tb"
        record: dict[str, Any] = {"generation": g}
        game = GameConfig(max_ticks=cfg.ticks)
        for role, pool, seed, env_seed in (
            (Role.ORDER, self.chaos_pool(g - 1), int(seeds[0]), int(seeds[1])),
            (Role.CHAOS, self.order_pool(g), int(seeds[2]), int(seeds[3])),
        ):
            agent = cfg.agent(role, self.hosts)
            steps = round(cfg.steps * agent.steps_share)
            topologies = (
                topology_sampler(cfg) if role is Role.ORDER or cfg.real else (lambda rng: load_topology("shop"))
            )
            previous = self._agent(role, g - 1) if g > 1 else cfg.start_path(role)
            saved = start_agent(previous, role) if previous is not None else None  # before any container
            sim = None if cfg.real else cfg.training_sim
            games = GameMaker(role, topologies, pool_sampler(pool), agent.envs_per_game, game, sim, cfg.backend)
            env = (
                games(agent.n_games, env_seed)
                if self.cluster is None
                else self.cluster.rollouts(games, agent.n_games, ppo_settings(agent), seed, env_seed)
            )
            model = make_model(role, agent, env, seed, self.device, saved)
            if agent.imitate and agent.imitation_steps:
                # Every generation: the teacher's play on the states this generation's opponents
                # lead to (mostly random chaos, so nothing learnt before is crowded out), so the
                # student is not lost where past chaos agents took it (DAgger's point).
                mix = [pool[0]] * 3 + pool[1:]
                teach_env = GameVecEnv(role, topologies, pool_sampler(mix), agent.n_games, agent.envs_per_game, game,
                                       sim, seed=env_seed + 1)  # fmt: skip
                self.progress.update(f"g{g} {role.value}: imitating {agent.imitate}", 0, steps)
                record[f"{role.value}_imitation_accuracy"] = imitate(
                    model, teach_env, agent.imitate, agent.imitation_steps, agent.imitation_epochs, seed)  # fmt: skip
            start = time.monotonic()
            try:
                if steps:
                    label = f"g{g} {role.value}"

                    def progressed(done: int, label: str = label, steps: int = steps) -> None:
                        self.progress.update(label, done, steps)

                    model.learn(steps, on_rollout=progressed, log_dir=tb / f"{role.value}_g{g}")
            finally:
                env.close()  # real containers (or a cluster's workers) go even when training fails
            self.timing[f"{role.value}_s"] += time.monotonic() - start
            self.timing[f"{role.value}_steps"] += steps
            save_model(model, role, self._agent(role, g))
        self.history.append(record)
        state = {"completed": g, "config": self.config.record(), "history": self.history, "timing": self.timing}
        # A generation counts once its state is written whole.
        outputs.write_text(self.out / "state.json", json.dumps(state, indent=2), "--out")

    def _agent(self, role: Role, g: int) -> Path:
        return self.checkpoints / f"{role.value}-g{g}.zip"

    def frozen(self, role: Role, g: int) -> Callable[[], Policy]:
        """A maker of generation ``g``'s agent of ``role``, each call a fresh copy from its checkpoint."""
        return FrozenAgent(self._agent(role, g), role)


@dataclass(frozen=True)
class FrozenAgent:
    """A maker of a past generation's agent, each call a fresh copy from its checkpoint. Pickled (for
    a Ray worker, perhaps on another machine) it carries the checkpoint's bytes, and is unpickled as
    a maker of a copy of that file there."""

    path: Path
    role: Role

    def __call__(self) -> Policy:
        # A deep copy: loaded from its checkpoint, it never changes as training goes on.
        agent = load_agent(self.path)
        if agent.role is not self.role:
            raise ConfigError(f"{self.path} holds the {agent.role.value} agent: expected the {self.role.value} agent")
        return agent

    def __reduce__(self) -> tuple[Callable[[str, Role, bytes], FrozenAgent], tuple[str, Role, bytes]]:
        return _copied_agent, (self.path.name, self.role, self.path.read_bytes())


def _copied_agent(name: str, role: Role, data: bytes) -> FrozenAgent:
    """A ``FrozenAgent`` of a copy of a checkpoint, kept under the temporary folder by its content's
    hash (so every worker on a machine shares one copy, whatever it dies of)."""
    folder = Path(tempfile.gettempdir()) / "deeplops-agents" / hashlib.sha256(data).hexdigest()[:24]
    path = folder / name
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        part = folder / f".{name}.{os.getpid()}"
        part.write_bytes(data)
        part.replace(path)  # whole, even with another worker writing the same file
    return FrozenAgent(path, role)
