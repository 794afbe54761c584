"""Service kinds (docs/design.md §4.1, §5.1): where each kind may stand in a topology, random
topologies that run real software, and each kind's downtimes in the simulator."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from deeplops import topogen
from deeplops.dockerbox.calibrate import (
    KIND_TARGETS,
    START_TARGET,
    measure_fault,
    measure_starts,
    page_ticks,
    served_with_full_disk,
    symptoms_from,
)
from deeplops.errors import ConfigError
from deeplops.faults import Fault, Repair
from deeplops.observation import Feature
from deeplops.sim import MAX_DOWN_TICKS, KindProfile, Randomisation, SimParams, SimSandbox
from deeplops.topogen import random_topology
from deeplops.topology import Service, Topology, build_topology, load_topology, topology_from_dict, topology_to_dict

ROOT = Path(__file__).resolve().parent.parent
QUIET = SimParams(probe_noise=0.0)


def refusal(services: dict[str, dict]) -> str:
    """The ConfigError message a topology of ``services`` must raise."""
    with pytest.raises(ConfigError) as caught:
        topology_from_dict({"name": "t", "services": services}, source="t.yaml")
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- where each kind may stand ----------------------------------------------------------------


@pytest.mark.parametrize("path", sorted((ROOT / "envs").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_topology_loads(path: Path) -> None:
    assert load_topology(path).n_services > 0


def test_the_store_runs_each_kind_where_it_was_written() -> None:
    store = load_topology("store")
    kinds = dict(zip(store.names, store.kinds, strict=True))
    assert kinds == {"gateway": "nginx", "app": "app", "db": "postgres", "cache": "redis", "queue": "redis",
                     "worker": "worker"}  # fmt: skip


def test_a_service_without_a_kind_is_the_generic_service() -> None:
    assert set(load_topology("shop").kinds) == {"service"}


def test_a_postgres_that_calls_something_is_refused() -> None:
    message = refusal({"web": {"depends_on": ["db"], "entry": True}, "cache": {"kind": "redis"},
                       "db": {"kind": "postgres", "disk_mb": 64, "depends_on": ["cache"]}})  # fmt: skip
    assert message.startswith("t.yaml: service 'db': a postgres serves, it calls nothing")
    assert message.endswith("expected no dependencies, got 'cache'")


def test_a_redis_that_calls_something_is_refused() -> None:
    message = refusal({"web": {"depends_on": ["cache"], "entry": True},
                       "cache": {"kind": "redis", "depends_on": ["other"]}, "other": {}})  # fmt: skip
    assert "service 'cache': a redis serves, it calls nothing" in message
    assert message.endswith("expected no dependencies, got 'other'")


@pytest.mark.parametrize("disk", [0, 32, 63])
def test_a_postgres_needs_a_volume_of_64_mib_for_its_data_directory(disk: int) -> None:
    message = refusal({"web": {"depends_on": ["db"], "entry": True}, "db": {"kind": "postgres", "disk_mb": disk}})
    assert "service 'db'" in message and "data directory on its volume" in message
    assert message.endswith(f"expected disk_mb >= 64, got {disk}")


def test_a_postgres_with_64_mib_is_accepted() -> None:
    topo = topology_from_dict({"name": "t", "services": {"web": {"depends_on": ["db"], "entry": True},
                                                         "db": {"kind": "postgres", "disk_mb": 64}}})  # fmt: skip
    assert topo.kinds == ("postgres", "service")


def test_an_nginx_proxies_to_exactly_one_upstream() -> None:
    two = refusal({"edge": {"kind": "nginx", "depends_on": ["a", "b"], "entry": True}, "a": {}, "b": {}})
    assert "service 'edge': an nginx proxies to one HTTP upstream" in two
    assert two.endswith("expected exactly one dependency, got 'a', 'b'")
    none = refusal({"edge": {"kind": "nginx", "entry": True}})
    assert none.endswith("expected exactly one dependency, got none")


@pytest.mark.parametrize("kind", ["postgres", "redis"])
def test_an_nginx_does_not_proxy_to_a_store(kind: str) -> None:
    message = refusal({"edge": {"kind": "nginx", "depends_on": ["db"], "entry": True},
                       "db": {"kind": kind, "disk_mb": 64}})  # fmt: skip
    assert "service 'edge'" in message
    assert message.endswith(f"expected dependencies of kind service, app or nginx, got 'db' ({kind})")


@pytest.mark.parametrize("kind", ["service", "app", "nginx"])
def test_an_nginx_may_proxy_to_any_http_kind(kind: str) -> None:
    upstream: dict = {"kind": kind, "depends_on": ["api"]} if kind == "nginx" else {"kind": kind}
    services = {"edge": {"kind": "nginx", "depends_on": ["up"], "entry": True}, "up": upstream, "api": {}}
    assert topology_from_dict({"name": "t", "services": services}).n_services == 3


def test_an_nginx_keeps_no_volume() -> None:
    message = refusal({"edge": {"kind": "nginx", "depends_on": ["api"], "entry": True, "disk_mb": 32}, "api": {}})
    assert "service 'edge'" in message and "keeps no data" in message
    assert message.endswith("expected disk_mb 0, got 32")


def test_a_worker_needs_a_redis_queue() -> None:
    only_db = refusal({"web": {"depends_on": ["db"], "entry": True}, "db": {"kind": "postgres", "disk_mb": 64},
                       "w": {"kind": "worker", "depends_on": ["db"]}})  # fmt: skip
    assert "service 'w': a worker drains a redis queue" in only_db
    assert only_db.endswith("expected at least one dependency of kind redis, got 'db' (postgres)")
    nothing = refusal({"web": {"entry": True}, "w": {"kind": "worker"}})
    assert nothing.endswith("expected at least one dependency of kind redis, got none")


def test_a_worker_talks_to_stores_only() -> None:
    message = refusal({"web": {"depends_on": ["api"], "entry": True}, "api": {"kind": "app"}, "q": {"kind": "redis"},
                       "w": {"kind": "worker", "depends_on": ["q", "api"]}})  # fmt: skip
    assert "service 'w'" in message
    assert message.endswith("expected dependencies of kind redis or postgres, got 'api' (app)")


def test_a_worker_takes_no_user_traffic() -> None:
    message = refusal({"w": {"kind": "worker", "depends_on": ["q"], "entry": True}, "q": {"kind": "redis"}})
    assert "service 'w'" in message and "takes no user traffic" in message
    assert message.endswith("expected entry false, got true")


@pytest.mark.parametrize("kind", ["service", "app"])
def test_nothing_depends_on_a_worker(kind: str) -> None:
    message = refusal({"web": {"kind": kind, "depends_on": ["w"], "entry": True}, "q": {"kind": "redis"},
                       "w": {"kind": "worker", "depends_on": ["q"]}})  # fmt: skip
    assert message.startswith("t.yaml: service 'web' depends on 'w' (worker)")
    assert message.endswith("expected no service to depend on a worker")


def test_an_unknown_kind_is_named() -> None:
    message = refusal({"web": {"kind": "mysql", "entry": True}})
    assert "service 'web'" in message
    assert message.endswith("'kind' must be one of service, nginx, app, worker, postgres, redis, got 'mysql'")


def test_a_service_built_in_python_with_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"service 'web': 'kind' must be one of .*got 'mysql'"):
        build_topology("t", [Service(name="web", entry=True, kind="mysql")])


def test_a_misplaced_kind_through_the_cli_is_one_line_and_exit_2(cli, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nservices:\n  web: {depends_on: [db], entry: true}\n  db: {kind: postgres}\n")
    out = tmp_path / "m.json"
    result = cli("evaluate", "--env", str(path), "--order", "runbook", "--episodes", "1", "--json", str(out))
    assert result.code == 2, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.err
    assert "service 'db'" in lines[0] and "expected disk_mb >= 64, got 0" in lines[0]
    assert not out.exists()


def test_kinds_round_trip_through_the_topology_document() -> None:
    store = load_topology("store")
    doc = topology_to_dict(store)
    assert doc["services"]["db"] == {"kind": "postgres", "disk_mb": 128}
    assert doc["services"]["worker"] == {"kind": "worker", "depends_on": ["queue", "db"]}
    assert topology_from_dict(doc) == store
    payments = load_topology("payments")
    assert "kind" not in topology_to_dict(payments)["services"]["fraud"]  # the generic kind is not written
    assert topology_from_dict(topology_to_dict(payments)) == payments


# --- random topologies that run real software -------------------------------------------------


def placement_problems(topology: Topology) -> list[str]:
    """The placement rules, walked independently of the topology module."""
    kind = dict(zip(topology.names, topology.kinds, strict=True))
    called = {d for s in topology.services for d in s.depends_on}
    problems = []
    for s in topology.services:
        below = [kind[d] for d in s.depends_on]
        if s.kind in ("postgres", "redis") and below:
            problems.append(f"{s.name}: a store calls {below}")
        if s.kind == "postgres" and s.disk_mb < 64:
            problems.append(f"{s.name}: a postgres without a volume")
        if s.kind == "nginx" and (len(below) != 1 or below[0] not in ("service", "app", "nginx") or s.disk_mb):
            problems.append(f"{s.name}: an nginx in front of {below}")
        if s.kind == "worker" and ("redis" not in below or set(below) - {"redis", "postgres"} or s.entry):
            problems.append(f"{s.name}: a worker on {below}")
        if s.kind == "worker" and s.name in called:
            problems.append(f"{s.name}: a worker something calls")
    return problems


def test_every_random_topology_places_its_kinds_where_they_can_stand() -> None:
    for seed in range(1500):
        topology = random_topology(seed)
        assert placement_problems(topology) == [], seed
        assert topology_from_dict(topology_to_dict(topology)) == topology  # and it validates as a file


def test_random_topologies_draw_every_kind_and_stay_generic_too() -> None:
    drawn = [random_topology(seed).kinds for seed in range(300)]
    assert set().union(*drawn) == {"service", "nginx", "app", "worker", "postgres", "redis"}
    generic = sum(set(kinds) == {"service"} for kinds in drawn)
    assert 90 < generic < 210  # about half run real software


def test_the_same_seed_gives_the_same_kinds() -> None:
    for seed in (5, 123, 10_001):
        assert random_topology(seed).kinds == random_topology(seed).kinds


def test_kinds_leave_a_seeds_shape_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    def shapes(share: float) -> list[tuple[Service, ...]]:
        monkeypatch.setattr(topogen, "REAL_SHARE", share)
        return [tuple(replace(s, kind="service") for s in random_topology(seed).services) for seed in range(100)]

    assert shapes(1.0) == shapes(0.0)


def test_an_exact_size_still_holds_with_kinds() -> None:
    assert {random_topology(seed, n_services=16).n_services for seed in range(40)} == {16}


# --- each kind's downtimes in the simulator ---------------------------------------------------

SMALL = topology_from_dict({"name": "small", "services": {
    "web": {"depends_on": ["db", "cache"], "entry": True, "disk_mb": 32},
    "db": {"kind": "postgres", "disk_mb": 64},
    "cache": {"kind": "redis"},
}})  # fmt: skip
DB, CACHE, WEB = SMALL.index["db"], SMALL.index["cache"], SMALL.index["web"]


def ticks_down_after(box: SimSandbox, slot: int, repair: Repair, env: int = 0) -> int:
    """Ticks the service in ``slot`` of ``env`` is not running after ``repair``."""
    codes = np.zeros(box.n_envs, np.int64)
    codes[env] = repair
    box.repair(np.full(box.n_envs, slot), codes)
    down = 0
    for _ in range(30):
        box.advance()
        down += box.observe()[env, slot, Feature.RUNNING] == 0.0
    return down


def test_a_postgres_stays_down_its_own_restart_while_others_take_the_generic_one() -> None:
    params = replace(QUIET, restart_ticks=1, kinds=(KindProfile("postgres", restart_ticks=4),))
    box = SimSandbox(SMALL, 1, params)
    box.reset([0])
    assert ticks_down_after(box, DB, Repair.RESTART) == 4
    assert ticks_down_after(box, WEB, Repair.RESTART) == 1
    assert ticks_down_after(box, CACHE, Repair.RESTART) == 1  # a redis without a profile: the generic figure


def test_a_database_is_down_a_while_after_its_disk_is_cleaned() -> None:
    params = replace(QUIET, kinds=(KindProfile("postgres", clean_disk_ticks=3),))
    box = SimSandbox(SMALL, 1, params)
    box.reset([0])
    assert ticks_down_after(box, DB, Repair.CLEAN_DISK) == 3
    assert ticks_down_after(box, WEB, Repair.CLEAN_DISK) == 0  # the generic program keeps serving


def test_a_kinds_recreate_and_the_fields_it_leaves_unset() -> None:
    params = SimParams(restart_ticks=2, recreate_ticks=1, kinds=(KindProfile("redis", recreate_ticks=5),))
    assert params.downtimes("redis") == (2, 5, 0)
    assert params.downtimes("postgres") == (2, 1, 0)
    assert params.downtimes("service") == (2, 1, 0)
    box = SimSandbox(SMALL, 1, replace(QUIET, kinds=params.kinds))
    box.reset([0])
    assert ticks_down_after(box, CACHE, Repair.RECREATE) == 5


def test_a_services_own_restart_s_wins_over_its_kind() -> None:
    spec = topology_to_dict(SMALL)
    spec["services"]["db"]["restart_s"] = 2
    box = SimSandbox(topology_from_dict(spec), 1, replace(QUIET, kinds=(KindProfile("postgres", restart_ticks=6),)))
    box.reset([0])
    assert ticks_down_after(box, DB, Repair.RESTART) == 2


def test_profiles_are_one_per_kind_and_equal_however_listed() -> None:
    pg, redis = KindProfile("postgres", restart_ticks=4), KindProfile("redis", restart_ticks=0)
    assert SimParams(kinds=(pg, redis)) == SimParams(kinds=(redis, pg))
    with pytest.raises(ConfigError, match="expected one profile per kind, got 'postgres' twice"):
        SimParams(kinds=(pg, KindProfile("postgres", recreate_ticks=2)))


@pytest.mark.parametrize(
    ("profile", "says"),
    [
        ({"kind": "service", "restart_ticks": 2}, "got 'service'"),
        ({"kind": "mysql"}, "got 'mysql'"),
        ({"kind": "redis", "restart_ticks": -1},
         "kinds.redis.restart_ticks must be a whole number of ticks in [0, 3600], got -1"),
        ({"kind": "redis", "clean_disk_ticks": 1.5}, "kinds.redis.clean_disk_ticks must be a whole number"),
        ({"kind": "redis", "recreate_ticks": True}, "kinds.redis.recreate_ticks must be a whole number"),
    ],
)  # fmt: skip
def test_a_bad_profile_is_refused_naming_the_kind_and_field(profile: dict, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        KindProfile(**profile)
    assert says in str(caught.value)


# --- randomisation centred on the kind --------------------------------------------------------


def test_randomised_ranges_are_shifted_by_how_far_a_kind_is_from_the_generic_service() -> None:
    params = SimParams(
        restart_ticks=1,
        recreate_ticks=0,
        kinds=(KindProfile("postgres", restart_ticks=4, recreate_ticks=6), KindProfile("redis", restart_ticks=0)),
        randomise=Randomisation(restart_ticks=(0, 8), recreate_ticks=(2, 6)),
    )
    draws = params.draws(SMALL)
    repairs = (Repair.RESTART, Repair.RECREATE)
    ranges = {slot: [(int(draws.down_lo[slot, r]), int(draws.down_hi[slot, r])) for r in repairs]
              for slot in (DB, CACHE, WEB)}  # fmt: skip
    assert ranges[WEB] == [(0, 8), (2, 6)]  # the generic service: the ranges as written
    assert ranges[DB] == [(3, 11), (8, 12)]  # restart 3 slower, recreate 6 slower
    assert ranges[CACHE] == [(0, 7), (2, 6)]  # restart 1 quicker: 0 is as quick as it gets


def test_a_shifted_range_stops_at_the_longest_downtime() -> None:
    params = SimParams(kinds=(KindProfile("postgres", restart_ticks=MAX_DOWN_TICKS),), randomise=Randomisation())
    draws = params.draws(SMALL)
    assert (int(draws.down_lo[DB, Repair.RESTART]), int(draws.down_hi[DB, Repair.RESTART])) == (3599, 3600)


def test_drawn_downtimes_of_a_slow_kind_cover_its_shifted_range() -> None:
    params = replace(
        QUIET, kinds=(KindProfile("postgres", restart_ticks=5),), randomise=Randomisation(restart_ticks=(0, 4))
    )
    box = SimSandbox(SMALL, 128, params)
    box.reset(list(range(128)))
    restart = box.downtime()[:, :, Repair.RESTART]
    assert (restart[:, DB].min(), restart[:, DB].max()) == (4, 8)
    assert (restart[:, WEB].min(), restart[:, WEB].max()) == (0, 4)


def test_a_kinds_clean_disk_is_kept_under_randomisation() -> None:
    params = SimParams(kinds=(KindProfile("postgres", clean_disk_ticks=3),), randomise=Randomisation())
    box = SimSandbox(SMALL, 16, params)
    box.reset(list(range(16)))
    assert (box.downtime()[:, DB, Repair.CLEAN_DISK] == 3).all()


# --- --sim files and the calibration ----------------------------------------------------------


def test_a_sim_file_sets_a_kinds_downtimes(tmp_path: Path) -> None:
    path = tmp_path / "sim.yaml"
    path.write_text("restart_ticks: 2\nkinds: {postgres: {restart_ticks: 4}, redis: {clean_disk_ticks: 1}}\n")
    params, calibrated = SimParams.from_file(path), SimParams()
    _, pg_recreate, pg_clean = calibrated.downtimes("postgres")
    assert params.downtimes("postgres") == (4, pg_recreate, pg_clean)  # its recreate and clean_disk as calibrated
    redis_restart, redis_recreate, _ = calibrated.downtimes("redis")
    assert params.downtimes("redis") == (redis_restart, redis_recreate, 1)  # its restart as calibrated, not 2
    assert params.downtimes("nginx") == calibrated.downtimes("nginx")
    assert params.downtimes("service") == (2, calibrated.recreate_ticks, calibrated.clean_disk_ticks)
    assert params.profile("postgres").cpu_hog == calibrated.profile("postgres").cpu_hog  # the calibrated symptoms kept


BAD_KINDS = {
    "an unknown kind": ("kinds: {mysql: {restart_ticks: 3}}\n", ("field 'kinds'", "got 'mysql'", "postgres")),
    "the generic kind": ("kinds: {service: {restart_ticks: 3}}\n", ("field 'kinds'", "got 'service'")),
    "an unknown field": ("kinds: {postgres: {warmup: 3}}\n", ("kinds.postgres", "unknown field 'warmup'",
                                                             "restart_ticks, recreate_ticks, clean_disk_ticks")),
    "a negative time": ("kinds: {postgres: {restart_ticks: -2}}\n", ("kinds.postgres.restart_ticks", "got -2")),
    "a fraction of a tick": ("kinds: {redis: {recreate_ticks: 0.5}}\n", ("kinds.redis.recreate_ticks", "whole number")),
    "a check that is no yes or no": ("kinds: {redis: {check_in_page: 2}}\n", ("kinds.redis.check_in_page",
                                                                            "true or false", "got 2")),
    "a start-up range upside down": ("kinds: {app: {start_cpu: [0.9, 0.2]}}\n", ("kinds.app.start_cpu",
                                                                               "low <= high")),
    "a profile that is no mapping": ("kinds: {postgres: 4}\n", ("kinds.postgres", "expected a mapping", "int")),
    "kinds that are no mapping": ("kinds: [postgres]\n", ("field 'kinds'", "expected a mapping", "list")),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_KINDS)
def test_a_bad_kinds_section_is_one_line_naming_the_field_before_any_work(cli, tmp_path: Path, case: str) -> None:
    text, says = BAD_KINDS[case]
    path, out = tmp_path / "sim.yaml", tmp_path / "m.json"
    path.write_text(text)
    result = cli("evaluate", "--order", "runbook", "--sim", str(path), "--json", str(out))
    assert result.code == 2, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.err, result.err
    assert all(fragment in lines[0] for fragment in says), lines[0]
    assert not out.exists()


def test_the_calibrations_kinds_section_is_read() -> None:
    shipped = json.loads((ROOT / "sandbox" / "calibration.json").read_text())["sim_params"]
    section = {
        "postgres": {"restart_ticks": 4, "recreate_ticks": 6, "clean_disk_ticks": 2},
        "nginx": {"restart_ticks": 0},
    }
    params = SimParams.from_calibration({**shipped, "kinds": section})
    assert params.downtimes("postgres") == (4, 6, 2)
    assert params.downtimes("nginx") == (0, 0, 0)
    assert params.downtimes("redis") == (1, 0, 0)  # measured nowhere: the generic service's
    assert replace(params, kinds=SimParams().kinds) == SimParams()  # the rest as calibrated


def test_a_bad_kinds_section_of_the_calibration_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"calibration: kinds\.postgres: unknown field 'warm'"):
        SimParams.from_calibration({"kinds": {"postgres": {"warm": 1}}})


def test_a_sim_file_of_kinds_plays_the_store(cli, tmp_path: Path) -> None:
    slow = tmp_path / "slow.yaml"
    slow.write_text(yaml.safe_dump({"kinds": {k: {"restart_ticks": 6, "recreate_ticks": 6} for k in
                                              ("nginx", "app", "worker", "postgres", "redis")}}))  # fmt: skip
    availability = {}
    for name, extra in (("default", ()), ("slow", ("--sim", str(slow)))):
        out = tmp_path / f"{name}.json"
        result = cli("evaluate", "--env", "store", "--order", "oracle", "--episodes", "8", "--json", str(out), *extra)
        assert result.code == 0, result.err
        availability[name] = json.loads(out.read_text())["availability"]
    assert availability["slow"] < availability["default"]


# --- how a real-software kind shows its faults in the simulator --------------------------------

APP_ON_STORES = topology_from_dict({"name": "app-on-stores", "services": {
    "gate": {"kind": "nginx", "depends_on": ["app"], "entry": True},
    "app": {"kind": "app", "depends_on": ["db", "cache"]},
    "db": {"kind": "postgres", "disk_mb": 64},
    "cache": {"kind": "redis"},
}})  # fmt: skip


def injected(topology: Topology, target: str, fault: Fault, params: SimParams = QUIET) -> SimSandbox:
    box = SimSandbox(topology, 1, params)
    box.reset([3])
    box.advance()
    box.inject(np.array([topology.index[target]]), np.array([fault]))
    return box


def test_an_app_checks_its_database_with_its_client_so_a_full_disk_leaves_the_app_healthy() -> None:
    box = injected(APP_ON_STORES, "db", Fault.DISK_FULL)
    for _ in range(3):
        box.advance()
    health = dict(zip(APP_ON_STORES.names, box.health[0], strict=True))
    assert not health["db"]  # its own check writes, and the disk is full
    assert health["app"] and health["gate"]  # a query still answers: nothing above it notices


def test_an_app_fails_its_health_the_tick_its_database_dies() -> None:
    box = injected(APP_ON_STORES, "db", Fault.KILL)
    box.advance()
    health = dict(zip(APP_ON_STORES.names, box.health[0], strict=True))
    assert not health["db"] and not health["app"]  # asked now, not through a report a tick old
    assert health["gate"]  # nginx pings the app's /ping: it hears a tick later


def test_a_generic_service_hears_of_a_dead_dependency_through_its_report() -> None:
    shop = load_topology("shop")
    box = injected(shop, "cache", Fault.PAUSE)
    box.advance()
    assert not box.health[0, shop.index["cache"]]
    assert not box.health[0, shop.index["api"]]  # a frozen dependency does not answer the ping at all
    box2 = injected(shop, "db", Fault.DISK_FULL)
    box2.advance()
    assert not box2.health[0, shop.index["db"]] and box2.health[0, shop.index["api"]]  # the report is a tick old
    box2.advance()
    assert not box2.health[0, shop.index["api"]]


def test_a_postgres_under_a_cpu_hog_keeps_serving_while_a_generic_service_does_not() -> None:
    hogged = {"db": [], "api": []}
    for topology, target, key in ((APP_ON_STORES, "db", "db"), (load_topology("shop"), "api", "api")):
        box = injected(topology, target, Fault.CPU_HOG)
        for _ in range(40):
            box.advance()
            hogged[key].append((bool(box.slo[0]), float(box.observe()[0, topology.index[target], Feature.CPU])))
    assert sum(slo for slo, _ in hogged["db"]) >= 30  # PostgreSQL's processes keep their share (every tick)
    assert all(cpu >= 0.9 for _, cpu in hogged["db"])  # yet its CPU reads at the allowance
    assert sum(slo for slo, _ in hogged["api"]) <= 10  # the generic program misses the SLO (7 ticks in 8)


def test_the_downtime_a_privileged_policy_reads_counts_a_dead_process_a_tick_sooner() -> None:
    box = injected(load_topology("shop"), "db", Fault.KILL, replace(QUIET, restart_ticks=3))
    shop = load_topology("shop")
    assert box.downtime()[0, shop.index["db"], Repair.RESTART] == 2
    assert box.downtime()[0, shop.index["api"], Repair.RESTART] == 3


def calibration_measured() -> dict:
    """The shipped calibration's raw figures (sandbox/calibration.json)."""
    return json.loads((ROOT / "sandbox" / "calibration.json").read_text())["measured"]


