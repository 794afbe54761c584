"""Specification of SimSandbox: every fault and repair of docs/design.md §4.2, driven through the Sandbox protocol."""

from __future__ import annotations

import numpy as np
import pytest

from deeplops.errors import DeeplopsError
from deeplops.faults import Fault, Repair
from deeplops.observation import MAX_SLOTS, N_FEATURES, Feature
from deeplops.sim import SimParams, SimSandbox
from deeplops.topology import Topology, load_topology

QUIET = SimParams(probe_noise=0.0)
"""Probes never flip, so the reported HEALTHY feature is the true health."""

FULL = 0.98
"""Disk usage at which the default SimParams makes writes fail."""


@pytest.fixture(scope="module")
def shop() -> Topology:
    return load_topology("shop")


def make(topology: Topology, params: SimParams = QUIET, seeds: tuple[int, ...] = (0,)) -> SimSandbox:
    sandbox = SimSandbox(topology, n_envs=len(seeds), params=params)
    sandbox.reset(list(seeds))
    return sandbox


def inject(sandbox: SimSandbox, name: str, fault: Fault) -> None:
    sandbox.inject(np.array([sandbox.topology.index[name]]), np.array([fault]))


def repair(sandbox: SimSandbox, name: str, action: Repair) -> bool:
    return bool(sandbox.repair(np.array([sandbox.topology.index[name]]), np.array([action]))[0])


def advance(sandbox: SimSandbox, ticks: int = 1) -> None:
    for _ in range(ticks):
        sandbox.advance()


def feature(sandbox: SimSandbox, name: str, which: Feature) -> float:
    return float(sandbox.observe()[0, sandbox.topology.index[name], which])


def healthy(sandbox: SimSandbox, name: str) -> bool:
    return bool(sandbox.health[0, sandbox.topology.index[name]])


def fault_on(sandbox: SimSandbox, name: str) -> int:
    return int(sandbox.faults[0, sandbox.topology.index[name]])


# --- a fresh system -------------------------------------------------------------------------------


def test_reset_gives_a_healthy_system_with_slo_held(shop: Topology) -> None:
    sandbox = make(shop)
    assert sandbox.health.shape == (1, shop.n_services)
    assert sandbox.health.all()
    assert sandbox.slo.all()
    assert (sandbox.faults == 0).all()


def test_observation_has_padded_slots_all_zero(shop: Topology) -> None:
    sandbox = make(shop)
    advance(sandbox)
    obs = sandbox.observe()
    assert obs.shape == (1, MAX_SLOTS, N_FEATURES)
    assert (obs[0, : shop.n_services, Feature.PRESENT] == 1.0).all()
    assert (obs[0, shop.n_services :] == 0.0).all()


def test_observation_features_stay_in_unit_range(shop: Topology) -> None:
    sandbox = make(shop)
    for fault, name in [(Fault.KILL, "cache"), (Fault.DISK_FULL, "db"), (Fault.NET_SATURATION, "queue")]:
        inject(sandbox, name, fault)
    for _ in range(5):
        advance(sandbox)
        obs = sandbox.observe()
        assert obs.min() >= 0.0 and obs.max() <= 1.0


def test_reset_ends_every_fault(shop: Topology) -> None:
    sandbox = make(shop)
    inject(sandbox, "db", Fault.KILL)
    inject(sandbox, "api", Fault.NET_SATURATION)
    advance(sandbox, 2)
    sandbox.reset([0])
    assert (sandbox.faults == 0).all()
    advance(sandbox)
    assert sandbox.health.all()
    assert sandbox.slo.all()


# --- kill -----------------------------------------------------------------------------------------


def test_kill_stops_the_service_and_fails_its_health(shop: Topology) -> None:
    sandbox = make(shop)
    inject(sandbox, "db", Fault.KILL)
    advance(sandbox)
    assert fault_on(sandbox, "db") == Fault.KILL
    assert feature(sandbox, "db", Feature.RUNNING) == 0.0
    assert not healthy(sandbox, "db")


