"""Releases on real containers: a bad deploy of each kind's broken release makes the running service
fail its requests, a restart and a recreate keep it failing (same release), a rollback ends it;
a routine deploy of a good release keeps it serving; memory and connections read from the real
cgroups and servers. One sandbox (``store`` plus a generic service) serves every test.
What each broken release does is in sandbox/README.md (releases)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest
from test_docker_kinds import within

from deeplops.faults import Fault, Repair
from deeplops.observation import Feature
from deeplops.topology import load_topology, topology_from_dict, topology_to_dict

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]

KIND_SERVICES = {"service": "audit", "postgres": "db", "redis": "queue", "nginx": "gateway", "app": "app",
                 "worker": "worker"}  # fmt: skip
"""The service of each kind that is deployed to."""


@pytest.fixture(scope="module")
def box(docker_engine: None) -> Iterator:
    """``store`` and a generic service beside it (nothing calls it), reset once."""
    from deeplops.dockerbox.sandbox import DockerSandbox

    doc = topology_to_dict(load_topology("store"))
    doc["name"] = "store-releases"
    doc["services"]["audit"] = {"disk_mb": 16}
    sandbox = DockerSandbox(topology_from_dict(doc), name=f"dlrel-{os.getpid()}")
    try:
        sandbox.reset([0])
        yield sandbox
    finally:
        sandbox.close()


def feature(box, service: str, f: Feature) -> float:
    return float(box.observe()[0, box.topology.index[service], f])


def slot(box, service: str) -> np.ndarray:
    return np.array([box.topology.index[service]])


def info(box, service: str) -> dict:
    """What the service's program says of itself (``/info``)."""
    from deeplops.dockerbox import stack

    return stack.http_json(box.handle.ips[service], "/info", 1.0)[1]


def work(box, service: str) -> int:
    """The status of one user request to the service (0: refused or timed out)."""
    from deeplops.dockerbox import stack

    return stack.http_json(box.handle.ips[service], "/work", 2.0)[0]


def failing(box, service: str, release: str) -> bool:
    """Running ``release``, broken, ready (its server up), every user request of the tick failed,
    and one now is answered with an error (not refused, as while it starts)."""
    if feature(box, service, Feature.RUNNING) != 1.0 or feature(box, service, Feature.ERROR_RATE) != 1.0:
        return False
    said = info(box, service)
    return (said.get("release"), said.get("broken"), said.get("ready")) == (release, True, True) and (
        400 <= work(box, service) < 600
    )


def serving(box, service: str) -> bool:
    """Running, healthy, and no user request of the tick failed."""
    return (
        feature(box, service, Feature.RUNNING) == 1.0
        and feature(box, service, Feature.ERROR_RATE) == 0.0
        and bool(box.health[0, box.topology.index[service]])
    )


@pytest.mark.parametrize("kind", list(KIND_SERVICES))
def test_a_bad_deploy_fails_requests_while_running_survives_a_restart_and_a_rollback_ends_it(box, kind):
    service = KIND_SERVICES[kind]
    assert within(box, 4, lambda: serving(box, service) and bool(box.slo[0]))
    before = info(box, service)
    box.inject(slot(box, service), np.array([Fault.BAD_DEPLOY]))  # checked: the broken release fails a request
    broken = info(box, service)["release"]
    assert broken != before["release"]
    assert within(box, 3, lambda: failing(box, service, broken))
    assert feature(box, service, Feature.SINCE_DEPLOY) < 0.05
    assert feature(box, service, Feature.RESTARTS) > 0.0  # a new process on the broken release, as in the sim

    assert not box.repair(slot(box, service), np.array([Repair.RESTART]))[0]  # the same release again
    assert within(box, 5, lambda: failing(box, service, broken))

    assert box.repair(slot(box, service), np.array([Repair.ROLLBACK]))[0]
    assert within(box, 5, lambda: serving(box, service) and bool(box.slo[0]))
    assert info(box, service)["release"] == before["release"] and info(box, service)["broken"] is False
    assert work(box, service) == 200


def test_a_recreate_redeploys_the_broken_release_and_a_rollback_then_ends_it(box):
    service = "cache"  # no volume: nothing to restore
    assert within(box, 4, lambda: serving(box, service))
    box.inject(slot(box, service), np.array([Fault.BAD_DEPLOY]))
    broken, old = info(box, service)["release"], box.containers[service].id
    assert not box.repair(slot(box, service), np.array([Repair.RECREATE]))[0]
    assert box.containers[service].id != old
    assert within(box, 5, lambda: failing(box, service, broken))
    assert box.repair(slot(box, service), np.array([Repair.ROLLBACK]))[0]
    assert within(box, 5, lambda: serving(box, service))