def measured_per_kind() -> dict[str, tuple[Topology, dict]]:
    """Each kind's raw figures and the topology they were measured on; the generic service's
    (``service``) on shop."""
    calibration = calibration_measured()
    kinds = calibration["kinds"]
    real = {kind: (load_topology(kinds["topology"]), m) for kind, m in kinds["kinds"].items()}
    real["service"] = (load_topology("shop"), calibration)
    return real


@pytest.mark.parametrize(("saves", "downtime"), [(0, 3), (1, 2), (3, 0)])
def test_the_downtime_a_privileged_policy_reads_counts_what_a_killed_kinds_restart_saves(saves, downtime) -> None:
    params = replace(QUIET, kinds=(KindProfile("postgres", restart_ticks=3, dead_start_saves=saves),))
    box = injected(APP_ON_STORES, "db", Fault.KILL, params)
    assert box.downtime()[0, APP_ON_STORES.index["db"], Repair.RESTART] == downtime


def test_the_simulator_brings_a_killed_service_back_when_the_real_one_came_back() -> None:
    for kind, (topology, m) in measured_per_kind().items():
        for fault in (Fault.KILL, Fault.PAUSE):
            box = SimSandbox(topology, 1, SimParams())
            box.reset([0])
            measured = m["faults"][fault.label]
            simulated = measure_fault(box, fault, measured["target"])  # calibrate's own measurement
            assert simulated["repair"]["down_ticks"] == measured["repair"]["down_ticks"], (kind, fault.label)


