"""Specification of memory leaks in the simulator (docs/design.md §4.2): a leaking release's memory
grows until the kernel kills it, a restart relieves it for a while, a rollback ends it; and how the
game, the scenarios and the baselines meet it."""

from __future__ import annotations

import numpy as np
import pytest
from test_baselines import INJECT_AT, drill
from test_deploys import act, at, make, ticks

from deeplops.actions import Role, chaos_action, fault_targets
from deeplops.errors import ScenarioError
from deeplops.faults import Fault, Repair
from deeplops.game import Game, GameConfig
from deeplops.observation import Feature
from deeplops.policies import load_policy
from deeplops.scenario import load_scenario
from deeplops.sim import SimParams, SimSandbox
from deeplops.topology import Topology, load_topology


@pytest.fixture(scope="module")
def shop() -> Topology:
    return load_topology("shop")


def memory(seen: list[np.ndarray], box: SimSandbox, name: str) -> list[float]:
    return [round(at(o, box, name, Feature.MEMORY), 4) for o in seen]


def running(seen: list[np.ndarray], box: SimSandbox, name: str) -> list[bool]:
    return [at(o, box, name, Feature.RUNNING) == 1.0 for o in seen]


def test_a_leaking_release_grows_its_memory_each_tick_until_the_kernel_kills_it(shop: Topology) -> None:
    box = make(shop)
    act(box, "api", Fault.MEMORY_LEAK)
    seen = ticks(box, 12)
    # As measured on Docker (sandbox/README.md): 0.166, 0.291, 0.416 ... 0.917 at the 7th reading
    # (16 MiB of 128 a tick from a working set of 0.091, the first reading 0.6 of a tick into the
    # leak), and not running from the 8th.
    assert memory(seen, box, "api")[:7] == pytest.approx([0.166, 0.291, 0.416, 0.541, 0.666, 0.791, 0.916], abs=2e-3)
    assert running(seen, box, "api") == [True] * 7 + [False] * 5
    assert at(seen[-1], box, "api", Feature.MEMORY) == 0.0
    assert not box.health[0, shop.index["api"]]
    assert box.faults[0, shop.index["api"]] == Fault.MEMORY_LEAK


def test_it_serves_as_a_good_release_until_it_is_killed(shop: Topology) -> None:
    box = make(shop)
    act(box, "api", Fault.MEMORY_LEAK)
    seen = ticks(box, 3)
    assert box.health[0].all() and box.slo[0]
    assert at(seen[-1], box, "api", Feature.ERROR_RATE) < 0.1
    assert round(at(seen[0], box, "api", Feature.SINCE_DEPLOY) * 100) == 0  # a deploy brought it


def test_a_volume_leaves_a_leak_more_room_before_the_kill(shop: Topology) -> None:
    # db's 64 MiB tmpfs volume raises its container's limit by as much, and the data in it was
    # written by the host, not charged to it: 4 more ticks, the 12th reading as on Docker.
    box = make(shop)
    act(box, "api", Fault.MEMORY_LEAK)
    act(box, "db", Fault.MEMORY_LEAK)
    seen = ticks(box, 16)
    assert running(seen, box, "api").index(False) == 7
    assert running(seen, box, "db").index(False) == 11
    assert memory(seen, box, "db")[7:11] == [1.0] * 4  # the feature is a share of the allowance


@pytest.mark.parametrize("repair", [Repair.RESTART, Repair.RECREATE])
def test_a_restart_frees_the_memory_for_a_while_and_it_is_killed_again(shop: Topology, repair: Repair) -> None:
    box = make(shop)
    act(box, "api", Fault.MEMORY_LEAK)
    first = running(ticks(box, 12), box, "api")
    assert not first[-1]
    assert not act(box, "api", repair)  # it ends nothing: the same release starts again
    seen = ticks(box, 14)
    back = running(seen, box, "api")
    assert True in back
    up = back.index(True)
    assert at(seen[up], box, "api", Feature.MEMORY) < 0.5  # relieved
    assert not back[-1]  # and killed again: a relapse
    assert box.faults[0, shop.index["api"]] == Fault.MEMORY_LEAK