def test_restart_clears_kill_and_service_runs_again_a_tick_sooner_than_a_live_one(shop: Topology) -> None:
    sandbox = make(shop, SimParams(probe_noise=0.0, restart_ticks=2))
    inject(sandbox, "db", Fault.KILL)
    advance(sandbox)
    assert repair(sandbox, "db", Repair.RESTART)
    assert fault_on(sandbox, "db") == 0
    advance(sandbox)  # one tick down: a dead process has nothing to stop, only to start
    assert feature(sandbox, "db", Feature.RUNNING) == 0.0
    advance(sandbox)
    assert feature(sandbox, "db", Feature.RUNNING) == 1.0
    assert healthy(sandbox, "db")


def test_a_restart_of_a_live_service_keeps_it_down_restart_ticks(shop: Topology) -> None:
    sandbox = make(shop, SimParams(probe_noise=0.0, restart_ticks=2))
    inject(sandbox, "db", Fault.PAUSE)
    advance(sandbox)
    assert repair(sandbox, "db", Repair.RESTART)
    for _ in range(2):  # restart_ticks of downtime: the frozen process is stopped first
        advance(sandbox)
        assert feature(sandbox, "db", Feature.RUNNING) == 0.0
    advance(sandbox)
    assert feature(sandbox, "db", Feature.RUNNING) == 1.0


def test_recreate_clears_kill(shop: Topology) -> None:
    sandbox = make(shop)
    inject(sandbox, "cache", Fault.KILL)
    advance(sandbox)
    assert repair(sandbox, "cache", Repair.RECREATE)
    assert fault_on(sandbox, "cache") == 0
    advance(sandbox, 4)  # recreate_ticks (3) of downtime, then up
    assert feature(sandbox, "cache", Feature.RUNNING) == 1.0
    assert healthy(sandbox, "cache")


# --- pause ----------------------------------------------------------------------------------------


def test_pause_keeps_the_process_running_but_probes_time_out(shop: Topology) -> None:
    sandbox = make(shop)
    inject(sandbox, "cache", Fault.PAUSE)
    advance(sandbox)
    assert feature(sandbox, "cache", Feature.RUNNING) == 1.0
    assert feature(sandbox, "cache", Feature.LATENCY) == 1.0
    assert not healthy(sandbox, "cache")


def test_restart_clears_pause(shop: Topology) -> None:
    sandbox = make(shop)
    inject(sandbox, "cache", Fault.PAUSE)
    advance(sandbox)
    assert repair(sandbox, "cache", Repair.RESTART)
    assert fault_on(sandbox, "cache") == 0
    advance(sandbox, 2)
    assert feature(sandbox, "cache", Feature.LATENCY) < 0.5
    assert healthy(sandbox, "cache")


# --- cpu_hog --------------------------------------------------------------------------------------


def test_cpu_hog_drives_cpu_high(shop: Topology) -> None:
    sandbox = make(shop)
    advance(sandbox)
    assert feature(sandbox, "api", Feature.CPU) < 0.5
    inject(sandbox, "api", Fault.CPU_HOG)
    for _ in range(3):
        advance(sandbox)
        assert feature(sandbox, "api", Feature.CPU) >= 0.9


def test_restart_clears_cpu_hog(shop: Topology) -> None:
    sandbox = make(shop)
    inject(sandbox, "api", Fault.CPU_HOG)
    advance(sandbox)
    assert repair(sandbox, "api", Repair.RESTART)
    assert fault_on(sandbox, "api") == 0
    advance(sandbox, 3)
    assert feature(sandbox, "api", Feature.CPU) < 0.5
    assert healthy(sandbox, "api")


# --- disk_full ------------------------------------------------------------------------------------


def test_disk_full_fills_the_volume_within_a_few_ticks(shop: Topology) -> None:
    sandbox = make(shop)
    advance(sandbox)
    assert feature(sandbox, "db", Feature.DISK_USED) < FULL
    inject(sandbox, "db", Fault.DISK_FULL)
    advance(sandbox, 3)
    assert feature(sandbox, "db", Feature.DISK_USED) == pytest.approx(1.0, abs=0.02)


def test_disk_full_makes_writes_fail_so_health_fails(shop: Topology) -> None:
    sandbox = make(shop)
    inject(sandbox, "db", Fault.DISK_FULL)
    advance(sandbox, 3)
    assert feature(sandbox, "db", Feature.RUNNING) == 1.0
    assert not healthy(sandbox, "db")


