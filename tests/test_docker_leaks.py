"""Memory leaks on real containers: a leaking release's memory grows until the kernel OOM-kills its
container, which stays down; a restart starts the same release, relieved for a while, and it is
killed again (the relapse); a rollback ends it. Only our own programs take one: on PostgreSQL it
is refused. One sandbox (``store`` plus a generic service) serves every test; what the leaking
release does is in sandbox/README.md (releases)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest
from test_docker_kinds import within
from test_docker_releases import feature, info, serving, slot

from deeplops.errors import SandboxError
from deeplops.faults import Fault, Repair
from deeplops.observation import Feature
from deeplops.system import LEAK_MB_PER_TICK, MEMORY_MB
from deeplops.topology import load_topology, topology_from_dict, topology_to_dict

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]

KILL_TICKS = 15
"""Longest a leaking release is watched for the kernel to kill it: from ~20 MiB at 16 MiB a tick
it reaches the 128 MiB limit in about seven."""
TICK_SHARE = LEAK_MB_PER_TICK / MEMORY_MB
"""What a tick of the leak adds to the memory feature."""


@pytest.fixture(scope="module")
def box(docker_engine: None) -> Iterator:
    """``store`` and a generic service beside it without a volume (nothing calls it), reset once."""
    from deeplops.dockerbox.sandbox import DockerSandbox

    doc = topology_to_dict(load_topology("store"))
    doc["name"] = "store-leaks"
    doc["services"]["audit"] = {}
    sandbox = DockerSandbox(topology_from_dict(doc), name=f"dlleak-{os.getpid()}")
    try:
        sandbox.reset([0])
        yield sandbox
    finally:
        sandbox.close()


def oom_killed(box, service: str) -> bool:
    """Whether the engine says the service's container exited because the kernel OOM-killed it."""
    container = box.containers[service]
    container.reload()
    return container.status == "exited" and container.attrs["State"]["OOMKilled"] is True


def leaks_until_killed(box, service: str) -> list[float]:
    """Tick until the service stops running (at most KILL_TICKS); its memory feature each tick it ran."""
    memory = []
    for _ in range(KILL_TICKS):
        box.advance()
        if feature(box, service, Feature.RUNNING) == 0.0:
            break
        if memory and feature(box, service, Feature.MEMORY) == 0.0:
            continue  # killed, and the engine not told yet: it reads running for a tick (sandbox/README.md)
        memory.append(feature(box, service, Feature.MEMORY))
    assert feature(box, service, Feature.RUNNING) == 0.0, f"{service} still runs after {KILL_TICKS} ticks: {memory}"
    assert oom_killed(box, service) and not box.health[0, box.topology.index[service]]
    return memory


@pytest.mark.parametrize("service", ["audit", "app"])
def test_a_leak_grows_until_the_kernel_kills_it_a_restart_relapses_and_a_rollback_ends_it(box, service):
    assert within(box, 4, lambda: serving(box, service))
    at_work = feature(box, service, Feature.MEMORY)
    restarts = feature(box, service, Feature.RESTARTS)
    before = info(box, service)["release"]
    box.inject(slot(box, service), np.array([Fault.MEMORY_LEAK]))  # checked: it serves, its memory grows
    assert info(box, service)["release"] != before
    grew = leaks_until_killed(box, service)
    assert len(grew) >= 3 and grew == sorted(grew) and grew[-1] > at_work + 3 * TICK_SHARE
    box.advance()
    assert feature(box, service, Feature.RUNNING) == 0.0 and oom_killed(box, service)  # no restart policy
    assert feature(box, service, Feature.RESTARTS) > restarts  # the deploy started a new process
    assert feature(box, service, Feature.SINCE_DEPLOY) < 0.2

    # A restart starts the same release: its memory is freed, and it leaks again until killed.
    assert not box.repair(slot(box, service), np.array([Repair.RESTART]))[0]
    box.advance()
    assert feature(box, service, Feature.RUNNING) == 1.0
    assert feature(box, service, Feature.MEMORY) < at_work + 2 * TICK_SHARE < grew[-1]
    assert len(leaks_until_killed(box, service)) >= 2

    # A rollback goes back to the release before: its memory stays flat past when the leak was killed.
    assert box.repair(slot(box, service), np.array([Repair.ROLLBACK]))[0]
    assert within(box, 5, lambda: serving(box, service))
    assert info(box, service)["release"] == before
    flat = []
    for _ in range(len(grew) + 2):
        box.advance()
        flat.append(feature(box, service, Feature.MEMORY))
    assert feature(box, service, Feature.RUNNING) == 1.0 and max(flat) < at_work + TICK_SHARE, flat


def test_a_leak_on_server_software_is_refused_in_one_line(box):
    container, release = box.containers["db"].id, info(box, "db")["release"]
    with pytest.raises(SandboxError, match="memory_leak on db: it is a postgres") as err:
        box.inject(slot(box, "db"), np.array([Fault.MEMORY_LEAK]))
    assert "\n" not in str(err.value)
    assert box.containers["db"].id == container and info(box, "db")["release"] == release
