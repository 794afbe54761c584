"""The constants of the modelled system, stated once: every backend and the sidecar read them here.

The simulator's calibrated defaults (``SimParams``) start from these, and the Docker backend and
the sidecar measure with them, so the two backends model one system (``docs/design.md`` §4.3).
"""

from __future__ import annotations

from deeplops.faults import Repair
from deeplops.observation import SINCE_REPAIR_SCALE

TICK_S = 1.0
"""One tick of the game, in seconds of wall time on a real backend."""
PROBE_TIMEOUT_S = 0.5
"""Timeout of the /health probe, and of the pings to its direct dependencies a service makes for it."""
SLO_LATENCY_S = 0.5
"""A user request slower than this fails the SLO."""
RESTART_HALF_LIFE_TICKS = 30.0
"""Half-life, in ticks, of the recent-restarts count (the RESTARTS feature)."""
RESTART_DECAY = 0.5 ** (1.0 / RESTART_HALF_LIFE_TICKS)
"""Per-tick factor of the recent-restarts count at that half-life."""
COUNTS_AS_RESTART: frozenset[Repair] = frozenset({Repair.RESTART, Repair.RECREATE, Repair.ROLLBACK})
"""Repairs that start the service's process anew, and so count in its recent restarts."""
NEVER_REPAIRED = 10 * int(SINCE_REPAIR_SCALE)
"""Ticks since the last repair of a service never repaired: far past where the feature reads 1."""
DATA_FRACTION: tuple[float, float] = (0.2, 0.5)
"""Range of a volume's initial usage by real data, drawn per service when a system starts."""

MEMORY_MB = 128
"""Memory of every service, in MiB, besides its volume: what a service writes into its volume (a
restore of its data, a PostgreSQL cluster) is tmpfs, charged to its memory, so the volume's size
is added to it. Enough for every kind: under traffic PostgreSQL peaks at 75 MiB (35 of them its
cluster in the volume and its shared buffers), the others at 22 (sandbox/README.md)."""
LEAK_MB_PER_TICK = 16
"""Memory a leaking release takes and never frees, in MiB per tick of running: from a working
set of about 20 MiB it reaches ``MEMORY_MB`` in about seven ticks, and the kernel kills it."""

APP_DB_WAIT_S = 10.0
"""Seconds an app's new process waits for every PostgreSQL it uses to answer before it listens;
past them it exits (its connection pool's start fails), and stays down until restarted again."""

RESTORE_TICKS_PER_VOLUME = 40.0
"""Ticks to restore a full data volume from backup after a ``recreate`` destroyed it. The service
fails its users until the restore completes, in time proportional to its data (docs/design.md
§4.2): destroying data is an incident, never a shortcut."""

PG_CLIENT_CONNECTIONS = 27
"""The connections PostgreSQL in the sandbox gives its clients: ``max_connections`` 30, less the 3
``superuser_reserved_connections`` its own health check and counters use (the apps and workers
connect as an ordinary role). What a connection leak exhausts, and what the feature is a share of."""
CONN_LEAK_PER_TICK = 3
"""Connections a client with a connection leak opens to its PostgreSQL server and never closes,
per tick of running: from about a fifth of them in use at work, the server has none left for a
new client connection after six or seven ticks (sandbox/README.md)."""
