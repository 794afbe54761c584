"""``deeplops benchmark``: a fixed protocol that ranks order policies on systems, faults and dynamics,
most of them never trained on, like a challenge's leaderboard.

Each policy plays every suite, in this order (the ids are stable; ``SUITES`` holds them):

| suite | system | chaos | dynamics |
|---|---|---|---|
| ``random-topologies`` | 8 random topologies never trained on (topogen seeds 10000-10007) | random | calibrated |
| ``bank`` | ``bank`` (never trained on) | random | calibrated |
| ``real-software`` | ``store`` and ``payments`` (real-software kinds; trained on) | random | calibrated |
| ``scenarios`` | every shipped scenario (``scenarios/*.yaml``) | its scripted faults | calibrated |
| ``slow-restarts`` | ``shop`` and ``bank`` | random | restarts and recreates take 3 ticks |
| ``very-slow-restarts`` | ``shop`` and ``bank`` | random | restarts and recreates take 8 ticks |
| ``noisy-probes`` | ``shop`` and ``bank`` | random | 15 % of health results flipped |
| ``lagging-probes`` | ``shop`` and ``bank`` | random | health reported 2 ticks late |
| ``noisy-lagging`` | ``shop`` and ``bank`` | random | 10 % flipped and 3 ticks late |
| ``busy-deploys`` | ``shop`` and ``bank`` | random | benign deploys, 0.005 per service and tick |
| ``trained-chaos`` | ``shop`` | the shipped chaos agent | calibrated |

A suite plays ``episodes`` episodes, split evenly over its systems with at least one each
(``ceil(episodes / systems)`` per system), so every system of a suite weighs the same. Episode
seeds start at ``EPISODE_SEED``, far above the seeds training uses, and every suite starts there:
the same draws meet every policy and every dynamics. "Calibrated" is the simulator's calibrated
defaults, or the ``--sim`` file's parameters in their place; the dynamics suites change their
fields on top of that base. The same arguments give the same figures.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from deeplops.actions import Policy, Role
from deeplops.evaluate import Match, play
from deeplops.game import GameConfig
from deeplops.metrics import Summary, summarize
from deeplops.policies import PRETRAINED, baseline_names, load_policy
from deeplops.scenario import ScriptedChaos, load_scenario, shipped_scenarios
from deeplops.selfplay import TRAIN_SEEDS
from deeplops.sim import SimParams
from deeplops.topogen import random_topology
from deeplops.topology import Topology, load_topology

SUITES: dict[str, str] = {
    "random-topologies": "8 random topologies never trained on (topogen seeds 10000-10007), random chaos",
    "bank": "the bank topology (never trained on), random chaos",
    "real-software": "store and payments, on PostgreSQL, Redis and nginx kinds (trained on), random chaos",
    "scenarios": "every shipped scenario, its scripted faults",
    "slow-restarts": "shop and bank, random chaos; restarts and recreates take 3 ticks",
    "very-slow-restarts": "shop and bank, random chaos; restarts and recreates take 8 ticks",
    "noisy-probes": "shop and bank, random chaos; 15% of health results flipped",
    "lagging-probes": "shop and bank, random chaos; health reported 2 ticks late",
    "noisy-lagging": "shop and bank, random chaos; 10% of health results flipped, 3 ticks late",
    "busy-deploys": "shop and bank, random chaos; benign deploys at 0.005 per service and tick",
    "trained-chaos": "shop against the shipped chaos agent (agents/pretrained/chaos.zip)",
}
"""The suites, by id in the order they are played, with what each one plays."""
REAL_SOFTWARE_SYSTEMS = ("store", "payments")
"""The shipped topologies of real-software kinds the ``real-software`` suite plays."""
DYNAMICS: dict[str, dict[str, Any]] = {
    "slow-restarts": {"restart_ticks": 3, "recreate_ticks": 3},
    "very-slow-restarts": {"restart_ticks": 8, "recreate_ticks": 8},
    "noisy-probes": {"probe_noise": 0.15},
    "lagging-probes": {"probe_delay": 2},
    "noisy-lagging": {"probe_noise": 0.1, "probe_delay": 3},
    "busy-deploys": {"deploy_rate": 0.005},  # a deploy is then a clue to a bad one, not a proof
}
"""The held-out dynamics suites: the SimParams fields each changes on top of the base (numbers)."""
HELD_OUT_TOPOLOGIES = tuple(range(TRAIN_SEEDS, TRAIN_SEEDS + 8))
"""Seeds of the random topologies of ``random-topologies``: training draws seeds below ``TRAIN_SEEDS``."""
DYNAMICS_SYSTEMS = ("shop", "bank")
"""The topologies every dynamics suite plays."""
EPISODE_SEED = 1_000_000
"""Seed of every suite's first episode: far above any seed training or ``evaluate`` uses by default."""
DEFAULT_EPISODES = 32
"""Episodes per suite unless asked otherwise."""
DEFAULT_ORDER = (*baseline_names(Role.ORDER), PRETRAINED)
"""The policies ranked unless asked otherwise: every order baseline and the shipped order agent."""
STORM_REPAIRS_PER_FAULT = 2.0
"""More repairs than this per injected fault is a repair storm: a defect whatever the availability."""
ORACLE = "oracle"
"""The baseline that reads the true faults: meant to be the upper bound of every suite."""
ORACLE_MARGIN = 0.01
"""Availability above the oracle's by more than this is flagged: beyond noise, the oracle is not a bound."""