def test_a_routine_deploy_keeps_the_service_serving_and_resets_since_deploy(box):
    service = "app"
    assert within(box, 4, lambda: serving(box, service))
    before = info(box, service)["release"]
    old = box.containers[service].id
    restarts = feature(box, service, Feature.RESTARTS)
    release = box.deploy(service)
    assert release != before and box.containers[service].id != old
    box.advance()
    assert feature(box, service, Feature.SINCE_DEPLOY) == 0.0
    assert feature(box, service, Feature.RESTARTS) > restarts
    assert within(box, 4, lambda: serving(box, service) and bool(box.slo[0]))
    assert info(box, service) | {"connections": None} == {"service": service, "release": release, "broken": False,
                                                          "ready": True, "connections": None}  # fmt: skip
    box.advance()
    assert 0.0 < feature(box, service, Feature.SINCE_DEPLOY) < 0.1
    # The release before it is still there to go back to.
    box.repair(slot(box, service), np.array([Repair.ROLLBACK]))
    assert within(box, 4, lambda: serving(box, service))
    assert info(box, service)["release"] == before


def test_routine_deploys_at_a_rate_deploy_every_service_without_an_open_fault(box):
    box.inject(slot(box, "cache"), np.array([Fault.KILL]))
    box.deploy_rate = 1.0
    try:
        box.advance()  # every service draws a deploy; the killed one skips its turn
    finally:
        box.deploy_rate = 0.0
    since = {s: feature(box, s, Feature.SINCE_DEPLOY) for s in box.topology.names}
    assert since.pop("cache") > 0.0 and feature(box, "cache", Feature.RUNNING) == 0.0
    assert set(since.values()) == {0.0}
    box.repair(slot(box, "cache"), np.array([Repair.RESTART]))
    assert within(box, 5, lambda: bool(box.health.all()) and bool(box.slo[0]))


def test_a_rollback_with_no_release_before_is_a_no_op(box):
    service = "gateway"
    box.reset([1])  # every service on its first release
    assert within(box, 3, lambda: serving(box, service))
    old = box.containers[service].id
    assert not box.repair(slot(box, service), np.array([Repair.ROLLBACK]))[0]
    assert box.containers[service].id == old
    box.advance()
    assert feature(box, service, Feature.SINCE_DEPLOY) == 1.0  # no release switched
    assert info(box, service)["release"] == "r1" and serving(box, service)


def test_memory_reads_a_share_of_the_allowance_and_the_stores_count_their_clients(box):
    assert within(box, 3, lambda: bool(box.health.all()))
    box.advance()
    for service in box.topology.names:
        assert 0.0 < feature(box, service, Feature.MEMORY) < 1.0, service
    for service in ("db", "cache", "queue", "app", "worker"):  # servers, and the clients' pools
        assert feature(box, service, Feature.CONNECTIONS) > 0.0, service
    for service in ("gateway", "audit"):
        assert feature(box, service, Feature.CONNECTIONS) == 0.0, service
    served = info(box, "db")["connections"]
    # PostgreSQL's own count of its clients, over the slots they may take: max_connections (30) less
    # the superuser_reserved_connections (3) its own checks connect into.
    assert served["limit"] == 30 - 3 and 0 < served["used"] <= 30


def test_a_sandbox_attached_to_finds_the_release_history_and_rolls_back(box):
    from deeplops.dockerbox import mechanisms
    from deeplops.dockerbox.sandbox import DockerSandbox

    service = "queue"
    box.inject(slot(box, service), np.array([Fault.BAD_DEPLOY]))
    attached = DockerSandbox.attach(box.name)
    try:
        assert mechanisms.history(attached.handle, service) == mechanisms.history(box.handle, service)
        attached.repair(slot(attached, service), np.array([Repair.ROLLBACK]))
    finally:
        attached.close()
    box.handle.containers[service] = attached.containers[service]  # replaced by the other process
    box.handle.releases.pop(service)
    box.rewire(service)
    assert within(box, 4, lambda: serving(box, service))
    assert info(box, service)["broken"] is False