@pytest.mark.parametrize(("kind", "saves", "first_up"), [("app", 0, False), ("service", 1, True)])
def test_a_new_process_reads_no_cpu_then_its_start_up_then_its_work(kind, saves, first_up) -> None:
    topology = topology_from_dict({"name": "one", "services": {"one": {"kind": kind, "entry": True}}})
    own = (
        () if kind == "service" else (KindProfile(kind, restart_ticks=1, dead_start_saves=saves, start_cpu=(0.7, 0.8)),)
    )
    params = replace(QUIET, start_cpu=(0.7, 0.8), kinds=own)  # the generic service: restart 1, saves 1
    box = injected(topology, "one", Fault.KILL, params)
    box.repair(np.array([0]), np.array([Repair.RESTART]))
    seen = []
    for _ in range(3):
        box.advance()
        f = box.observe()[0, 0]
        seen.append((bool(box.health[0, 0]), float(f[Feature.CPU]), float(f[Feature.NET_RX])))
    assert seen[0] == (first_up, 0.0, 0.0)  # the new container's counters: nothing to rate against yet
    assert seen[1][0] and 0.7 <= seen[1][1] <= 0.8  # its start-up
    assert seen[2][0] and seen[2][1] < 0.2  # then its ordinary work


def test_the_simulator_reads_a_new_process_as_the_real_one_read() -> None:
    targets = {**KIND_TARGETS, "service": START_TARGET}
    for kind, (topology, m) in measured_per_kind().items():
        box = SimSandbox(topology, 1, SimParams())
        box.reset([0])
        simulated = measure_starts(box, targets[kind], repeats=5)  # calibrate's own measurement
        measured = [cpu for seen in m["starts"].values() for cpu in seen]
        assert all(first == 0.0 for first, _ in measured), kind  # the real counters start anew
        low, high = min(cpu for _, cpu in measured), max(cpu for _, cpu in measured)
        for how, seen in simulated.items():
            for first, second in seen:
                assert first == 0.0 and low <= second <= high, (kind, how, first, second, low, high)