@dataclass(frozen=True)
class Stage:
    """One system of a suite: where its episodes are played, against what, under which dynamics."""

    topology: Topology
    """The system."""
    chaos: Policy
    """The chaos side: random chaos, a scenario's script, or a trained agent."""
    game: GameConfig
    """Episode length and the chaos budget."""
    params: SimParams | None
    """The dynamics; None for the calibrated defaults."""
    episodes: int
    """Episodes played on it."""
    seed: int
    """Seed of its first episode; episode k uses ``seed + k``."""


@dataclass(frozen=True)
class Suite:
    """One suite of the protocol."""

    id: str
    """Its stable id (a key of ``SUITES``)."""
    stages: tuple[Stage, ...]
    """Its systems, played in this order."""

    @property
    def about(self) -> str:
        """What it plays, in one line."""
        return SUITES[self.id]

    @property
    def episodes(self) -> int:
        """Episodes each policy plays on it."""
        return sum(s.episodes for s in self.stages)

    @property
    def env_ticks(self) -> int:
        """Env-ticks each policy plays on it (for progress)."""
        return sum(s.episodes * s.game.max_ticks for s in self.stages)


@dataclass(frozen=True)
class Score:
    """One policy's figures on one suite."""

    summary: Summary
    """The contract metrics over the suite's episodes."""

    @property
    def repairs_per_fault(self) -> float | None:
        """Repairs taken per fault injected; None when no fault was injected."""
        s = self.summary
        return s.repairs / s.faults_injected if s.faults_injected else None

    @property
    def storm(self) -> bool:
        """Whether the policy repaired more than ``STORM_REPAIRS_PER_FAULT`` times per injected fault."""
        return self.summary.repairs > STORM_REPAIRS_PER_FAULT * self.summary.faults_injected


@dataclass(frozen=True)
class AboveOracle:
    """A policy whose availability on a suite beats the oracle's beyond noise."""

    policy: str
    """The policy."""
    suite: str
    """The suite's id."""
    availability: float
    """The policy's availability there."""
    oracle: float
    """The oracle's."""