def test_restart_does_not_clear_disk_full(shop: Topology) -> None:
    sandbox = make(shop)
    inject(sandbox, "db", Fault.DISK_FULL)
    advance(sandbox, 3)
    assert not repair(sandbox, "db", Repair.RESTART)
    assert fault_on(sandbox, "db") == Fault.DISK_FULL
    advance(sandbox, 3)
    assert feature(sandbox, "db", Feature.RUNNING) == 1.0  # the restart itself happened
    assert feature(sandbox, "db", Feature.DISK_USED) >= FULL
    assert not healthy(sandbox, "db")


def test_clean_disk_clears_disk_full_and_usage_drops_back(shop: Topology) -> None:
    sandbox = make(shop)
    data = float(sandbox.data_fraction[0, shop.index["db"]])
    inject(sandbox, "db", Fault.DISK_FULL)
    advance(sandbox, 3)
    assert repair(sandbox, "db", Repair.CLEAN_DISK)
    assert fault_on(sandbox, "db") == 0
    advance(sandbox)
    assert feature(sandbox, "db", Feature.DISK_USED) == pytest.approx(data, abs=1e-6)
    assert feature(sandbox, "db", Feature.DISK_USED) < FULL
    assert healthy(sandbox, "db")


def test_clean_disk_keeps_the_data(shop: Topology) -> None:
    sandbox = make(shop)
    before = float(sandbox.data_fraction[0, shop.index["db"]])
    inject(sandbox, "db", Fault.DISK_FULL)
    advance(sandbox, 3)
    repair(sandbox, "db", Repair.CLEAN_DISK)
    advance(sandbox)
    assert before > 0.0
    assert sandbox.data_fraction[0, shop.index["db"]] == before


def test_recreate_clears_disk_full_but_its_data_returns_only_by_a_restore(shop: Topology) -> None:
    sandbox = make(shop, SimParams(probe_noise=0.0, data_fraction=(0.25, 0.25), restore_ticks=40.0))
    queue_data = float(sandbox.data_fraction[0, shop.index["queue"]])
    inject(sandbox, "db", Fault.DISK_FULL)
    advance(sandbox, 3)
    assert repair(sandbox, "db", Repair.RECREATE)
    assert fault_on(sandbox, "db") == 0
    unhealthy = 0
    for _ in range(15):
        advance(sandbox)
        unhealthy += not healthy(sandbox, "db")
    assert unhealthy == 10  # a quarter of the volume at 40 ticks a volume
    assert healthy(sandbox, "db") and sandbox.slo[0]
    assert sandbox.data_fraction[0, shop.index["db"]] == 0.25
    assert feature(sandbox, "db", Feature.DISK_USED) == pytest.approx(0.25, abs=1e-6)  # the junk went
    assert sandbox.data_fraction[0, shop.index["queue"]] == queue_data  # only the recreated volume


# --- net_saturation -------------------------------------------------------------------------------


def test_net_saturation_floods_receive_and_fails_health(shop: Topology) -> None:
    sandbox = make(shop)
    inject(sandbox, "queue", Fault.NET_SATURATION)
    advance(sandbox)
    assert feature(sandbox, "queue", Feature.NET_RX) >= 0.9
    assert not healthy(sandbox, "queue")


def test_restart_does_not_clear_net_saturation(shop: Topology) -> None:
    sandbox = make(shop)
    inject(sandbox, "queue", Fault.NET_SATURATION)
    advance(sandbox)
    assert not repair(sandbox, "queue", Repair.RESTART)
    assert fault_on(sandbox, "queue") == Fault.NET_SATURATION
    advance(sandbox, 3)
    assert feature(sandbox, "queue", Feature.NET_RX) >= 0.9
    assert not healthy(sandbox, "queue")


def test_recreate_does_not_clear_net_saturation(shop: Topology) -> None:
    sandbox = make(shop)
    inject(sandbox, "queue", Fault.NET_SATURATION)
    advance(sandbox)
    assert not repair(sandbox, "queue", Repair.RECREATE)
    assert fault_on(sandbox, "queue") == Fault.NET_SATURATION
    advance(sandbox, 5)
    assert feature(sandbox, "queue", Feature.NET_RX) >= 0.9
    assert not healthy(sandbox, "queue")


