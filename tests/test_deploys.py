"""Specification of releases in the simulator: bad deploys, rollback, benign deploys and what shows
of them (docs/design.md §4.2–4.3), and how the baselines meet them."""

from __future__ import annotations

import numpy as np
import pytest
from test_baselines import INJECT_AT, drill

from deeplops.actions import Role
from deeplops.baselines import RunbookPolicy
from deeplops.evaluate import Match, play
from deeplops.faults import Fault, Repair
from deeplops.metrics import summarize
from deeplops.observation import Feature
from deeplops.policies import load_policy
from deeplops.sim import Randomisation, SimParams, SimSandbox
from deeplops.topology import Topology, load_topology

QUIET = SimParams(probe_noise=0.0)


@pytest.fixture(scope="module")
def shop() -> Topology:
    return load_topology("shop")


def make(topology: Topology, params: SimParams = QUIET, seed: int = 0) -> SimSandbox:
    sandbox = SimSandbox(topology, 1, params)
    sandbox.reset([seed])
    return sandbox


def act(sandbox: SimSandbox, name: str, code: Fault | Repair) -> bool:
    slot = np.array([sandbox.topology.index[name]])
    if isinstance(code, Fault):
        sandbox.inject(slot, np.array([code]))
        return False
    return bool(sandbox.repair(slot, np.array([code]))[0])


def ticks(sandbox: SimSandbox, n: int) -> list[np.ndarray]:
    seen = []
    for _ in range(n):
        sandbox.advance()
        seen.append(sandbox.observe()[0].copy())
    return seen


def at(obs: np.ndarray, sandbox: SimSandbox, name: str, which: Feature) -> float:
    return float(obs[sandbox.topology.index[name], which])


# --- a bad deploy -------------------------------------------------------------------------------


def test_a_bad_deploy_runs_but_fails_its_health_and_its_users(shop: Topology) -> None:
    box = make(shop)
    act(box, "api", Fault.BAD_DEPLOY)
    last = ticks(box, 4)[-1]
    assert at(last, box, "api", Feature.RUNNING) == 1.0
    assert at(last, box, "api", Feature.HEALTHY) == 0.0
    assert at(last, box, "api", Feature.ERROR_RATE) >= 0.6
    assert not box.slo[0]


def test_a_bad_deploy_shows_as_a_deploy_and_a_restart(shop: Topology) -> None:
    box = make(shop)
    before = ticks(box, 3)[-1]
    assert at(before, box, "api", Feature.SINCE_DEPLOY) == 1.0  # none this episode
    act(box, "api", Fault.BAD_DEPLOY)
    after = ticks(box, 3)
    assert [round(at(o, box, "api", Feature.SINCE_DEPLOY) * 100) for o in after] == [0, 1, 2]
    assert at(after[-1], box, "api", Feature.RESTARTS) > at(before, box, "api", Feature.RESTARTS)
    assert at(after[-1], box, "api", Feature.SINCE_REPAIR) == 1.0  # nobody repaired it


@pytest.mark.parametrize("repair", [Repair.RESTART, Repair.RECREATE, Repair.CLEAN_DISK, Repair.RATE_LIMIT])
def test_no_repair_but_rollback_ends_a_bad_deploy(shop: Topology, repair: Repair) -> None:
    box = make(shop)
    act(box, "db", Fault.BAD_DEPLOY)
    ticks(box, 2)
    assert not act(box, "db", repair)
    ticks(box, 5)
    assert box.faults[0, shop.index["db"]] == Fault.BAD_DEPLOY
    assert not box.health[0, shop.index["db"]]


def test_rollback_ends_a_bad_deploy_as_a_deploy_does(shop: Topology) -> None:
    box = make(shop)
    act(box, "api", Fault.BAD_DEPLOY)
    ticks(box, 3)
    assert act(box, "api", Repair.ROLLBACK)
    seen = ticks(box, 6)
    assert box.faults[0, shop.index["api"]] == 0
    assert box.health[0].all() and box.slo[0]
    assert round(at(seen[0], box, "api", Feature.SINCE_DEPLOY) * 100) == 0  # a rollback is a deploy


def test_a_rollback_with_no_release_before_does_nothing_but_count_as_a_repair(shop: Topology) -> None:
    box = make(shop)
    before = ticks(box, 2)[-1]
    assert not act(box, "api", Repair.ROLLBACK)
    after = ticks(box, 1)[-1]
    assert at(after, box, "api", Feature.RUNNING) == 1.0 and box.health[0].all()
    assert at(after, box, "api", Feature.RESTARTS) <= at(before, box, "api", Feature.RESTARTS)
    assert at(after, box, "api", Feature.SINCE_DEPLOY) == 1.0
    assert at(after, box, "api", Feature.SINCE_REPAIR) == 0.0