def test_a_full_postgres_serves_its_users_until_its_page_is_full_then_fails_them() -> None:
    params = replace(QUIET, kinds=(KindProfile("postgres", page_ticks=5),))
    box = injected(APP_ON_STORES, "db", Fault.DISK_FULL, params)  # the reset's and one tick's writes are in
    slo, db_health = [], []
    for _ in range(8):
        box.advance()
        slo.append(bool(box.slo[0]))
        db_health.append(bool(box.health[0, APP_ON_STORES.index["db"]]))
    assert slo == [True] * 3 + [False] * 5  # writes into the page it has, then it needs a new one
    assert not any(db_health)  # its own write check fails from the first tick


QUEUE_ON_DISK = topology_from_dict({"name": "queue-on-disk", "services": {
    "app": {"kind": "app", "depends_on": ["queue"], "entry": True},
    "queue": {"kind": "redis", "disk_mb": 32},
}})  # fmt: skip


@pytest.mark.parametrize(("check_in_page", "healthy"), [(True, [True] * 4 + [False] * 4), (False, [False] * 8)])
def test_a_full_store_whose_check_writes_into_its_page_passes_it_while_that_has_room(check_in_page, healthy) -> None:
    params = replace(QUIET, kinds=(KindProfile("redis", page_ticks=5, check_in_page=check_in_page),))
    box = injected(QUEUE_ON_DISK, "queue", Fault.DISK_FULL, params)
    slo, queue_health = [], []
    for _ in range(8):
        box.advance()
        slo.append(bool(box.slo[0]))
        queue_health.append(bool(box.health[0, QUEUE_ON_DISK.index["queue"]]))
    assert slo == [True] * 3 + [False] * 5  # its users' writes, as PostgreSQL's
    assert queue_health == healthy  # the check is the tick's first write: it fits a tick longer