def test_rate_limit_clears_net_saturation(shop: Topology) -> None:
    sandbox = make(shop)
    inject(sandbox, "queue", Fault.NET_SATURATION)
    advance(sandbox)
    assert repair(sandbox, "queue", Repair.RATE_LIMIT)
    assert fault_on(sandbox, "queue") == 0
    advance(sandbox)  # rate_limit_ticks (1): the link still drains, as flooded
    assert feature(sandbox, "queue", Feature.NET_RX) > 0.9
    assert not healthy(sandbox, "queue")
    assert feature(sandbox, "queue", Feature.RUNNING) == 1.0
    advance(sandbox)
    assert feature(sandbox, "queue", Feature.NET_RX) < 0.5
    assert healthy(sandbox, "queue")


def test_a_link_drains_rate_limit_ticks_after_the_flood_is_blocked(shop: Topology) -> None:
    sandbox = make(shop, SimParams(probe_noise=0.0, rate_limit_ticks=3))
    inject(sandbox, "queue", Fault.NET_SATURATION)
    advance(sandbox)
    repair(sandbox, "queue", Repair.RATE_LIMIT)
    seen = []
    for _ in range(4):
        advance(sandbox)
        seen.append(healthy(sandbox, "queue"))
    assert seen == [False, False, False, True]


def test_a_rate_limit_with_no_flood_drains_nothing(shop: Topology) -> None:
    sandbox = make(shop, SimParams(probe_noise=0.0, rate_limit_ticks=3))
    advance(sandbox)
    repair(sandbox, "queue", Repair.RATE_LIMIT)
    advance(sandbox)
    assert healthy(sandbox, "queue")


def test_restart_shows_in_the_recent_restarts_feature(shop: Topology) -> None:
    sandbox = make(shop)
    advance(sandbox)
    assert feature(sandbox, "cache", Feature.RESTARTS) == 0.0
    repair(sandbox, "cache", Repair.RESTART)
    advance(sandbox)
    assert feature(sandbox, "cache", Feature.RESTARTS) == pytest.approx(1 / 5, abs=0.01)  # one restart, scale 5


def test_repair_resets_the_since_repair_feature(shop: Topology) -> None:
    sandbox = make(shop)
    advance(sandbox)
    assert feature(sandbox, "queue", Feature.SINCE_REPAIR) == 1.0  # never repaired
    repair(sandbox, "queue", Repair.RATE_LIMIT)
    advance(sandbox)
    assert feature(sandbox, "queue", Feature.SINCE_REPAIR) == 0.0
    advance(sandbox)
    assert feature(sandbox, "queue", Feature.SINCE_REPAIR) == pytest.approx(0.01)


# --- cascades -------------------------------------------------------------------------------------


def test_killing_db_makes_its_dependents_unhealthy_within_a_few_ticks(shop: Topology) -> None:
    sandbox = make(shop)
    inject(sandbox, "db", Fault.KILL)
    advance(sandbox, 3)
    for name in ("api", "gateway", "worker"):
        assert not healthy(sandbox, name), name
        assert fault_on(sandbox, name) == 0  # symptoms, not faults
    for name in ("cache", "queue"):  # they do not depend on db
        assert healthy(sandbox, name), name


def test_cascade_climbs_one_dependency_hop_per_tick(shop: Topology) -> None:
    """api pings the dead db directly; gateway sees api's failed health one tick later."""
    sandbox = make(shop)
    inject(sandbox, "db", Fault.KILL)
    advance(sandbox)
    assert not healthy(sandbox, "api")
    assert healthy(sandbox, "gateway")
    advance(sandbox)
    assert not healthy(sandbox, "gateway")


def test_killing_db_fails_the_slo(shop: Topology) -> None:
    sandbox = make(shop)
    inject(sandbox, "db", Fault.KILL)
    advance(sandbox)
    assert not sandbox.slo[0]


def test_killing_a_service_off_the_entry_path_keeps_the_slo(shop: Topology) -> None:
    sandbox = make(shop)
    inject(sandbox, "worker", Fault.KILL)
    advance(sandbox, 3)
    assert not healthy(sandbox, "worker")
    assert sandbox.slo[0]


def test_restarting_db_alone_restores_dependents_and_slo(shop: Topology) -> None:
    sandbox = make(shop)
    inject(sandbox, "db", Fault.KILL)
    advance(sandbox, 3)
    repair(sandbox, "db", Repair.RESTART)
    advance(sandbox, 5)
    for name in ("db", "api", "gateway", "worker"):
        assert healthy(sandbox, name), name
    assert sandbox.slo[0]


