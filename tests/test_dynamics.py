"""Dynamics that vary as real stacks do (docs/design.md §5.1): per-service start-up times, the
ranges training draws each episode's dynamics from, and the oracle that knows them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from deeplops.actions import REPAIRS_PER_SLOT, Role
from deeplops.errors import ConfigError
from deeplops.evaluate import Match, play
from deeplops.faults import Fault, Repair
from deeplops.game import Game
from deeplops.metrics import summarize
from deeplops.observation import Feature
from deeplops.policies import load_policy
from deeplops.selfplay import SelfPlayConfig, teacher
from deeplops.sim import Randomisation, SimParams, SimSandbox
from deeplops.topology import Topology, load_topology, topology_from_dict, topology_to_dict

QUIET = SimParams(probe_noise=0.0)
WIDE = Randomisation(restart_ticks=(0, 8), recreate_ticks=(2, 6), probe_noise=(0.0, 0.2), probe_delay=(0, 3))


@pytest.fixture(scope="module")
def shop() -> Topology:
    return load_topology("shop")


def with_restart_s(topology: Topology, service: str, seconds: float) -> Topology:
    spec = topology_to_dict(topology)
    spec["services"][service]["restart_s"] = seconds
    return topology_from_dict(spec)


def ticks_down_after(box: SimSandbox, slot: int, repair: Repair, env: int = 0) -> int:
    """Ticks the service in ``slot`` of ``env`` is not running after ``repair``."""
    slots = np.full(box.n_envs, slot)
    codes = np.zeros(box.n_envs, np.int64)
    codes[env] = repair
    box.repair(slots, codes)
    down = 0
    for _ in range(30):
        box.advance()
        down += box.observe()[env, slot, Feature.RUNNING] == 0.0
    return down


def test_a_services_restart_s_is_its_restart_downtime_in_the_sim(shop: Topology) -> None:
    slow = with_restart_s(shop, "db", 5)
    box = SimSandbox(slow, 1, QUIET)
    box.reset([0])
    assert ticks_down_after(box, slow.index["db"], Repair.RESTART) == 5
    assert ticks_down_after(box, slow.index["api"], Repair.RESTART) == QUIET.restart_ticks  # others as calibrated


def test_a_recreate_starts_the_service_too_so_it_takes_at_least_its_restart_s(shop: Topology) -> None:
    slow = with_restart_s(shop, "cache", 4)
    box = SimSandbox(slow, 1, QUIET)
    box.reset([0])
    assert ticks_down_after(box, slow.index["cache"], Repair.RECREATE) == 4


def test_without_ranges_every_env_gets_the_fields(shop: Topology) -> None:
    box = SimSandbox(shop, 8, SimParams(restart_ticks=2, recreate_ticks=3))
    box.reset(list(range(8)))
    stateless = [slot for slot in range(shop.n_services) if not shop.has_disk[slot]]
    downtime = box.downtime()
    assert (downtime[:, :, Repair.RESTART] == 2).all()
    assert (downtime[:, stateless, Repair.RECREATE] == 3).all()


def test_drawn_downtimes_stay_in_their_ranges_and_vary_by_env_and_service(shop: Topology) -> None:
    box = SimSandbox(shop, 64, replace(QUIET, randomise=WIDE))
    box.reset(list(range(64)))
    restart = box.downtime()[:, :, Repair.RESTART]
    assert restart.min() == 0 and restart.max() == 8  # 384 draws cover the range's ends
    assert len({tuple(row) for row in restart}) > 32  # envs differ, and services within an env
    stateless = [slot for slot in range(shop.n_services) if not shop.has_disk[slot]]
    recreate = box.downtime()[:, stateless, Repair.RECREATE]
    assert recreate.min() >= 2 and recreate.max() <= 6


def test_a_drawn_restart_time_is_what_the_service_really_takes(shop: Topology) -> None:
    box = SimSandbox(shop, 4, replace(QUIET, randomise=WIDE))
    box.reset([10, 11, 12, 13])
    slot = shop.index["api"]
    expected = box.downtime()[2, slot, Repair.RESTART]
    assert ticks_down_after(box, slot, Repair.RESTART, env=2) == expected


def test_a_services_own_restart_s_is_kept_under_randomisation(shop: Topology) -> None:
    slow = with_restart_s(shop, "db", 6)
    box = SimSandbox(slow, 32, replace(QUIET, randomise=WIDE))
    box.reset(list(range(32)))
    downtime = box.downtime()
    assert (downtime[:, slow.index["db"], Repair.RESTART] == 6).all()
    assert downtime[:, slow.index["api"], Repair.RESTART].std() > 0


def test_drawn_dynamics_depend_on_the_env_seed_alone(shop: Topology) -> None:
    params = replace(SimParams(), randomise=WIDE)
    alone = SimSandbox(shop, 1, params)
    alone.reset([7])
    batch = SimSandbox(shop, 3, params)
    batch.reset([3, 7, 9])
    np.testing.assert_array_equal(alone.downtime()[0], batch.downtime()[1])
    for _ in range(20):
        alone.advance()
        batch.advance()
    np.testing.assert_array_equal(alone.observe()[0], batch.observe()[1])


def test_drawn_probe_lag_shows_a_failure_that_many_ticks_late(shop: Topology) -> None:
    lag_of_env = []
    box = SimSandbox(shop, 16, replace(SimParams(), randomise=Randomisation(probe_delay=(0, 3), probe_noise=(0, 0))))
    box.reset(list(range(16)))
    slot = shop.index["db"]
    box.inject(np.full(16, slot), np.full(16, Fault.KILL))
    first = np.full(16, -1)
    for tick in range(8):
        box.advance()
        seen = box.observe()[:, slot, Feature.HEALTHY] == 0.0
        first = np.where((first < 0) & seen, tick, first)
    lag_of_env = first - first.min()
    assert set(lag_of_env.tolist()) == {0, 1, 2, 3}


def test_drawn_symptoms_stay_physical(shop: Topology) -> None:
    box = SimSandbox(shop, 32, replace(SimParams(), randomise=Randomisation(symptom_jitter=0.5)))
    box.reset(list(range(32)))
    slot = shop.index["api"]
    box.inject(np.full(32, slot), np.full(32, Fault.PAUSE))
    for _ in range(5):
        box.advance()
        features = box.observe()[:, : shop.n_services]
        assert ((features >= 0) & (features <= 1)).all()
        assert (features[:, slot, Feature.LATENCY] == 1.0).all()  # a frozen service still times out
        assert not box.health[:, slot].any()


def test_volumes_start_as_full_as_the_drawn_range_allows_and_the_calibrated_one_otherwise() -> None:
    store = load_topology("store")
    db = store.names.index("db")

    def disk(params: SimParams) -> np.ndarray:
        box = SimSandbox(store, 256, params)
        box.reset(list(range(256)))
        box.advance()
        return box.observe()[:, db, Feature.DISK_USED]

    calibrated = disk(SimParams())
    assert calibrated.min() >= 0.2 and calibrated.max() <= 0.5
    drawn = disk(replace(SimParams(), randomise=Randomisation(data_fraction=(0.6, 0.8))))
    assert drawn.min() >= 0.6 and drawn.max() <= 0.8 and np.ptp(drawn) > 0.1


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("restart_ticks", (3, 2), "0 <= low <= high"),
        ("restart_ticks", (0, 4000), "<= 3600"),
        ("probe_delay", (0.5, 2), "whole numbers"),
        ("probe_noise", (0.0, 0.7), "<= 0.5"),
        ("symptom_jitter", 0.9, "[0, 0.5]"),
        ("data_fraction", (0.2, 1.5), "<= 1.0"),
    ],
)
def test_bad_ranges_are_config_errors_naming_the_field(field: str, value: object, expected: str) -> None:
    with pytest.raises(ConfigError, match=rf"randomise\.{field} .*{expected[:8]}") as caught:
        Randomisation(**{field: value})  # type: ignore[arg-type]
    assert expected in str(caught.value)


def test_a_sim_file_sets_ranges_and_keeps_the_others(tmp_path) -> None:
    path = tmp_path / "wild.yaml"
    path.write_text("restart_ticks: 2\nrandomise: {restart_ticks: [1, 5]}\n")
    params = SimParams.from_file(path)
    assert params.restart_ticks == 2
    assert params.randomise == Randomisation(restart_ticks=(1, 5))


def test_a_sim_file_with_a_bad_range_names_it(tmp_path) -> None:
    path = tmp_path / "wild.yaml"
    path.write_text("randomise: {probe_delay: [0, 99]}\n")
    with pytest.raises(ConfigError, match=r"field 'randomise'.*probe_delay must satisfy 0 <= low <= high <= 60"):
        SimParams.from_file(path)


# --- what training plays under -----------------------------------------------------------------


def test_training_draws_its_dynamics_and_the_report_plays_them_as_given() -> None:
    config = SelfPlayConfig.from_files(sim=SimParams(restart_ticks=2))
    assert config.training_sim.randomise == Randomisation()
    assert config.training_sim.restart_ticks == 2
    assert config.sim is not None and config.sim.randomise is None
    fixed = SelfPlayConfig.from_files(randomise=False)
    assert fixed.training_sim.randomise is None


def test_imitation_takes_none_or_a_baseline_that_sees_what_the_agent_sees() -> None:
    assert teacher("none") is None
    assert teacher("runbook") == "runbook"
    with pytest.raises(ConfigError, match="--imitate: expected none or one of noop, random, autoheal, k8s, runbook"):
        teacher("oracle")


# --- the oracle knows the world ----------------------------------------------------------------


def repairs_by_kind(topology: Topology, params: SimParams) -> dict[tuple[bool, Repair], int]:
    """(whether the repaired service has a volume, repair) → count, over 16 episodes of the oracle."""
    game = Game(SimSandbox(topology, 16, params))
    game.reset(list(range(16)))
    oracle, chaos = load_policy("oracle", Role.ORDER), load_policy("random", Role.CHAOS)
    oracle.reset(16, seed=0)
    chaos.reset(16, seed=1)
    counts: dict[tuple[bool, Repair], int] = {}
    done = False
    while not done:
        actions = game.decide(oracle)
        taken = actions[actions > 0] - 1
        for slot, repair in zip(taken // REPAIRS_PER_SLOT, taken % REPAIRS_PER_SLOT + 1, strict=True):
            key = (bool(topology.has_disk[slot]), Repair(repair))
            counts[key] = counts.get(key, 0) + 1
        done = game.step(game.decide(chaos), actions)
    return counts


def test_the_oracle_recreates_a_stateless_service_when_that_is_quicker(shop: Topology) -> None:
    counts = repairs_by_kind(shop, SimParams(restart_ticks=5, recreate_ticks=0))
    assert counts.get((False, Repair.RECREATE), 0) > 0
    assert counts.get((False, Repair.RESTART), 0) == 0
    assert counts.get((True, Repair.RECREATE), 0) == 0  # never by destroying data
    assert counts.get((True, Repair.RESTART), 0) > 0


def test_the_oracle_restarts_when_a_recreate_is_no_quicker(shop: Topology) -> None:
    counts = repairs_by_kind(shop, SimParams(restart_ticks=2, recreate_ticks=2))
    assert counts.get((False, Repair.RECREATE), 0) == 0 and counts.get((True, Repair.RECREATE), 0) == 0


@pytest.mark.parametrize("order", ["runbook", "random", "k8s", "autoheal"])
def test_no_baseline_beats_the_oracle_under_drawn_dynamics(shop: Topology, order: str) -> None:
    params = replace(SimParams(), randomise=WIDE)

    def availability(name: str) -> float:
        match = Match(shop, load_policy(name, Role.ORDER), load_policy("random", Role.CHAOS), params=params)
        return summarize(play(match, episodes=16, seed=0)).availability

    assert availability(order) <= availability("oracle") + 0.01