def slo_once_the_db_disk_fills(box: SimSandbox, ticks: int) -> list[bool]:
    """Fill the db's disk now; the SLO over the next ``ticks`` ticks."""
    box.inject(np.array([APP_ON_STORES.index["db"]]), np.array([Fault.DISK_FULL]))
    slo = []
    for _ in range(ticks):
        box.advance()
        slo.append(bool(box.slo[0]))
    return slo


@pytest.mark.parametrize(("healthy_ticks", "served"), [(0, 9), (4, 5), (9, 0), (12, 7)])
def test_how_long_a_full_postgres_serves_depends_on_where_in_its_page_the_disk_filled(healthy_ticks, served) -> None:
    params = replace(QUIET, kinds=(KindProfile("postgres", page_ticks=10),))
    box = SimSandbox(APP_ON_STORES, 1, params)
    box.reset([3])  # a page of 10 ticks: the reset's writes are its first, and a new page starts at 11, 21...
    for _ in range(healthy_ticks):
        box.advance()
    slo = slo_once_the_db_disk_fills(box, 12)
    assert slo == [True] * served + [False] * (12 - served)


def test_a_recreated_postgres_starts_a_new_page() -> None:
    params = replace(QUIET, kinds=(KindProfile("postgres", page_ticks=10, recreate_ticks=0),))
    box = SimSandbox(APP_ON_STORES, 1, params)
    box.reset([3])
    for _ in range(8):
        box.advance()
    box.repair(np.array([APP_ON_STORES.index["db"]]), np.array([Repair.RECREATE]))
    box.advance()
    while not box.health[0, APP_ON_STORES.index["db"]]:  # its data restored from backup
        box.advance()
    slo = slo_once_the_db_disk_fills(box, 12)
    assert slo == [True] * 9 + [False] * 3  # a page of its own, not the 1 tick left in the one before