def test_a_rollback_ends_the_leak_and_the_memory_stays_at_its_working_set(shop: Topology) -> None:
    box = make(shop)
    act(box, "api", Fault.MEMORY_LEAK)
    ticks(box, 4)
    assert act(box, "api", Repair.ROLLBACK)
    seen = ticks(box, 20)
    assert box.faults[0, shop.index["api"]] == 0
    assert all(running(seen[2:], box, "api"))
    assert max(memory(seen[2:], box, "api")) == pytest.approx(box.params.memory_of("service"), abs=1e-4)


def test_only_a_service_running_our_own_program_takes_a_memory_leak() -> None:
    store = load_topology("store")
    takes = fault_targets(store)[:, Fault.MEMORY_LEAK]
    assert dict(zip(store.names, takes.tolist(), strict=True)) == {
        "db": False, "cache": False, "queue": False, "app": True, "gateway": False, "worker": True,
    }  # fmt: skip


def test_the_game_refuses_a_memory_leak_on_postgres_as_an_invalid_action() -> None:
    store = load_topology("store")
    game = Game(SimSandbox(store, 1, SimParams(probe_noise=0.0)), GameConfig(max_ticks=10))
    game.reset([0])
    assert not game.chaos_mask()[0, chaos_action(store.index["db"], Fault.MEMORY_LEAK)]
    assert game.chaos_mask()[0, chaos_action(store.index["app"], Fault.MEMORY_LEAK)]
    game.step(np.array([chaos_action(store.index["db"], Fault.MEMORY_LEAK)]), np.zeros(1, np.int64))
    assert game.sandbox.faults[0, store.index["db"]] == 0
    assert game.episode_stats()[0].invalid_actions == 1


def test_a_scenario_with_a_memory_leak_on_server_software_is_refused_in_one_line(tmp_path) -> None:
    path = tmp_path / "leak.yaml"
    path.write_text("name: leak\nenv: store\nticks: 10\nfaults:\n  - {at: 2, fault: memory_leak, target: db}\n")
    needs = r"memory_leak needs a service running our own program.*'db' runs postgres"
    with pytest.raises(ScenarioError, match=needs):
        load_scenario(path)


# --- the baselines --------------------------------------------------------------------------------


def test_the_runbook_rolls_back_a_leak_before_the_kernel_kills_it(shop: Topology) -> None:
    d = drill(shop, load_policy("runbook", Role.ORDER), Fault.MEMORY_LEAK, "api", ticks=INJECT_AT + 30)
    assert {(name, repair) for _, name, repair in d.repairs} == {("api", Repair.ROLLBACK)}
    stats = d.game.episode_stats()[0]
    assert stats.faults_recovered == 1 and stats.relapses == 0
    assert "api" not in d.unhealthy


@pytest.mark.parametrize("policy", ["autoheal", "k8s"])
def test_restarting_policies_relieve_a_leak_but_never_end_it(shop: Topology, policy: str) -> None:
    d = drill(shop, load_policy(policy, Role.ORDER), Fault.MEMORY_LEAK, "api", ticks=INJECT_AT + 60)
    stats = d.game.episode_stats()[0]
    assert stats.faults_recovered == 0 and stats.unrecovered == 1
    assert stats.relapses >= 1
    assert d.repairs and {repair for _, _, repair in d.repairs} == {Repair.RESTART}


def test_the_oracle_rolls_back_a_leak_at_once(shop: Topology) -> None:
    d = drill(shop, load_policy("oracle", Role.ORDER), Fault.MEMORY_LEAK, "api", ticks=INJECT_AT + 10)
    assert [(name, repair) for _, name, repair in d.repairs] == [("api", Repair.ROLLBACK)]
    assert d.repairs[0][0] == INJECT_AT + 1