# --- repairs that do not fit ----------------------------------------------------------------------


def test_mismatched_repair_clears_nothing(shop: Topology) -> None:
    sandbox = make(shop)
    inject(sandbox, "db", Fault.KILL)
    advance(sandbox)
    assert not repair(sandbox, "db", Repair.CLEAN_DISK)
    assert fault_on(sandbox, "db") == Fault.KILL
    advance(sandbox)
    assert feature(sandbox, "db", Feature.RUNNING) == 0.0


def test_repair_of_the_wrong_service_clears_nothing(shop: Topology) -> None:
    sandbox = make(shop)
    inject(sandbox, "db", Fault.KILL)
    advance(sandbox)
    assert not repair(sandbox, "api", Repair.RESTART)
    assert fault_on(sandbox, "db") == Fault.KILL


def test_noop_does_nothing(shop: Topology) -> None:
    with_noop, without = make(shop, seeds=(3,)), make(shop, seeds=(3,))
    for sandbox in (with_noop, without):
        inject(sandbox, "db", Fault.KILL)
        advance(sandbox)
    assert not repair(with_noop, "db", Repair.NOOP)
    assert fault_on(with_noop, "db") == Fault.KILL
    advance(with_noop, 3)
    advance(without, 3)
    np.testing.assert_array_equal(with_noop.observe(), without.observe())


def test_inject_on_a_slot_out_of_range_is_rejected(shop: Topology) -> None:
    sandbox = make(shop, seeds=(1, 2))
    outside = shop.n_services  # one past the last service
    with pytest.raises(DeeplopsError):
        sandbox.inject(np.array([outside, 0]), np.array([Fault.KILL, 0]))
    assert (sandbox.faults[1] == 0).all()


def test_repair_on_a_slot_out_of_range_is_rejected(shop: Topology) -> None:
    sandbox = make(shop, seeds=(1, 2))
    sandbox.inject(np.array([0, 0]), np.array([0, Fault.KILL]))
    with pytest.raises(DeeplopsError):
        sandbox.repair(np.array([shop.n_services, 0]), np.array([Repair.RESTART, 0]))
    assert sandbox.faults[1, 0] == Fault.KILL


def test_repair_takes_slots_and_codes_of_any_integer_type(shop: Topology) -> None:
    as_int64, as_int32 = make(shop, seeds=(1, 2)), make(shop, seeds=(1, 2))
    for sandbox, dtype in ((as_int64, np.int64), (as_int32, np.int32)):
        sandbox.inject(np.array([0, 1]), np.array([Fault.KILL, Fault.PAUSE]))
        cleared = sandbox.repair(np.array([0, 1], dtype), np.array([Repair.RESTART, Repair.RESTART], dtype))
        assert cleared.tolist() == [True, True]
        advance(sandbox, 2)
    np.testing.assert_array_equal(as_int64.observe(), as_int32.observe())


def test_repair_refuses_arrays_that_are_not_one_entry_per_env(shop: Topology) -> None:
    sandbox = make(shop, seeds=(1, 2))
    with pytest.raises(ValueError, match="shape"):
        sandbox.repair(np.zeros((2, 1), np.int64), np.zeros((2, 1), np.int64))
    with pytest.raises(ValueError, match="shape"):
        sandbox.repair(np.array([0]), np.array([Repair.RESTART]))


# --- determinism ----------------------------------------------------------------------------------


def trajectory(sandbox: SimSandbox, env: int = 0) -> list[np.ndarray]:
    """Observations of ``env`` over a fixed script of faults and repairs applied to every env."""
    n, index = sandbox.n_envs, sandbox.topology.index
    script = {
        1: ("inject", "db", Fault.DISK_FULL),
        2: ("inject", "api", Fault.CPU_HOG),
        5: ("repair", "db", Repair.CLEAN_DISK),
        6: ("repair", "api", Repair.RESTART),
    }
    frames = []
    for t in range(10):
        if t in script:
            kind, name, code = script[t]
            slots, codes = np.full(n, index[name]), np.full(n, int(code))
            if kind == "inject":
                sandbox.inject(slots, codes)
            else:
                sandbox.repair(slots, codes)
        sandbox.advance()
        frames.append(sandbox.observe()[env].copy())
    return frames