@dataclass(frozen=True)
class Leaderboard:
    """What one benchmark measured: every policy on every suite."""

    suites: tuple[Suite, ...]
    """The protocol played."""
    scores: dict[str, dict[str, Score]]
    """Figures by policy (in the order asked), then by suite id."""
    episodes: int
    """Episodes per suite asked for."""
    sim: str | None = None
    """The ``--sim`` file the base dynamics came from; None for the calibrated ones."""

    @property
    def policies(self) -> tuple[str, ...]:
        """The policies, in the order asked."""
        return tuple(self.scores)

    def mean_availability(self, policy: str) -> float:
        """The policy's availability averaged over the suites, each weighing the same."""
        rows = self.scores[policy]
        return sum(rows[s.id].summary.availability for s in self.suites) / len(self.suites)

    def ranking(self) -> tuple[str, ...]:
        """The policies, best mean availability first (ties in the order asked)."""
        return tuple(sorted(self.policies, key=lambda p: -self.mean_availability(p)))

    def storms(self, policy: str) -> tuple[str, ...]:
        """The suites where the policy stormed (see ``Score.storm``)."""
        return tuple(s.id for s in self.suites if self.scores[policy][s.id].storm)

    def above_oracle(self) -> tuple[AboveOracle, ...]:
        """Every (policy, suite) beating the oracle by more than ``ORACLE_MARGIN`` (none without the oracle)."""
        if ORACLE not in self.scores:
            return ()
        found = []
        for suite in self.suites:
            bound = self.scores[ORACLE][suite.id].summary.availability
            for policy, rows in self.scores.items():
                availability = rows[suite.id].summary.availability
                if availability > bound + ORACLE_MARGIN:
                    found.append(AboveOracle(policy, suite.id, availability, bound))
        return tuple(found)

    def to_json(self) -> dict[str, Any]:
        """The object ``deeplops benchmark --json`` writes."""
        above = {(a.policy, a.suite) for a in self.above_oracle()}
        return {
            "protocol": {
                "episodes": self.episodes,
                "episode_seed": EPISODE_SEED,
                "held_out_topology_seeds": list(HELD_OUT_TOPOLOGIES),
                "sim": self.sim,
                "storm_repairs_per_fault": STORM_REPAIRS_PER_FAULT,
                "oracle_margin": ORACLE_MARGIN,
            },
            "suites": {
                s.id: {"about": s.about, "episodes": s.episodes, "dynamics": DYNAMICS.get(s.id, {})}
                for s in self.suites
            },
            "ranking": list(self.ranking()),
            "policies": {
                policy: {
                    "mean_availability": self.mean_availability(policy),
                    "suites": {
                        suite: {
                            **score.summary.to_json(),
                            "repairs_per_fault": score.repairs_per_fault,
                            "storm": score.storm,
                            "above_oracle": (policy, suite) in above,
                        }
                        for suite, score in rows.items()
                    },
                }
                for policy, rows in self.scores.items()
            },
            "above_oracle": [
                {"policy": a.policy, "suite": a.suite, "availability": a.availability, "oracle": a.oracle}
                for a in self.above_oracle()
            ],
        }

    def markdown(self) -> str:
        """The leaderboard as a Markdown table: a row per policy, best first; availability per suite and the mean.

        A cell is marked ⚠ where the policy stormed and † where it beat the oracle beyond noise;
        the legend follows the table.
        """
        above = {(a.policy, a.suite) for a in self.above_oracle()}
        ids = [s.id for s in self.suites]
        lines = [
            "| # | policy | " + " | ".join(ids) + " | mean |",
            "|---:|---|" + "---:|" * (len(ids) + 1),
        ]
        for rank, policy in enumerate(self.ranking(), 1):
            cells = []
            for suite in ids:
                score = self.scores[policy][suite]
                marks = (" ⚠" if score.storm else "") + (" †" if (policy, suite) in above else "")
                cells.append(f"{score.summary.availability:.3f}{marks}")
            name = policy.replace("|", "\\|")
            lines.append(f"| {rank} | {name} | " + " | ".join(cells) + f" | {self.mean_availability(policy):.3f} |")
        lines += [
            "",
            f"Availability (fraction of ticks the SLO held) over {self.episodes} episodes per suite, split evenly "
            "over its systems with at least one each; mean: over the suites, each weighing the same.",
            "",
            "| policy | repairs per fault | relapses | unrecovered | wasted repairs | data lost |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for policy in self.ranking():
            totals = [score.summary for score in self.scores[policy].values()]
            faults = sum(t.faults_injected for t in totals)
            per_fault = f"{sum(t.repairs for t in totals) / faults:.2f}" if faults else "–"
            counts = (sum(t.relapses for t in totals), sum(t.unrecovered for t in totals),
                      sum(t.wasted_repairs for t in totals), sum(t.data_loss for t in totals))  # fmt: skip
            name = policy.replace("|", "\\|")
            lines.append(f"| {name} | {per_fault} | " + " | ".join(str(c) for c in counts) + " |")
        lines += [
            "",
            "Over every suite: repairs taken per fault injected; relapses, a fault's symptoms back after a "
            "repair had ended them with its cause still there; faults still open at their episode's end; repairs "
            "that ended no fault; recreates that lost a volume's data.",
            "",
            f"⚠ a repair storm: more than {STORM_REPAIRS_PER_FAULT:g} repairs per injected fault, a defect "
            "whatever the availability.",
            "",
            f"† above the oracle by more than {ORACLE_MARGIN:g}: the oracle reads the true faults and is meant "
            "to be the upper bound.",
        ]
        return "\n".join(lines) + "\n"


def protocol(episodes: int = DEFAULT_EPISODES, base: SimParams | None = None) -> tuple[Suite, ...]:
    """The benchmark's suites (see the module's docstring), ``episodes`` per suite, on ``base`` dynamics.

    Loads the shipped scenarios and the shipped chaos agent: call it before any work, so that a
    broken installation fails first.
    """

    def random_chaos() -> Policy:
        return load_policy("random", Role.CHAOS)

    free = GameConfig()
    shop, bank = load_topology("shop"), load_topology("bank")
    scenarios = [load_scenario(path) for path in shipped_scenarios()]
    systems: dict[str, list[tuple[Topology, Policy, GameConfig, SimParams | None]]] = {
        "random-topologies": [(random_topology(seed), random_chaos(), free, base) for seed in HELD_OUT_TOPOLOGIES],
        "bank": [(bank, random_chaos(), free, base)],
        "real-software": [(load_topology(name), random_chaos(), free, base) for name in REAL_SOFTWARE_SYSTEMS],
        "scenarios": [(s.topology, ScriptedChaos(s), s.game_config(), base) for s in scenarios],
    }
    for suite, changes in DYNAMICS.items():
        params = replace(base or SimParams(), **changes)
        systems[suite] = [(load_topology(name), random_chaos(), free, params) for name in DYNAMICS_SYSTEMS]
    systems["trained-chaos"] = [(shop, load_policy(PRETRAINED, Role.CHAOS), free, base)]
    assert list(systems) == list(SUITES), "every suite is built, in the documented order"
    return tuple(_suite(suite, stages, episodes) for suite, stages in systems.items())


def _suite(
    suite: str, systems: Sequence[tuple[Topology, Policy, GameConfig, SimParams | None]], episodes: int
) -> Suite:
    """``episodes`` split evenly over ``systems``, each system's seeds following the last one's."""
    each = math.ceil(episodes / len(systems))
    stages = tuple(
        Stage(topology, chaos, game, params, each, EPISODE_SEED + i * each)
        for i, (topology, chaos, game, params) in enumerate(systems)
    )
    return Suite(suite, stages)


def run(
    policies: Mapping[str, Policy],
    suites: Sequence[Suite],
    episodes: int = DEFAULT_EPISODES,
    sim: str | None = None,
    on_tick: Callable[[int], None] | None = None,
) -> Leaderboard:
    """Play every policy on every suite of ``suites`` (made by ``protocol(episodes, ...)``).

    ``on_tick(n)`` is called after every batched tick with the env-ticks played; all of them
    together come to ``len(policies) * sum(s.env_ticks for s in suites)``.
    """
    scores: dict[str, dict[str, Score]] = {}
    for name, policy in policies.items():
        scores[name] = {}
        for suite in suites:
            stats = []
            for stage in suite.stages:
                match = Match(stage.topology, policy, stage.chaos, game=stage.game, params=stage.params)
                stats += play(match, stage.episodes, seed=stage.seed, on_tick=on_tick)
            scores[name][suite.id] = Score(summarize(stats))
    return Leaderboard(tuple(suites), scores, episodes, sim)