def test_a_full_disk_fails_a_generic_services_users_at_once() -> None:
    shop = load_topology("shop")
    box = injected(shop, "db", Fault.DISK_FULL)
    box.advance()
    assert not box.slo[0]


def test_a_cleaned_disk_ends_the_grace_count_anew() -> None:
    params = replace(QUIET, kinds=(KindProfile("postgres", page_ticks=2),))
    box = injected(APP_ON_STORES, "db", Fault.DISK_FULL, params)
    box.advance()
    box.repair(np.array([APP_ON_STORES.index["db"]]), np.array([Repair.CLEAN_DISK]))
    for _ in range(5):
        box.advance()
        assert box.slo[0] and box.health[0, APP_ON_STORES.index["db"]]


def hogged_app(**symptoms: float) -> SimParams:
    """QUIET, with an app whose CPU hog shows ``symptoms`` (its other fields as calibrated)."""
    hog = replace(SimParams().profile("app").cpu_hog, probe_fail=0.0, **symptoms)
    return replace(QUIET, kinds=(KindProfile("app", cpu_hog=hog),))


def test_a_starved_app_answering_late_misses_the_slo_with_no_errors_on_its_path() -> None:
    box = injected(APP_ON_STORES, "app", Fault.CPU_HOG, hogged_app(serve_fail=0.0, serve_slow=1.0))
    for _ in range(10):
        box.advance()
        errors = box.observe()[0, :, Feature.ERROR_RATE]
        assert not box.slo[0]
        assert errors[APP_ON_STORES.index["app"]] < 0.1 and errors[APP_ON_STORES.index["gate"]] < 0.1


