"""The closed sets of faults (chaos) and repairs (order), and their effect tables (docs/design.md §4.2).

Everything that needs to know what a repair does to a fault reads these tables; backends
implement the mechanisms, not the rules.
"""

from __future__ import annotations

from enum import IntEnum
from typing import TypeVar

import numpy as np

from deeplops.bounds import shown
from deeplops.errors import DeeplopsError


class Fault(IntEnum):
    """A fault the chaos agent can inject. 0 is reserved for "no fault" in state arrays."""

    KILL = 1
    PAUSE = 2
    CPU_HOG = 3
    DISK_FULL = 4
    NET_SATURATION = 5
    BAD_DEPLOY = 6
    MEMORY_LEAK = 7
    CONN_LEAK = 8

    @property
    def label(self) -> str:
        """The name used in files and on the command line, e.g. ``disk_full``."""
        return self.name.lower()

    @classmethod
    def parse(cls, text: object, error: type[DeeplopsError] = DeeplopsError) -> Fault:
        """The fault named ``text``; raises ``error`` naming the valid choices otherwise."""
        return _parse(cls, text, error, "fault")


class Repair(IntEnum):
    """A repair the order agent can take on one service. NOOP does nothing."""

    NOOP = 0
    RESTART = 1
    CLEAN_DISK = 2
    RATE_LIMIT = 3
    RECREATE = 4
    ROLLBACK = 5

    @property
    def label(self) -> str:
        """The name used in files and on the command line, e.g. ``clean_disk``."""
        return self.name.lower()

    @classmethod
    def parse(cls, text: object, error: type[DeeplopsError] = DeeplopsError) -> Repair:
        """The repair named ``text``; raises ``error`` naming the valid choices otherwise."""
        return _parse(cls, text, error, "repair")


_E = TypeVar("_E", Fault, Repair)


def _parse(enum: type[_E], text: object, error: type[DeeplopsError], what: str) -> _E:
    names = [m.label for m in enum]
    if isinstance(text, str) and text.lower() in names:
        return enum[text.upper()]
    raise error(f"unknown {what} {shown(text)}: expected one of {', '.join(names)}")


FAULTS: tuple[Fault, ...] = tuple(Fault)
REPAIRS: tuple[Repair, ...] = tuple(r for r in Repair if r is not Repair.NOOP)
"""The repairs that act on a service (NOOP excluded): the per-slot choices of the order agent."""

CLEARS: dict[Repair, frozenset[Fault]] = {
    Repair.NOOP: frozenset(),
    # A leaking client's connections close with its process: a new one holds only its pool.
    Repair.RESTART: frozenset({Fault.KILL, Fault.PAUSE, Fault.CPU_HOG, Fault.CONN_LEAK}),
    Repair.CLEAN_DISK: frozenset({Fault.DISK_FULL}),
    Repair.RATE_LIMIT: frozenset({Fault.NET_SATURATION}),
    # A fresh container and volume end everything but a flood, which comes from outside.
    # A recreate deploys the same release again: a broken one stays broken.
    Repair.RECREATE: frozenset({Fault.KILL, Fault.PAUSE, Fault.CPU_HOG, Fault.DISK_FULL, Fault.CONN_LEAK}),
    # The previous release, started anew: it ends what a restart ends too, where there is one. A
    # restart or a recreate starts the leaking release again: its memory is freed, for a while.
    Repair.ROLLBACK: frozenset(
        {Fault.KILL, Fault.PAUSE, Fault.CPU_HOG, Fault.BAD_DEPLOY, Fault.MEMORY_LEAK, Fault.CONN_LEAK}
    ),
}
"""Which faults each repair ends on the service it is applied to."""

PROPER_REPAIR: dict[Fault, Repair] = {
    Fault.KILL: Repair.RESTART,
    Fault.PAUSE: Repair.RESTART,
    Fault.CPU_HOG: Repair.RESTART,
    Fault.DISK_FULL: Repair.CLEAN_DISK,
    Fault.NET_SATURATION: Repair.RATE_LIMIT,
    Fault.BAD_DEPLOY: Repair.ROLLBACK,
    Fault.MEMORY_LEAK: Repair.ROLLBACK,
    Fault.CONN_LEAK: Repair.RESTART,
}
"""The cheapest repair that ends each fault: what the oracle does."""

FAULT_COST: dict[Fault, float] = {
    Fault.KILL: 1.0,
    Fault.PAUSE: 1.0,
    Fault.CPU_HOG: 1.0,
    Fault.DISK_FULL: 2.0,
    Fault.NET_SATURATION: 2.0,
    Fault.BAD_DEPLOY: 2.0,
    Fault.MEMORY_LEAK: 2.0,
    Fault.CONN_LEAK: 2.0,
}
"""Budget points a fault costs the chaos agent."""

REPAIR_COST: dict[Repair, float] = {
    Repair.NOOP: 0.0,
    # Every repair is a change to a running system, and one that ends nothing is risk for no gain:
    # priced high enough that "repairing" a service while it restarts is no cheap way to wait.
    Repair.RESTART: 0.05,
    Repair.CLEAN_DISK: 0.05,
    Repair.RATE_LIMIT: 0.05,
    Repair.RECREATE: 0.2,  # and a volume's data, which only a restore brings back
    Repair.ROLLBACK: 0.05,
}
"""Reward the order agent pays per repair, on the scale of one tick of full availability."""

FAULTS_NEEDING_DISK: frozenset[Fault] = frozenset({Fault.DISK_FULL})
"""Faults that only make sense on a service with a data volume."""
FAULTS_NEEDING_OWN_CODE: frozenset[Fault] = frozenset({Fault.MEMORY_LEAK})
"""Faults that only a service running our own program takes (``topology.CODE_KINDS``): a leak is
in a release's code, and real server software (PostgreSQL, Redis, nginx) is not ours to release."""
FAULTS_NEEDING_DATABASE: frozenset[Fault] = frozenset({Fault.CONN_LEAK})
"""Faults that only a client of a PostgreSQL server takes (``Topology.leaks_at``): the leak is of
connections to its database."""
REPAIRS_NEEDING_DISK: frozenset[Repair] = frozenset({Repair.CLEAN_DISK})
"""Repairs that only make sense on a service with a data volume. (Two sets, not one: Fault and
Repair codes are both small ints, and a mixed set would hold ``Repair.RECREATE`` as ``DISK_FULL``.)"""

# Dense forms of the tables for array code: index [repair, fault code] (code 0 = no fault).
CLEARS_TABLE = np.zeros((len(Repair), len(Fault) + 1), dtype=np.bool_)
for _repair, _faults in CLEARS.items():
    for _fault in _faults:
        CLEARS_TABLE[_repair, _fault] = True
FAULT_COST_TABLE = np.array([0.0] + [FAULT_COST[f] for f in Fault], dtype=np.float64)
REPAIR_COST_TABLE = np.array([REPAIR_COST[r] for r in Repair], dtype=np.float64)
PROPER_REPAIR_TABLE = np.array([0] + [PROPER_REPAIR[f] for f in Fault], dtype=np.int64)