def test_a_second_rollback_goes_back_no_further_than_the_releases_there_were(shop: Topology) -> None:
    box = make(shop)
    act(box, "api", Fault.BAD_DEPLOY)
    ticks(box, 2)
    assert act(box, "api", Repair.ROLLBACK)
    ticks(box, 3)
    restarts = at(box.observe()[0], box, "api", Feature.RESTARTS)
    assert not act(box, "api", Repair.ROLLBACK)  # back at the first release: nothing before it
    assert at(ticks(box, 1)[-1], box, "api", Feature.RESTARTS) <= restarts


def test_a_bad_deploy_of_a_database_fails_its_clients_users_while_their_own_check_passes(shop: Topology) -> None:
    box = make(shop)
    act(box, "db", Fault.BAD_DEPLOY)
    last = ticks(box, 4)[-1]
    # The api checks its database with its own client (a query that reads): it answers.
    direct = shop.direct_checks[shop.index["api"], shop.index["db"]]
    assert at(last, box, "api", Feature.HEALTHY) == (1.0 if direct else 0.0)
    assert at(last, box, "api", Feature.ERROR_RATE) >= 0.6
    assert not box.slo[0]


# --- benign deploys -------------------------------------------------------------------------------


def test_the_calibrated_world_deploys_nothing_by_itself(shop: Topology) -> None:
    box = make(shop)
    seen = ticks(box, 200)
    assert all((o[: shop.n_services, Feature.SINCE_DEPLOY] == 1.0).all() for o in seen[100:])


def test_benign_deploys_restart_services_on_a_good_release_at_about_their_rate(shop: Topology) -> None:
    rate = 0.02
    box = make(shop, SimParams(probe_noise=0.0, deploy_rate=rate))
    seen = ticks(box, 500)
    deploys = sum(int((o[: shop.n_services, Feature.SINCE_DEPLOY] == 0.0).sum()) for o in seen)
    expected = rate * 500 * shop.n_services  # 60
    assert 0.5 * expected <= deploys <= 1.5 * expected
    assert (box.faults == 0).all()
    assert np.mean([o[: shop.n_services, Feature.HEALTHY].mean() for o in seen]) > 0.8


def test_a_benign_deploy_is_never_made_over_an_open_fault(shop: Topology) -> None:
    box = make(shop, SimParams(probe_noise=0.0, deploy_rate=0.5))
    act(box, "db", Fault.DISK_FULL)
    act(box, "api", Fault.BAD_DEPLOY)
    ticks(box, 50)
    assert box.faults[0, shop.index["db"]] == Fault.DISK_FULL
    assert box.faults[0, shop.index["api"]] == Fault.BAD_DEPLOY


def test_a_rollback_after_a_benign_deploy_goes_back_to_the_release_before_it(shop: Topology) -> None:
    box = make(shop, SimParams(probe_noise=0.0, deploy_rate=0.05))
    seen = ticks(box, 200)
    slot = next(s for s in range(shop.n_services) if any(o[s, Feature.SINCE_DEPLOY] == 0.0 for o in seen))
    name = shop.names[slot]
    assert not act(box, name, Repair.ROLLBACK)  # it ends no fault, but it is carried out
    assert at(ticks(box, 1)[-1], box, name, Feature.SINCE_DEPLOY) == 0.0


def test_training_draws_a_deploy_rate_per_episode_from_its_range(shop: Topology) -> None:
    params = SimParams(randomise=Randomisation(deploy_rate=(0.0, 0.05)))
    counts = []
    for seed in range(8):
        box = make(shop, params, seed)
        seen = ticks(box, 300)
        counts.append(sum(int((o[: shop.n_services, Feature.SINCE_DEPLOY] == 0.0).sum()) for o in seen))
    most = 0.05 * 300 * shop.n_services  # 90 at the top of the range
    assert len(set(counts)) >= 6 and max(counts) <= 1.3 * most
    assert min(counts) < 0.5 * most < max(counts)  # low and high rates both drawn


# --- memory and connections -----------------------------------------------------------------------


