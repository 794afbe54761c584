"""Durability in the game's books: a fault recovers only when its cause is gone, and symptoms that a
repair ended coming back while the cause is still there count as a relapse (docs/design.md §4.2).

The sandbox here is scripted: the books' rule is pure logic over what a sandbox reports, and a
script states the case exactly (a restart that relieves a leak for two ticks), where a backend would
have to be driven into it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from deeplops.actions import chaos_action, order_action
from deeplops.faults import Fault, Repair
from deeplops.game import Game, GameConfig
from deeplops.metrics import EpisodeStats
from deeplops.observation import MAX_SLOTS, N_FEATURES
from deeplops.sandbox import ArrayState
from deeplops.topology import Topology, load_topology

WELL, SICK = True, False


class ScriptedSandbox(ArrayState):
    """One env whose health is read from a script, tick by tick; a fault stays until ``cure_at``."""

    def __init__(self, topology: Topology, target: int, health: Sequence[bool], cure_at: int | None) -> None:
        self.topology, self.n_envs = topology, 1
        self._target, self._script, self._cure_at = target, health, cure_at
        n = topology.n_services
        self._feats = np.zeros((1, MAX_SLOTS, N_FEATURES), np.float32)
        self._fault = np.zeros((1, n), np.int8)
        self._health = np.ones((1, n), np.bool_)
        self._slo = np.ones(1, np.bool_)
        self._tick = 0

    def reset(self, seeds: Sequence[int]) -> None:
        self._tick = 0

    def inject(self, slots: np.ndarray, faults: np.ndarray) -> None:
        if faults[0]:
            self._fault[0, slots[0]] = faults[0]

    ends_a_fault = False
    """What ``repair`` answers: whether the repair ended a fault (another one than the script's)."""

    def repair(self, slots: np.ndarray, repairs: np.ndarray) -> np.ndarray:
        return np.full(1, self.ends_a_fault)

    def advance(self) -> None:
        if self._cure_at is not None and self._tick >= self._cure_at:
            self._fault[0, self._target] = 0
        well = self._script[self._tick]
        self._health[0, self._target] = well
        self._slo[0] = well
        self._tick += 1

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def shop() -> Topology:
    return load_topology("shop")


def played(
    topology: Topology,
    health: Sequence[bool],
    repairs_at: Sequence[int],
    cure_at: int | None = None,
    repairs_end_a_fault: bool = False,
) -> EpisodeStats:
    """The books after the script: the api's fault at tick 0, a restart of it at each of ``repairs_at``."""
    api = topology.index["api"]
    sandbox = ScriptedSandbox(topology, api, health, cure_at)
    sandbox.ends_a_fault = repairs_end_a_fault
    game = Game(sandbox, GameConfig(max_ticks=len(health)))
    game.reset([0])
    for t in range(len(health)):
        chaos = chaos_action(api, Fault.BAD_DEPLOY) if t == 0 else 0
        order = order_action(api, Repair.RESTART) if t in repairs_at else 0
        game.step(np.array([chaos]), np.array([order]))
    return game.episode_stats()[0]


def test_symptoms_back_after_a_repair_relieved_them_are_a_relapse_and_mttr_runs_to_the_cure(shop: Topology) -> None:
    # Sick, restarted at 2 (well 2-3), sick again at 4, restarted at 5 (well 5-6), sick at 7,
    # cured at 9 (the rollback), well from 9 on.
    health = [SICK, SICK, WELL, WELL, SICK, WELL, WELL, SICK, SICK, WELL, WELL, WELL]
    ep = played(shop, health, repairs_at=[2, 5], cure_at=9)
    assert ep.relapses == 2
    assert ep.mttrs == (9,)  # injected at 0, durable at 9, not at the first relief (2)
    assert ep.faults_recovered == 1 and ep.unrecovered == 0


def test_a_relapse_left_open_at_the_end_is_unrecovered(shop: Topology) -> None:
    health = [SICK, SICK, WELL, WELL, SICK, SICK]
    ep = played(shop, health, repairs_at=[2])
    assert (ep.relapses, ep.unrecovered, ep.faults_recovered) == (1, 1, 0)


def test_symptoms_that_come_and_go_without_a_repair_are_no_relapse(shop: Topology) -> None:
    # A flapping health check is not relief: nobody repaired anything.
    health = [SICK, WELL, SICK, WELL, SICK, SICK]
    assert played(shop, health, repairs_at=[]).relapses == 0


def test_symptoms_shared_with_a_fault_a_repair_ended_are_no_relapse(shop: Topology) -> None:
    # The same health as a relapse, but the repair ended a fault (another one, whose symptoms the
    # api showed as well): the api's own fault was never relieved.
    health = [SICK, SICK, WELL, WELL, SICK, SICK]
    assert played(shop, health, repairs_at=[2], repairs_end_a_fault=True).relapses == 0
    assert played(shop, health, repairs_at=[2], repairs_end_a_fault=False).relapses == 1


def test_a_repair_before_any_symptom_relieves_nothing(shop: Topology) -> None:
    # Restarted at 0 while the fault has not shown yet: the first symptoms at 3 are no relapse.
    health = [WELL, WELL, WELL, SICK, SICK, SICK]
    assert played(shop, health, repairs_at=[0]).relapses == 0


def test_a_cure_that_takes_effect_is_no_relapse(shop: Topology) -> None:
    # Repaired at 2, still sick while it restarts, cured at 3 and well from then: recovered at 3.
    health = [SICK, SICK, SICK, WELL, WELL, WELL]
    ep = played(shop, health, repairs_at=[2], cure_at=3)
    assert (ep.relapses, ep.mttrs) == (0, (3,))


def test_every_relief_and_relapse_counts_after_its_own_repair(shop: Topology) -> None:
    # Relieved at 2, sick at 3; no repair since, so the flap at 4 is no relief; repaired at 6,
    # relieved, sick at 7.
    health = [SICK, SICK, WELL, SICK, WELL, SICK, WELL, SICK]
    assert played(shop, health, repairs_at=[2, 6]).relapses == 2


def test_reset_clears_the_relapse_books(shop: Topology) -> None:
    api = shop.index["api"]
    health = [SICK, SICK, WELL, SICK] * 2
    sandbox = ScriptedSandbox(shop, api, health, None)
    game = Game(sandbox, GameConfig(max_ticks=4))
    for episode in range(2):
        game.reset([episode])
        for t in range(4):
            chaos = chaos_action(api, Fault.BAD_DEPLOY) if t == 0 else 0
            game.step(np.array([chaos]), np.array([order_action(api, Repair.RESTART) if t == 2 else 0]))
        assert game.episode_stats()[0].relapses == 1
        assert game.episode_totals()["relapses"][0] == 1
