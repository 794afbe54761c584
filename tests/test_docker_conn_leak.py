"""Connection leaks on real containers: a client's running program, set off by a signal, opens
connections to its PostgreSQL server and never closes them, until the server refuses new ones and
every client of it fails while the server itself stays healthy; a restart of the server relieves
them until the still-leaking client fills it again (the relapse); a restart of the leaking client
ends it. Only an app or a worker that uses a PostgreSQL server takes one. One sandbox (``store``
plus an app that uses only Redis) serves every test; the mechanism is in sandbox/README.md
(connection leaks)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest
from test_docker_kinds import healthy, within
from test_docker_releases import feature, info, serving, slot, work

from deeplops.errors import SandboxError
from deeplops.faults import Fault, Repair
from deeplops.observation import Feature
from deeplops.topology import load_topology, topology_from_dict, topology_to_dict

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]

FULL = 0.95
"""The database's connections feature once the leak has taken every slot its clients may take."""
FILL_TICKS = 15
"""Longest the leak is given to fill the database: from a third of it at 3 a tick, about seven."""
FAIL_TICKS = 4
"""Longest the clients may go on being served once the database reads full (they need new
connections all the time: their pools recycle them)."""
CLEAN_TICKS = 10
"""Ticks the database's connections are watched after the leaking client's restart."""
OTHER = {"app": "worker", "worker": "app"}
"""The other client of ``db`` on ``store``."""


@pytest.fixture(scope="module")
def box(docker_engine: None) -> Iterator:
    """``store`` plus ``sessions``, an app that uses only Redis (nothing calls it), reset once."""
    from deeplops.dockerbox.sandbox import DockerSandbox

    doc = topology_to_dict(load_topology("store"))
    doc["name"] = "store-conn-leaks"
    doc["services"]["sessions"] = {"kind": "app", "depends_on": ["cache"]}
    sandbox = DockerSandbox(topology_from_dict(doc), name=f"dlconn-{os.getpid()}")
    try:
        sandbox.reset([0])
        yield sandbox
    finally:
        sandbox.close()


def full(box) -> bool:
    """The database's connections read full, and it is running and healthy itself."""
    return feature(box, "db", Feature.CONNECTIONS) >= FULL and healthy(box, "db")


def starved(box, leaking: str) -> bool:
    """Every client of the database fails: a user request through the app, and the other client's
    health check; the database itself healthy, and full."""
    return full(box) and work(box, "app") >= 400 and not healthy(box, OTHER[leaking])


def relieved(box) -> bool:
    """Both clients healthy, the app serving, the database below full."""
    return serving(box, "app") and healthy(box, "worker") and feature(box, "db", Feature.CONNECTIONS) < FULL


@pytest.mark.parametrize("leaking", ["app", "worker"])
def test_a_leak_fills_the_database_until_every_client_fails_a_db_restart_relapses_and_a_client_restart_ends_it(
    box, leaking
):
    assert within(box, 5, lambda: relieved(box) and bool(box.slo[0]))
    at_work = []
    for _ in range(5):
        box.advance()
        at_work.append(feature(box, "db", Feature.CONNECTIONS))
    assert max(at_work) < 0.5, at_work  # 4 to 6 of its 27 client slots, read as the pools recycle
    box.inject(slot(box, leaking), np.array([Fault.CONN_LEAK]))  # checked: it holds more than its pool can
    assert feature(box, leaking, Feature.RUNNING) == 1.0  # a signal, not a deploy: the same process
    assert within(box, FILL_TICKS, lambda: full(box))
    assert within(box, FAIL_TICKS, lambda: starved(box, leaking))
    assert feature(box, leaking, Feature.CONNECTIONS) == 1.0  # it holds far more than its pools' sizes
    assert info(box, "db")["connections"]["used"] >= info(box, "db")["connections"]["limit"]

    # A restart of the database ends every connection: the clients are served again, for a while.
    assert not box.repair(slot(box, "db"), np.array([Repair.RESTART]))[0]
    assert within(box, 3, lambda: relieved(box))
    assert within(box, FILL_TICKS, lambda: starved(box, leaking))  # the relapse, with no new injection

    # A restart of the leaking client ends it: its leaked connections close with its process.
    assert box.repair(slot(box, leaking), np.array([Repair.RESTART]))[0]
    assert within(box, 3, lambda: relieved(box))
    after = []
    for _ in range(CLEAN_TICKS):
        box.advance()
        after.append(feature(box, "db", Feature.CONNECTIONS))
        assert healthy(box, "app") and healthy(box, "worker") and healthy(box, "db"), after
    assert max(after) < 0.5 and np.median(after) <= np.median(at_work) + 0.1, (at_work, after)


@pytest.mark.parametrize(
    ("service", "why"),
    [("db", "it is a postgres, not a client"), ("cache", "it is a redis, not a client"),
     ("gateway", "it is a nginx, not a client"), ("sessions", "it is an app that uses no PostgreSQL server")],
)  # fmt: skip
def test_a_leak_on_anything_but_a_client_of_postgres_is_refused_in_one_line(box, service, why):
    container = box.containers[service].id
    with pytest.raises(SandboxError, match=f"conn_leak on {service}: {why}") as err:
        box.inject(slot(box, service), np.array([Fault.CONN_LEAK]))
    assert "\n" not in str(err.value)
    assert box.containers[service].id == container and box.containers[service].status == "running"
    assert not box.faults[0].any()