def test_a_starved_app_failing_requests_shows_errors_at_it_and_its_callers() -> None:
    box = injected(APP_ON_STORES, "app", Fault.CPU_HOG, hogged_app(serve_fail=1.0, serve_slow=0.0))
    for _ in range(10):
        box.advance()
        errors = box.observe()[0, :, Feature.ERROR_RATE]
        assert not box.slo[0]
        assert errors[APP_ON_STORES.index["app"]] >= 0.6 and errors[APP_ON_STORES.index["gate"]] >= 0.6


def test_late_and_failed_requests_split_as_their_chances_say() -> None:
    box = injected(APP_ON_STORES, "app", Fault.CPU_HOG, hogged_app(serve_fail=0.25, serve_slow=0.5))
    served = late = failed = 0
    for _ in range(2000):
        box.advance()
        error = box.observe()[0, APP_ON_STORES.index["app"], Feature.ERROR_RATE]
        served += bool(box.slo[0])
        late += not box.slo[0] and error < 0.1
        failed += not box.slo[0] and error >= 0.6
    assert served + late + failed == 2000
    assert abs(served / 2000 - 0.25) < 0.04 and abs(late / 2000 - 0.5) < 0.04 and abs(failed / 2000 - 0.25) < 0.04


def test_chances_of_failing_and_of_answering_late_above_one_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"serve_fail \+ serve_slow must be at most 1"):
        hogged_app(serve_fail=0.6, serve_slow=0.5)


def test_the_simulator_serves_a_full_store_as_long_as_the_real_one_did() -> None:
    kinds = calibration_measured()["kinds"]
    measured = {kind: m["full_disk"] for kind, m in kinds["kinds"].items() if "full_disk" in m}
    assert set(measured) == {"postgres", "redis"}
    store, params = load_topology(kinds["topology"]), SimParams()
    for kind, full in measured.items():
        # Within the first page, fresh from the reset: past it the real servers' pages come irregularly.
        first_page = {after: served for after, served in full["served_ticks"].items()
                      if int(after) + 1 < params.page_ticks(kind)}  # fmt: skip
        assert first_page, kind
        for after, served in first_page.items():
            box = SimSandbox(store, 1, params)
            simulated = served_with_full_disk(box, full["target"], int(after))
            assert simulated == int(np.median(served)), (kind, after, served, simulated)


def test_the_simulator_reads_a_full_store_healthy_as_often_as_the_real_one_was() -> None:
    kinds = calibration_measured()["kinds"]
    store = load_topology(kinds["topology"])
    for kind in ("postgres", "redis"):
        real = kinds["kinds"][kind]["faults"]["disk_full"]
        box = SimSandbox(store, 1, SimParams())
        box.reset([0])
        simulated = measure_fault(box, Fault.DISK_FULL, real["target"])  # calibrate's own measurement
        for symptom in ("healthy", "slo"):
            assert simulated["symptoms"][symptom]["mean"] == real["symptoms"][symptom]["mean"], (kind, symptom)


# --- an app starting while its database is down (docs/design.md §5.1) ---------------------------


def restarted_app_with_db_down(db_down_ticks: int) -> tuple[SimSandbox, list[tuple[bool, bool, bool]]]:
    """Kill the db and the app, restart the app at once and the db ``db_down_ticks`` later; the
    app's (running, healthy, error rate of 1) every tick for 16 ticks. The killed app's restart
    takes no tick of its own here, so what follows it is all waiting."""
    box = injected(APP_ON_STORES, "db", Fault.KILL, replace(QUIET, kinds=(KindProfile("app", dead_start_saves=1),)))
    app, db = APP_ON_STORES.index["app"], APP_ON_STORES.index["db"]
    box.inject(np.array([app]), np.array([Fault.KILL]))
    box.advance()
    box.repair(np.array([app]), np.array([Repair.RESTART]))
    seen = []
    for tick in range(16):
        if tick == db_down_ticks:
            box.repair(np.array([db]), np.array([Repair.RESTART]))
        box.advance()
        f = box.observe()[0, app]
        seen.append((bool(f[Feature.RUNNING]), bool(box.health[0, app]), bool(f[Feature.ERROR_RATE] == 1.0)))
    return box, seen


