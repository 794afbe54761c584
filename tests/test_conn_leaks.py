"""Specification of connection leaks in the simulator (docs/design.md §4.2): a client of PostgreSQL
fills the server's connection limit, then every client of the server fails while the server looks
well; a restart of the server relieves it for a while, a restart of the client ends it; and how the
game, the scenarios and the baselines meet it."""

from __future__ import annotations

import numpy as np
import pytest
from test_baselines import INJECT_AT, drill
from test_deploys import act, at, make, ticks

from deeplops.actions import Observation, Role, chaos_action, fault_targets, order_action
from deeplops.errors import ScenarioError
from deeplops.faults import Fault, Repair
from deeplops.game import Game, GameConfig
from deeplops.observation import Feature
from deeplops.policies import load_policy
from deeplops.scenario import load_scenario
from deeplops.sim import SimParams, SimSandbox
from deeplops.topology import Topology, load_topology


@pytest.fixture(scope="module")
def store() -> Topology:
    return load_topology("store")


def connections(seen: list[np.ndarray], box: SimSandbox, name: str) -> list[float]:
    return [round(at(o, box, name, Feature.CONNECTIONS), 3) for o in seen]


def healthy(seen: list[np.ndarray], box: SimSandbox, name: str) -> list[bool]:
    return [at(o, box, name, Feature.HEALTHY) == 1.0 for o in seen]


def test_a_leaking_client_fills_its_database_three_connections_of_27_a_tick(store: Topology) -> None:
    box = make(store)
    act(box, "worker", Fault.CONN_LEAK)
    seen = ticks(box, 9)
    # From PostgreSQL's share at work (0.185 of the 27 connections its clients get), 3 more a tick
    # (0.111), until it is full: 0.95 or more at the 7th reading, as on Docker on average.
    expected = [0.296, 0.407, 0.518, 0.629, 0.74, 0.851, 0.963, 1.0, 1.0]
    assert connections(seen, box, "db") == pytest.approx(expected, abs=2e-3)
    assert connections(seen, box, "worker") == [1.0] * 9  # more than its pools hold
    assert connections(seen, box, "app") == [0.667] * 9  # its pools, as at work


def test_until_the_database_is_full_nothing_fails(store: Topology) -> None:
    box = make(store)
    act(box, "worker", Fault.CONN_LEAK)
    seen = ticks(box, 6)
    assert all(all(healthy(seen, box, name)) for name in store.names)
    assert box.slo[0]


def test_once_full_every_client_fails_while_the_database_looks_well(store: Topology) -> None:
    box = make(store)
    act(box, "worker", Fault.CONN_LEAK)
    seen = ticks(box, 9)
    assert not box.slo[0]  # the app's orders need a new connection, and get none
    assert healthy(seen, box, "app")[6:] == [False] * 3
    assert healthy(seen, box, "worker")[6:] == [False] * 3
    assert healthy(seen, box, "gateway")[-1] is False  # a hop later: it pings the app
    assert healthy(seen, box, "db") == [True] * 9
    assert at(seen[-1], box, "db", Feature.ERROR_RATE) < 0.1
    assert at(seen[-1], box, "app", Feature.ERROR_RATE) >= 0.6


def test_restarting_the_database_relieves_it_until_the_client_has_leaked_as_many_again(store: Topology) -> None:
    box = make(store)
    act(box, "worker", Fault.CONN_LEAK)
    ticks(box, 8)
    assert not act(box, "db", Repair.RESTART)  # it ends nothing: the leak is the worker's
    seen = ticks(box, 12)
    slo = [at(o, box, "app", Feature.HEALTHY) == 1.0 for o in seen]
    assert True in slo  # relieved: its connections died with its processes
    assert slo[-1] is False  # and full again
    assert box.faults[0, store.index["worker"]] == Fault.CONN_LEAK


@pytest.mark.parametrize("repair", [Repair.RESTART, Repair.RECREATE])
def test_a_new_process_of_the_leaking_client_ends_the_leak(store: Topology, repair: Repair) -> None:
    box = make(store)
    act(box, "worker", Fault.CONN_LEAK)
    ticks(box, 8)
    assert act(box, "worker", repair)
    seen = ticks(box, 20)
    assert box.faults[0, store.index["worker"]] == 0
    assert connections(seen, box, "db")[2:] == [0.185] * 18
    assert all(healthy(seen[4:], box, "app")) and box.slo[0]


