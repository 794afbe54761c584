"""The baseline policies (docs/design.md §6), driven through a real game on the simulated shop.

Each drill injects one scripted fault at a chosen tick and lets a baseline defend alone, with
noiseless probes (``SimParams(probe_noise=0.0)``) so that what a rule sees is what happened.
The repairs each baseline takes, and the state the system ends in, are the specification.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest

from deeplops.actions import Policy, Role, chaos_action
from deeplops.backends import make_sandbox
from deeplops.baselines import AutohealPolicy, KubernetesPolicy, OraclePolicy, RunbookPolicy
from deeplops.errors import PolicyError
from deeplops.evaluate import Match, play
from deeplops.faults import Fault, Repair
from deeplops.game import Game, GameConfig
from deeplops.metrics import summarize
from deeplops.policies import baseline_names, load_policy
from deeplops.sim import SimParams
from deeplops.topology import Topology, load_topology

# docs/design.md §6, §9: the POLICY names.
ORDER_BASELINES = ("noop", "random", "autoheal", "k8s", "runbook", "oracle")
CHAOS_BASELINES = ("noop", "random", "flapping")

# docs/design.md §4.2: the proper repair of each fault.
PROPER_REPAIR = {
    Fault.KILL: Repair.RESTART,
    Fault.PAUSE: Repair.RESTART,
    Fault.CPU_HOG: Repair.RESTART,
    Fault.DISK_FULL: Repair.CLEAN_DISK,
    Fault.NET_SATURATION: Repair.RATE_LIMIT,
    Fault.BAD_DEPLOY: Repair.ROLLBACK,
    Fault.MEMORY_LEAK: Repair.ROLLBACK,
    Fault.CONN_LEAK: Repair.RESTART,
}

# envs/shop.yaml: gateway -> api -> {cache, db, queue}; worker -> {queue, db}.
DB_DEPENDENTS = ("api", "gateway", "worker")
INJECT_AT = 5


@pytest.fixture(scope="module")
def shop() -> Topology:
    return load_topology("shop")


@dataclass
class Drill:
    """What happened when ``fault`` hit ``target`` at tick ``at`` with ``policy`` defending."""

    topology: Topology
    game: Game
    at: int
    repairs: list[tuple[int, str, Repair]]
    """(tick, service, repair) of every repair the game applied."""
    unhealthy: set[str]
    """Services whose /health failed at some tick of the drill."""

    def repairs_between(self, first: int, last: int) -> list[tuple[int, str, Repair]]:
        return [r for r in self.repairs if first <= r[0] <= last]

    def restart_ticks(self, service: str) -> list[int]:
        return [tick for tick, name, repair in self.repairs if name == service and repair == Repair.RESTART]

    def fault_on(self, service: str) -> int:
        return int(self.game.sandbox.faults[0, self.topology.index[service]])

    def all_healthy(self) -> bool:
        sandbox = self.game.sandbox
        return bool(sandbox.health[0].all() and sandbox.slo[0] and not sandbox.faults[0].any())


def drill(
    topology: Topology,
    policy: Policy,
    fault: Fault,
    target: str,
    ticks: int,
    at: int = INJECT_AT,
    seed: int = 0,
    later: tuple[tuple[int, Fault, str], ...] = (),
    params: SimParams | None = None,
) -> Drill:
    """Inject ``fault`` on ``target`` at tick ``at`` (and each ``(tick, fault, target)`` of ``later``)."""
    sandbox = make_sandbox("sim", topology, 1, params=params or SimParams(probe_noise=0.0))
    game = Game(sandbox, GameConfig(max_ticks=ticks))
    game.reset([seed])
    policy.reset(1, seed=seed)
    script = {tick: chaos_action(topology.index[name], f) for tick, f, name in ((at, fault, target), *later)}
    repairs: list[tuple[int, str, Repair]] = []
    unhealthy: set[str] = set()
    for tick in range(ticks):
        order = game.decide(policy)
        game.step(np.array([script.get(tick, 0)], np.int64), order)
        if game.order_repair[0]:
            repairs.append((tick, topology.names[game.order_slot[0]], Repair(int(game.order_repair[0]))))
        unhealthy |= {name for name, ok in zip(topology.names, game.sandbox.health[0], strict=True) if not ok}
    assert game.episode_stats()[0].faults_injected == len(script), "a scripted fault was not injected"
    return Drill(topology, game, at, repairs, unhealthy)


# --- the registry ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ORDER_BASELINES)
def test_load_policy_gives_an_order_baseline_for_every_order_name(name: str) -> None:
    assert load_policy(name, Role.ORDER).role is Role.ORDER


@pytest.mark.parametrize("name", CHAOS_BASELINES)
def test_load_policy_gives_a_chaos_baseline_for_every_chaos_name(name: str) -> None:
    assert load_policy(name, Role.CHAOS).role is Role.CHAOS


def test_load_policy_accepts_the_role_as_a_string() -> None:
    assert load_policy("runbook", "order").role is Role.ORDER


def test_baseline_names_are_listed_in_design_order() -> None:
    assert baseline_names(Role.ORDER) == ORDER_BASELINES
    assert baseline_names(Role.CHAOS) == CHAOS_BASELINES


@pytest.mark.parametrize(("role", "names"), [(Role.ORDER, ORDER_BASELINES), (Role.CHAOS, CHAOS_BASELINES)])
def test_unknown_policy_name_raises_policy_error_listing_the_valid_names(role: Role, names: tuple[str, ...]) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy("no-such-policy", role)
    message = str(caught.value)
    assert "no-such-policy" in message
    for name in names:
        assert name in message


def test_an_order_only_name_is_unknown_for_chaos() -> None:
    with pytest.raises(PolicyError, match="oracle"):
        load_policy("oracle", Role.CHAOS)


# --- runbook -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", [Fault.KILL, Fault.PAUSE], ids=lambda f: f.label)
def test_runbook_restarts_only_the_root_cause_of_a_cascade(shop: Topology, fault: Fault) -> None:
    d = drill(shop, RunbookPolicy(), fault, "db", ticks=INJECT_AT + 16)
    assert set(DB_DEPENDENTS) <= d.unhealthy, "the fault on db did not cascade"
    repairs = d.repairs_between(d.at, d.at + 15)
    assert repairs, "runbook never repaired db"
    assert {(name, repair) for _, name, repair in repairs} == {("db", Repair.RESTART)}


@pytest.mark.parametrize("fault", [Fault.KILL, Fault.PAUSE], ids=lambda f: f.label)
def test_runbook_leaves_the_system_healthy_after_a_cascade(shop: Topology, fault: Fault) -> None:
    d = drill(shop, RunbookPolicy(), fault, "db", ticks=INJECT_AT + 16)
    assert d.all_healthy()
    assert d.game.episode_stats()[0].wasted_repairs == 0


@pytest.mark.parametrize("restart_ticks", [3, 5, 8])
def test_runbook_restarts_a_slow_restarting_service_once_and_waits_for_it(shop: Topology, restart_ticks: int) -> None:
    slow = SimParams(probe_noise=0.0, restart_ticks=restart_ticks)
    d = drill(shop, RunbookPolicy(), Fault.KILL, "db", ticks=INJECT_AT + restart_ticks + 20, params=slow)
    assert d.restart_ticks("db") and len(d.restart_ticks("db")) == 1, d.repairs
    assert {name for _, name, _ in d.repairs} == {"db"}
    assert d.all_healthy()


def test_runbook_restarts_again_a_service_that_has_not_come_back_after_its_patience(shop: Topology) -> None:
    never_back = SimParams(probe_noise=0.0, restart_ticks=60)  # longer than the drill
    d = drill(shop, RunbookPolicy(patience=20), Fault.KILL, "db", ticks=INJECT_AT + 50, params=never_back)
    restarts = d.restart_ticks("db")
    assert len(restarts) >= 2, d.repairs
    assert all(later - earlier >= 20 for earlier, later in itertools.pairwise(restarts))


@pytest.mark.parametrize("restart_ticks", [3, 8])
def test_runbook_does_not_storm_against_random_chaos_when_restarts_are_slow(shop: Topology, restart_ticks: int) -> None:
    def measured(order: str):  # type: ignore[no-untyped-def]
        match = Match(shop, load_policy(order, Role.ORDER), load_policy("random", Role.CHAOS),
                      params=SimParams(restart_ticks=restart_ticks, recreate_ticks=restart_ticks))  # fmt: skip
        return summarize(play(match, episodes=16, seed=0))

    runbook, oracle = measured("runbook"), measured("oracle")
    assert runbook.repairs <= 2 * runbook.faults_injected  # a storm is more than two repairs per fault
    assert runbook.availability >= oracle.availability - 0.03


def test_runbook_cleans_a_full_disk(shop: Topology) -> None:
    d = drill(shop, RunbookPolicy(), Fault.DISK_FULL, "db", ticks=INJECT_AT + 16)
    assert ("db", Repair.CLEAN_DISK) in {(name, repair) for _, name, repair in d.repairs}
    assert d.all_healthy()


@pytest.mark.parametrize("target", ["api", "db", "gateway"])
def test_runbook_rate_limits_a_flood(shop: Topology, target: str) -> None:
    d = drill(shop, RunbookPolicy(), Fault.NET_SATURATION, target, ticks=INJECT_AT + 16)
    assert {(name, repair) for _, name, repair in d.repairs} == {(target, Repair.RATE_LIMIT)}
    assert d.all_healthy()


@pytest.mark.parametrize("fault", [Fault.KILL, Fault.PAUSE], ids=lambda f: f.label)
def test_runbook_repairs_as_soon_when_health_reports_come_three_ticks_late(shop: Topology, fault: Fault) -> None:
    # It judges a service by its users' errors, read now, not by a report monitoring may delay.
    prompt = drill(shop, RunbookPolicy(), fault, "db", ticks=INJECT_AT + 16)
    late = drill(shop, RunbookPolicy(), fault, "db", ticks=INJECT_AT + 16,
                 params=SimParams(probe_noise=0.0, probe_delay=3))  # fmt: skip
    assert prompt.repairs, "runbook never repaired db"
    assert late.repairs == prompt.repairs
    assert late.all_healthy()


def test_runbook_repairs_nothing_on_flipped_health_reports_alone(shop: Topology) -> None:
    flipped = SimParams(probe_noise=0.3)  # nearly a third of the reports lie; no fault is injected
    stats = play(Match(shop, RunbookPolicy(), load_policy("noop", Role.CHAOS), params=flipped), episodes=4, seed=0)
    assert sum(s.faults_injected for s in stats) == 0
    assert sum(s.repairs for s in stats) == 0


# --- autoheal ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", [Fault.DISK_FULL, Fault.NET_SATURATION], ids=lambda f: f.label)
def test_autoheal_never_clears_a_full_disk_or_a_flood(shop: Topology, fault: Fault) -> None:
    d = drill(shop, AutohealPolicy(), fault, "db", ticks=60)
    assert d.repairs, "autoheal did not react at all"
    assert {repair for _, _, repair in d.repairs} == {Repair.RESTART}
    assert d.fault_on("db") == fault


def test_autoheal_restarts_the_dependents_of_a_cascade(shop: Topology) -> None:
    d = drill(shop, AutohealPolicy(), Fault.PAUSE, "db", ticks=40)
    restarted = {name for _, name, _ in d.repairs}
    assert "db" in restarted
    assert restarted & set(DB_DEPENDENTS)
    assert d.game.episode_stats()[0].wasted_repairs > 0


@pytest.mark.parametrize("at", range(5, 10))
def test_autoheal_waits_for_three_failed_probes_before_restarting(shop: Topology, at: int) -> None:
    d = drill(shop, AutohealPolicy(), Fault.PAUSE, "worker", ticks=at + 15, at=at)
    restarts = d.restart_ticks("worker")
    assert restarts, "autoheal never restarted the paused worker"
    assert restarts[0] >= at + 3


def test_autoheal_restarts_only_at_its_five_tick_poll(shop: Topology) -> None:
    # Injected at five successive ticks, the same fault is restarted on one 5-tick cadence,
    # so some injections wait past their third failed probe for the next poll.
    first_restarts = []
    for at in range(5, 10):
        d = drill(shop, AutohealPolicy(), Fault.PAUSE, "worker", ticks=at + 15, at=at)
        first_restarts.append(d.restart_ticks("worker")[0])
    assert len({tick % 5 for tick in first_restarts}) == 1
    assert any(tick > at + 3 for tick, at in zip(first_restarts, range(5, 10), strict=True))


# --- k8s ---------------------------------------------------------------------------------------


def test_k8s_spaces_liveness_restarts_by_a_growing_back_off(shop: Topology) -> None:
    d = drill(shop, KubernetesPolicy(), Fault.DISK_FULL, "db", ticks=700)
    restarts = d.restart_ticks("db")
    assert len(restarts) >= 4
    gaps = np.diff(restarts)
    assert (np.diff(gaps) >= 0).all(), f"restart gaps shrink: {gaps.tolist()}"
    assert gaps[-1] > gaps[0]
    assert d.fault_on("db") == Fault.DISK_FULL


def test_k8s_waits_for_three_failed_liveness_probes(shop: Topology) -> None:
    # Probes run every 10 ticks: three failures take at least 20 ticks after the first one.
    d = drill(shop, KubernetesPolicy(), Fault.PAUSE, "worker", ticks=60)
    restarts = d.restart_ticks("worker")
    assert restarts, "k8s never restarted the paused worker"
    assert restarts[0] >= d.at + 20


def test_k8s_restarts_an_exited_container_at_once(shop: Topology) -> None:
    d = drill(shop, KubernetesPolicy(), Fault.KILL, "db", ticks=20)
    assert d.restart_ticks("db")[0] <= d.at + 2
    assert d.all_healthy()


def test_k8s_backs_off_before_restarting_a_container_that_exits_again(shop: Topology) -> None:
    d = drill(shop, KubernetesPolicy(), Fault.KILL, "db", ticks=80, later=((40, Fault.KILL, "db"),))
    restarts = d.restart_ticks("db")
    assert len(restarts) == 2
    assert restarts[1] >= 40 + 10  # the first back-off is 10 s


def test_k8s_forgets_its_back_off_after_ten_minutes_healthy(shop: Topology) -> None:
    d = drill(shop, KubernetesPolicy(), Fault.KILL, "db", ticks=720, later=((700, Fault.KILL, "db"),))
    restarts = d.restart_ticks("db")
    assert len(restarts) == 2
    assert restarts[1] <= 700 + 2


# --- oracle ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", list(Fault), ids=lambda f: f.label)
def test_oracle_applies_the_proper_repair_one_tick_after_injection(shop: Topology, fault: Fault) -> None:
    # A connection leak is a client's of PostgreSQL: store's worker (shop's db is the generic program).
    topology, target = (load_topology("store"), "worker") if fault is Fault.CONN_LEAK else (shop, "db")
    d = drill(topology, OraclePolicy(), fault, target, ticks=INJECT_AT + 10)
    assert d.repairs == [(d.at + 1, target, PROPER_REPAIR[fault])]
    assert d.all_healthy()


# --- the game rewards diagnosis ----------------------------------------------------------------


def test_availability_ranks_oracle_runbook_autoheal_noop_against_random_chaos(shop: Topology) -> None:
    def availability(order: str) -> float:
        match = Match(shop, load_policy(order, Role.ORDER), load_policy("random", Role.CHAOS))
        return summarize(play(match, episodes=32, seed=0)).availability

    oracle, runbook, autoheal, noop = (availability(name) for name in ("oracle", "runbook", "autoheal", "noop"))
    assert oracle >= runbook
    assert runbook >= autoheal + 0.03
    assert autoheal > noop


def test_random_chaos_picks_each_allowed_action_about_equally_and_noops_where_none_is_allowed() -> None:
    from deeplops.baselines import RandomChaos

    mask = np.zeros((4000, 6), bool)
    mask[:, 0] = True
    mask[:2000, [2, 3, 5]] = True  # half the envs may play 2, 3 or 5; the other half only noop
    chaos = RandomChaos(rate=0.5, seed=3)
    actions = np.concatenate([chaos.act({}, mask) for _ in range(10)])
    allowed = np.tile(np.arange(4000) < 2000, 10)
    assert set(np.unique(actions[~allowed])) == {0}
    counts = np.bincount(actions[allowed], minlength=6)
    assert counts[[1, 4]].tolist() == [0, 0]
    # 20,000 envs at rate 0.5: about 10,000 noops and 3,333 of each allowed action.
    assert 9600 < counts[0] < 10400
    assert all(3100 < c < 3570 for c in counts[[2, 3, 5]]), counts
    single = RandomChaos(rate=0.5, seed=3)
    one = np.concatenate([single.act({}, mask[:1]) for _ in range(2000)])
    assert set(np.unique(one)) == {0, 2, 3, 5} and 900 < (one == 0).sum() < 1100