def test_an_app_restarted_while_its_database_is_down_waits_then_exits() -> None:
    box, seen = restarted_app_with_db_down(db_down_ticks=99)
    running = [r for r, _, _ in seen]
    assert not any(ok for _, ok, _ in seen) and all(refused for _, _, refused in seen)
    first_down = running.index(False)
    assert all(running[:first_down]) and not any(running[first_down:])  # it waited, running, then exited for good
    assert first_down == 10  # it waits ten ticks not listening (system.APP_DB_WAIT_S), then exits
    assert box.faults[0, APP_ON_STORES.index["app"]] == Fault.KILL  # down until restarted again


def test_an_app_waiting_for_its_database_starts_when_the_database_answers() -> None:
    box, seen = restarted_app_with_db_down(db_down_ticks=4)
    assert all(running for running, _, _ in seen)  # it never exited
    assert any(ok for _, ok, _ in seen[5:]) and not any(ok for _, ok, _ in seen[:4])
    assert box.faults[0, APP_ON_STORES.index["app"]] == 0


@pytest.mark.parametrize(("saves", "healthy"), [(0, [False, False, True]), (1, [False, True, True]), (2, [True] * 3)])
def test_an_app_whose_database_is_up_starts_as_any_service_does(saves, healthy) -> None:
    params = replace(QUIET, kinds=(KindProfile("app", restart_ticks=2, dead_start_saves=saves),))
    box = injected(APP_ON_STORES, "app", Fault.KILL, params)
    box.repair(np.array([APP_ON_STORES.index["app"]]), np.array([Repair.RESTART]))
    seen = []
    for _ in range(3):
        box.advance()
        seen.append(bool(box.health[0, APP_ON_STORES.index["app"]]))
    assert seen == healthy  # its restart's two ticks, less what a killed one saves, and no wait


def test_only_an_app_waits_for_only_a_postgres() -> None:
    needs = APP_ON_STORES.start_needs
    i = APP_ON_STORES.index
    assert needs[i["app"], i["db"]] and needs.sum() == 1  # not for its Redis, nor nginx for the app


def test_calibration_splits_a_missed_slo_into_failed_and_late_requests() -> None:
    def stats(mean: float) -> dict[str, float]:
        return {"mean": mean, "p10": mean, "p50": mean, "p90": mean, "max": mean}

    measured = {"latency": stats(0.2), "cpu": stats(1.0), "net_rx": stats(0.01), "healthy": stats(0.625),
                "slo": stats(0.25), "failed": stats(0.125), "slow": stats(0.625)}  # fmt: skip
    symptoms = symptoms_from(measured)
    assert (symptoms["probe_fail"], symptoms["serve_fail"], symptoms["serve_slow"]) == (0.375, 0.125, 0.625)
    assert symptoms_from(measured, healthy=True)["serve_slow"] == 0.0


def test_a_page_is_the_ticks_from_the_reset_to_the_first_failed_request_of_a_disk_filled_early() -> None:
    # Filled 1 tick after the reset's own measurement and served 28 more: the 30th tick's write needed a page.
    assert page_ticks({"13": [16, 16, 16], "1": [28, 29, 28]}) == 30


def test_the_simulator_deploys_and_rolls_back_a_bad_release_as_the_real_one_did() -> None:
    for kind, (topology, m) in measured_per_kind().items():
        box = SimSandbox(topology, 1, SimParams())
        box.reset([0])
        measured = m["faults"]["bad_deploy"]
        simulated = measure_fault(box, Fault.BAD_DEPLOY, measured["target"])  # calibrate's own measurement
        assert simulated["deploy_down_ticks"] == measured["deploy_down_ticks"], kind
        assert simulated["repair"]["down_ticks"] == measured["repair"]["down_ticks"], kind
        for share in ("healthy", "slo", "failed"):
            got, real = simulated["symptoms"][share]["mean"], measured["symptoms"][share]["mean"]
            assert got == pytest.approx(real, abs=0.13), (kind, share)  # within a tick of eight


def test_the_simulator_holds_each_kinds_memory_and_connections_as_measured_at_work() -> None:
    for kind, (topology, m) in measured_per_kind().items():
        box = SimSandbox(topology, 1, SimParams())
        box.reset([0])
        box.advance()
        held = box.observe()[0]
        for slot, name in enumerate(topology.names):
            if topology.kinds[slot] != kind:
                continue
            assert held[slot, Feature.MEMORY] == pytest.approx(m_at_work(m, topology, "memory", name), abs=1e-3)
            connections = m_at_work(m, topology, "connections", name)
            assert held[slot, Feature.CONNECTIONS] == pytest.approx(connections, abs=1e-3)


def m_at_work(m: dict, topology: Topology, key: str, name: str) -> float:
    """A service's figure at work as calibrate measured it: its kind's target's on store, the
    median of the six generic services on shop."""
    calibration = calibration_measured()
    if topology.name == "shop":
        return float(np.median(list(calibration["baseline"][key].values())))
    return calibration["kinds"]["baseline"][key][m["target"]]