def test_a_new_app_cannot_start_while_its_database_refuses_connections(store: Topology) -> None:
    box = make(store)
    act(box, "worker", Fault.CONN_LEAK)
    ticks(box, 8)
    act(box, "app", Repair.RESTART)  # the wrong client: its new pool cannot connect
    seen = ticks(box, 14)
    assert at(seen[-1], box, "app", Feature.RUNNING) == 0.0  # gave up after APP_DB_WAIT_S, as on Docker
    assert box.faults[0, store.index["app"]] == Fault.KILL


def test_only_a_client_of_postgres_takes_a_connection_leak(store: Topology) -> None:
    takes = fault_targets(store)[:, Fault.CONN_LEAK]
    assert dict(zip(store.names, takes.tolist(), strict=True)) == {
        "db": False, "cache": False, "queue": False, "app": True, "gateway": False, "worker": True,
    }  # fmt: skip
    assert not fault_targets(load_topology("shop"))[:, Fault.CONN_LEAK].any()  # no PostgreSQL there


def test_the_game_refuses_a_connection_leak_on_the_database_as_an_invalid_action(store: Topology) -> None:
    game = Game(SimSandbox(store, 1, SimParams(probe_noise=0.0)), GameConfig(max_ticks=10))
    game.reset([0])
    assert not game.chaos_mask()[0, chaos_action(store.index["db"], Fault.CONN_LEAK)]
    assert game.chaos_mask()[0, chaos_action(store.index["worker"], Fault.CONN_LEAK)]
    game.step(np.array([chaos_action(store.index["db"], Fault.CONN_LEAK)]), np.zeros(1, np.int64))
    assert game.sandbox.faults[0, store.index["db"]] == 0
    assert game.episode_stats()[0].invalid_actions == 1


def test_a_scenario_with_a_connection_leak_off_a_postgres_client_is_refused_in_one_line(tmp_path) -> None:
    path = tmp_path / "leak.yaml"
    path.write_text("name: leak\nenv: store\nticks: 10\nfaults:\n  - {at: 2, fault: conn_leak, target: cache}\n")
    with pytest.raises(ScenarioError, match=r"conn_leak needs a client of a PostgreSQL server.*'cache'"):
        load_scenario(path)


# --- the books and the baselines ------------------------------------------------------------------


class RestartAt:
    """Restarts one service at the given ticks (a scripted operator)."""

    role = Role.ORDER
    name = "scripted"
    privileged = False

    def __init__(self, slot: int, at_ticks: set[int]) -> None:
        self.slot, self.at_ticks, self.tick = slot, at_ticks, 0

    def reset(self, n_envs: int, seed: int | None = None) -> None:
        self.tick = 0

    def act(self, obs: Observation, mask: np.ndarray) -> np.ndarray:
        self.tick += 1
        return np.array([order_action(self.slot, Repair.RESTART) if self.tick - 1 in self.at_ticks else 0])


def test_the_books_count_a_database_restart_as_relief_and_the_relapse_after_it(store: Topology) -> None:
    operator = RestartAt(store.index["db"], {INJECT_AT + 10})
    d = drill(store, operator, Fault.CONN_LEAK, "worker", ticks=INJECT_AT + 30)
    stats = d.game.episode_stats()[0]
    assert stats.relapses == 1
    assert stats.faults_recovered == 0 and stats.unrecovered == 1
    assert stats.wasted_repairs == 1


def test_the_runbook_restarts_the_leaking_client_and_not_the_others(store: Topology) -> None:
    d = drill(store, load_policy("runbook", Role.ORDER), Fault.CONN_LEAK, "worker", ticks=INJECT_AT + 30)
    assert [(name, repair) for _, name, repair in d.repairs] == [("worker", Repair.RESTART)]
    stats = d.game.episode_stats()[0]
    assert stats.faults_recovered == 1 and stats.relapses == 0


def test_the_oracle_restarts_the_leaking_client_at_once(store: Topology) -> None:
    d = drill(store, load_policy("oracle", Role.ORDER), Fault.CONN_LEAK, "worker", ticks=INJECT_AT + 10)
    assert d.repairs == [(INJECT_AT + 1, "worker", Repair.RESTART)]
