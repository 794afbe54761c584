"""Slow starts and restores from backup on real containers (docs/design.md §4.1 ``restart_s``, §4.2):
a service with ``restart_s`` is down that many ticks after a restart, and a recreate that destroys
a volume's data fails the service until its data is restored, in ticks that grow with the data."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest

from deeplops.faults import Repair
from deeplops.observation import Feature
from deeplops.topology import Topology, topology_from_dict

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]

RESTART_S = 3


@pytest.fixture(scope="module")
def topology() -> Topology:
    return topology_from_dict({"name": "slowstart", "services": {
        "web": {"depends_on": ["slow", "fast", "db"], "entry": True},
        "slow": {"restart_s": RESTART_S},
        "fast": {},
        "db": {"disk_mb": 16},
    }})  # fmt: skip


@pytest.fixture(scope="module")
def sandbox(topology: Topology, docker_engine: None) -> Iterator:
    from deeplops.dockerbox.sandbox import DockerSandbox

    box = DockerSandbox(topology, name=f"dlslow-{os.getpid()}")
    yield box
    box.close()


@pytest.fixture
def box(sandbox):
    """A fresh, healthy system for each test, whose db holds the least data of the first seeds (a
    fifth of its volume: a restore of 9 ticks)."""
    from deeplops.dockerbox import stack

    seed = min(range(40), key=lambda s: stack.data_fractions(sandbox.topology, s)["db"])
    sandbox.reset([seed])
    return sandbox


def slot(box, service: str) -> int:
    return box.topology.index[service]


def repair(box, service: str, what: Repair) -> None:
    box.repair(np.array([slot(box, service)]), np.array([what]))


def ticks_until_healthy(box, service: str, most: int) -> int:
    """Ticks after a repair during which ``service`` read unhealthy (``most`` if it never recovered)."""
    for tick in range(most):
        box.advance()
        if box.health[0, slot(box, service)]:
            return tick
    return most


def test_a_fresh_system_with_a_slow_service_comes_up_healthy(box):
    box.advance()
    assert box.health.all() and box.slo[0]


def test_a_service_with_restart_s_is_unhealthy_for_about_that_many_ticks_after_a_restart(box):
    box.advance()
    repair(box, "slow", Repair.RESTART)
    down = ticks_until_healthy(box, "slow", most=3 * RESTART_S)
    assert RESTART_S - 1 <= down <= RESTART_S + 1, down
    assert box.observe()[0, slot(box, "slow"), Feature.RUNNING] == 1.0


def test_a_service_without_restart_s_recovers_within_a_tick_of_a_restart(box):
    box.advance()
    repair(box, "fast", Repair.RESTART)
    assert ticks_until_healthy(box, "fast", most=3 * RESTART_S) <= 1


def test_recreate_of_a_service_without_a_volume_restores_nothing(box):
    box.advance()
    repair(box, "fast", Repair.RECREATE)
    assert ticks_until_healthy(box, "fast", most=3 * RESTART_S) <= 1
    assert box.handle.restores == {}


def test_recreate_destroys_the_data_and_the_service_fails_until_its_restore_from_backup_brings_it_back(box):
    from deeplops.dockerbox import host, restore

    db = box.topology.services[slot(box, "db")]
    box.advance()
    before = restore.data_size(box.name, db)
    expected = restore.restore_ticks(before, db)
    assert before > 0.15 * restore.volume_bytes(db) and expected >= 6  # it holds data, restored in many ticks

    repair(box, "db", Repair.RECREATE)
    assert restore.data_size(box.name, db) == 0  # a fresh volume: the data is gone
    assert restore.planned_size(box.name, db) == before
    used, slos = [], []
    for _ in range(expected + 4):
        box.advance()
        if box.health[0, slot(box, "db")]:
            break
        used.append(float(box.observe()[0, slot(box, "db"), Feature.DISK_USED]))
        slos.append(bool(box.slo[0]))
    down = len(used)
    assert expected - 1 <= down <= expected + 1, (down, expected)
    # Its users failed throughout. The restore ends in real seconds, so in its last tick it may end
    # between the db's own health check and its users' requests: that tick may serve them.
    assert not any(slos[:-1])
    assert used == sorted(used) and used[-1] > used[0]  # the data came back steadily, written into the volume
    assert restore.data_size(box.name, db) == before  # and all of it
    assert restore.planned_size(box.name, db) is None and box.handle.restores == {}
    assert (host.volume_dir(box.name, "db") / restore.DATA_NAME).read_bytes()[-4096:] == b"\1" * 4096