def test_same_seed_and_actions_give_identical_observations(shop: Topology) -> None:
    params = SimParams()  # noisy probes too
    a, b = make(shop, params, seeds=(11,)), make(shop, params, seeds=(11,))
    for x, y in zip(trajectory(a), trajectory(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_different_seeds_give_different_observations(shop: Topology) -> None:
    a, b = make(shop, seeds=(11,)), make(shop, seeds=(12,))
    assert any(not np.array_equal(x, y) for x, y in zip(trajectory(a), trajectory(b), strict=True))


def test_env_in_a_batch_follows_its_own_seed(shop: Topology) -> None:
    """Env 1 of a batch seeded [5, 6, 7] plays exactly as a single sandbox seeded 6."""
    batch, single = make(shop, SimParams(), seeds=(5, 6, 7)), make(shop, SimParams(), seeds=(6,))
    for x, y in zip(trajectory(batch, env=1), trajectory(single), strict=True):
        np.testing.assert_array_equal(x, y)


def test_a_large_batch_on_several_threads_plays_each_env_as_a_single_sandbox(monkeypatch) -> None:
    """Past ``PARALLEL_ENVS`` envs per thread the tick runs on numba's threads; the last env of each
    thread's run plays exactly as a single sandbox of its seed (store: every kind, a connection leak)."""
    import numba

    from deeplops import sim

    if numba.get_num_threads() < 2:
        pytest.skip("numba has one thread here")
    monkeypatch.setattr(sim, "PARALLEL_ENVS", 4)
    store = load_topology("store")
    params = SimParams()
    seeds = tuple(range(100, 112))
    batch = make(store, params, seeds=seeds)
    assert batch._chunks >= 2
    singles = {e: make(store, params, seeds=(seeds[e],)) for e in (0, 5, 6, 11)}
    worker, db = store.index["worker"], store.index["db"]
    for t in range(30):
        if t == 2:
            batch.inject(np.full(12, worker), np.full(12, int(Fault.CONN_LEAK)))
            for single in singles.values():
                single.inject(np.array([worker]), np.array([int(Fault.CONN_LEAK)]))
        if t == 15:
            batch.repair(np.full(12, db), np.full(12, int(Repair.RESTART)))
            for single in singles.values():
                single.repair(np.array([db]), np.array([int(Repair.RESTART)]))
        batch.advance()
        for e, single in singles.items():
            single.advance()
            np.testing.assert_array_equal(batch.observe()[e], single.observe()[0])
            assert batch.slo[e] == single.slo[0]


def test_env_in_a_batch_is_unaffected_by_other_envs_actions(shop: Topology) -> None:
    batch, single = make(shop, seeds=(5, 6, 7)), make(shop, seeds=(6,))
    db, cache = shop.index["db"], shop.index["cache"]
    batch.inject(np.array([cache, db, db]), np.array([Fault.KILL, 0, Fault.NET_SATURATION]))
    for _ in range(4):
        batch.advance()
        single.advance()
        np.testing.assert_array_equal(batch.observe()[1], single.observe()[0])
        assert batch.health[1].all()
    assert not batch.health[0].all()
    assert not batch.health[2].all()


# --- monitoring lag -------------------------------------------------------------------------------


def first_failure(series: list[bool]) -> int:
    return series.index(False)


def test_probe_delay_reports_health_failure_later(shop: Topology) -> None:
    sandbox = make(shop, SimParams(probe_noise=0.0, probe_delay=2))
    inject(sandbox, "db", Fault.KILL)
    true_health, reported = [], []
    for _ in range(6):
        advance(sandbox)
        true_health.append(healthy(sandbox, "db"))
        reported.append(feature(sandbox, "db", Feature.HEALTHY) == 1.0)
    assert first_failure(reported) - first_failure(true_health) == 2


def test_without_probe_delay_reported_health_is_true_health(shop: Topology) -> None:
    sandbox = make(shop)
    inject(sandbox, "db", Fault.KILL)
    for t in range(6):
        if t == 3:
            repair(sandbox, "db", Repair.RESTART)
        advance(sandbox)
        reported = sandbox.observe()[0, : shop.n_services, Feature.HEALTHY]
        np.testing.assert_array_equal(reported == 1.0, sandbox.health[0])
