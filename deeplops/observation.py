"""The observation layout every backend emits: per service slot, symptoms only.

Observations never say which fault is active; they show what an operator's dashboards show.
Every backend writes exactly these features, with these units, so a policy trained on the
simulator reads a Docker stack correctly. All values are float32 in ``[0, 1]``.

Slots: a topology's services fill slots ``0..S-1`` in dependency order (dependencies first);
slots ``S..MAX_SLOTS-1`` are padding, all zeros, and masked out of every action.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
from gymnasium import spaces

from deeplops.topology import MAX_SERVICES

MAX_SLOTS = MAX_SERVICES
"""Service slots in every observation and action: topologies up to this size fit one policy."""


class Feature(IntEnum):
    """Index of each per-slot observation feature. Units and scaling in :data:`FEATURE_DOCS`."""

    PRESENT = 0
    HEALTHY = 1
    RUNNING = 2
    LATENCY = 3
    ERROR_RATE = 4
    DISK_USED = 5
    CPU = 6
    NET_RX = 7
    RESTARTS = 8
    SINCE_REPAIR = 9
    HAS_DISK = 10
    ENTRY = 11
    MEMORY = 12
    CONNECTIONS = 13
    SINCE_DEPLOY = 14


N_FEATURES = len(Feature)

FEATURE_DOCS: dict[Feature, str] = {
    Feature.PRESENT: "1 if the slot holds a service, 0 for padding",
    Feature.HEALTHY: "result of the service's dependency-aware /health probe: 1 pass, 0 fail "
    "(as reported: may be noisy and a few ticks late, see SimParams.probe_noise/probe_delay)",
    Feature.RUNNING: "1 if the service's process (container) is running, paused or not; 0 if exited or restarting",
    Feature.LATENCY: "latency of a /ping request this tick, in seconds, capped at 1 (a timeout reads 1; "
    "a refused connection reads 0)",
    Feature.ERROR_RATE: "fraction of requests through the service that failed this tick",
    Feature.DISK_USED: "fraction of the service's data volume in use (0 without a volume)",
    Feature.CPU: "CPU use of the service, as a fraction of its CPU allowance (its container's CPU limit), capped at 1",
    Feature.NET_RX: "network receive rate, as a fraction of the service's link capacity (8 Mbit/s on Docker)",
    Feature.RESTARTS: "recent restarts: count decayed with a 30-tick half-life, divided by 5, capped at 1",
    Feature.SINCE_REPAIR: "ticks since the last repair on this service, divided by 100, capped at 1 (1 if never)",
    Feature.HAS_DISK: "1 if the service has a data volume (static)",
    Feature.ENTRY: "1 if user traffic enters at this service (static)",
    Feature.MEMORY: "memory its processes hold (resident, not its volume's files), as a fraction of its "
    "memory allowance (128 MiB on Docker), capped at 1",
    Feature.CONNECTIONS: "connections in use as a fraction of the limit: server side for a database "
    "(PostgreSQL, Redis), its client pool for a service that uses one; 0 for the rest",
    Feature.SINCE_DEPLOY: "ticks since the service's last deploy (a release switched, a rollback included), "
    "divided by 100, capped at 1 (1 if none this episode)",
}

RESTARTS_SCALE = 5.0
SINCE_REPAIR_SCALE = 100.0


def order_observation_space() -> spaces.Dict:
    """What the order agent sees: per-slot symptoms and the dependency graph.

    - ``services``: ``(MAX_SLOTS, N_FEATURES)`` features as in :class:`Feature`.
    - ``adjacency``: ``(MAX_SLOTS, MAX_SLOTS)`` int8, ``[i, j] = 1`` when service i depends on j.
    """
    return spaces.Dict(
        {
            "services": spaces.Box(0.0, 1.0, (MAX_SLOTS, N_FEATURES), np.float32),
            "adjacency": spaces.Box(0, 1, (MAX_SLOTS, MAX_SLOTS), np.int8),
        }
    )


def chaos_observation_space() -> spaces.Dict:
    """What the chaos agent sees: the order agent's view plus its own state.

    - ``faulted``: ``(MAX_SLOTS,)``, 1 where a fault it injected is not yet recovered.
    - ``budget``: ``(2,)``, the fraction of its cost budget left and of concurrent-fault room left.
    """
    space = order_observation_space()
    return spaces.Dict(
        {
            **space.spaces,
            "faulted": spaces.Box(0.0, 1.0, (MAX_SLOTS,), np.float32),
            "budget": spaces.Box(0.0, 1.0, (2,), np.float32),
        }
    )