def test_memory_and_connections_read_their_kinds_level_while_running_and_zero_when_down() -> None:
    store = load_topology("store")
    params = SimParams(probe_noise=0.0)
    box = make(store, params)
    up = ticks(box, 2)[-1]
    for name, kind in zip(store.names, store.kinds, strict=True):
        assert at(up, box, name, Feature.MEMORY) == pytest.approx(params.memory_of(kind), abs=1e-6)
        assert at(up, box, name, Feature.CONNECTIONS) == pytest.approx(params.connections_of(kind), abs=1e-6)
    act(box, "db", Fault.KILL)
    down = ticks(box, 1)[-1]
    assert at(down, box, "db", Feature.MEMORY) == 0.0 and at(down, box, "db", Feature.CONNECTIONS) == 0.0


# --- the baselines --------------------------------------------------------------------------------


def test_the_runbook_rolls_back_a_bad_deploy_and_restarts_nothing(shop: Topology) -> None:
    d = drill(shop, load_policy("runbook", Role.ORDER), Fault.BAD_DEPLOY, "api", ticks=INJECT_AT + 20)
    assert {(name, repair) for _, name, repair in d.repairs} == {("api", Repair.ROLLBACK)}
    assert d.game.episode_stats()[0].faults_recovered == 1


def test_the_runbook_rolls_back_the_deployed_service_and_restarts_a_killed_one(shop: Topology) -> None:
    later = ((INJECT_AT + 6, Fault.KILL, "api"),)
    d = drill(shop, load_policy("runbook", Role.ORDER), Fault.BAD_DEPLOY, "cache", INJECT_AT + 30, later=later)
    assert {(name, repair) for _, name, repair in d.repairs} == {("cache", Repair.ROLLBACK), ("api", Repair.RESTART)}
    assert d.game.episode_stats()[0].faults_recovered == 2


def test_the_runbook_without_its_rollback_step_restarts_a_bad_deploy_and_never_ends_it(shop: Topology) -> None:
    d = drill(shop, RunbookPolicy(rollback=False), Fault.BAD_DEPLOY, "api", ticks=INJECT_AT + 60)
    stats = d.game.episode_stats()[0]
    assert stats.faults_recovered == 0 and stats.unrecovered == 1
    assert d.repairs and {(name, repair) for _, name, repair in d.repairs} == {("api", Repair.RESTART)}


def test_the_runbook_without_its_rollback_step_still_restarts_a_killed_service(shop: Topology) -> None:
    d = drill(shop, RunbookPolicy(rollback=False), Fault.KILL, "api", ticks=INJECT_AT + 20)
    assert {(name, repair) for _, name, repair in d.repairs} == {("api", Repair.RESTART)}
    assert d.game.episode_stats()[0].faults_recovered == 1


@pytest.mark.parametrize("policy", ["autoheal", "k8s"])
def test_restarting_policies_never_end_a_bad_deploy(shop: Topology, policy: str) -> None:
    d = drill(shop, load_policy(policy, Role.ORDER), Fault.BAD_DEPLOY, "api", ticks=INJECT_AT + 60)
    stats = d.game.episode_stats()[0]
    assert stats.faults_recovered == 0 and stats.unrecovered == 1
    assert d.repairs and {repair for _, _, repair in d.repairs} == {Repair.RESTART}


def test_against_random_chaos_with_benign_deploys_the_runbook_rolls_back_within_reason(shop: Topology) -> None:
    params = SimParams(deploy_rate=0.01)

    def measured(name: str):
        match = Match(shop, load_policy(name, Role.ORDER), load_policy("random", Role.CHAOS), params=params)
        return summarize(play(match, episodes=16, seed=0))

    runbook, oracle = measured("runbook"), measured("oracle")
    assert runbook.repairs <= 2 * runbook.faults_injected
    assert runbook.availability >= oracle.availability - 0.05


def test_a_rollback_starts_the_previous_release_so_it_ends_a_kill_only_where_there_is_one(shop: Topology) -> None:
    box = make(shop, SimParams(probe_noise=0.0, deploy_rate=0.005))
    seen = ticks(box, 150)
    deployed = [s for s in range(shop.n_services) if any(o[s, Feature.SINCE_DEPLOY] == 0.0 for o in seen)]
    never = [s for s in range(shop.n_services) if s not in deployed]
    assert deployed and never
    for slot, ends in ((deployed[0], True), (never[0], False)):
        act(box, shop.names[slot], Fault.KILL)
        ticks(box, 1)
        assert act(box, shop.names[slot], Repair.ROLLBACK) is ends
