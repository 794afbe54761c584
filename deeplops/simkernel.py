"""Compiled kernels of the simulator's tick: the hot path of everything.

The state is arrays shaped ``(n_envs, n_services)``, grouped by meaning into named records: the
systems as they stand (:class:`SystemState`), the topology (:class:`Layout`), how the system
behaves (:class:`Rules`, :class:`RepairRules`) and what a tick measured (:class:`Readings`). One
call handles the whole batch, so a single env costs one call (about a microsecond) instead of
dozens of small numpy operations, and a batch of thousands runs at compiled speed. Randomness
comes from a splitmix64 stream per env, so an env's trajectory depends only on its own seed,
never on the batch it runs in.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from deeplops.faults import Fault, Repair
from deeplops.observation import RESTARTS_SCALE, SINCE_REPAIR_SCALE, Feature

KILL, PAUSE = int(Fault.KILL), int(Fault.PAUSE)
DISK_FULL, NET_SATURATION, BAD_DEPLOY = int(Fault.DISK_FULL), int(Fault.NET_SATURATION), int(Fault.BAD_DEPLOY)
MEMORY_LEAK, CONN_LEAK = int(Fault.MEMORY_LEAK), int(Fault.CONN_LEAK)
RESTART, RATE_LIMIT, ROLLBACK = int(Repair.RESTART), int(Repair.RATE_LIMIT), int(Repair.ROLLBACK)
N_FAULT_CODES = len(Fault) + 1
"""Fault codes, 0 (none) included."""
OOM_KILLED = np.inf
"""``SystemState.held`` of a process the kernel killed for its leak: down until a repair starts it."""
DEAD_START_SAVES = 1
"""Ticks a restart of a killed generic service is quicker: there is nothing to stop, only to
start. On Docker the generic program comes back the same tick when restarted after a kill, and a
tick later after a pause or a CPU hog, whose stop takes part of the tick (sandbox/calibration.json).
A kind's own figure is measured the same way (``sim.KindProfile.dead_start_saves``)."""

F_HEALTHY, F_RUNNING, F_LATENCY = int(Feature.HEALTHY), int(Feature.RUNNING), int(Feature.LATENCY)
F_ERROR, F_DISK, F_CPU, F_NET = int(Feature.ERROR_RATE), int(Feature.DISK_USED), int(Feature.CPU), int(Feature.NET_RX)
F_RESTARTS, F_SINCE = int(Feature.RESTARTS), int(Feature.SINCE_REPAIR)
F_MEMORY, F_CONNECTIONS, F_DEPLOY = int(Feature.MEMORY), int(Feature.CONNECTIONS), int(Feature.SINCE_DEPLOY)

# Columns of the symptom table: one row per fault code (0 = none), plus a row for a process
# that is not running (killed, or down while restarting). Each symptom is drawn uniformly
# from [LO, HI] every tick; PROBE_FAIL and SERVE_FAIL are chances that its /health, and a user
# request through it, fail; SERVE_SLOW that such a request is answered but too late for the SLO.
# Built by SimParams.symptoms().
LAT_LO, LAT_HI, CPU_LO, CPU_HI, NET_LO, NET_HI, PROBE_FAIL, SERVE_FAIL, SERVE_SLOW = range(9)
DOWN_ROW = N_FAULT_CODES
N_SYMPTOMS = 9

# Columns of the repair table: what each repair's mechanism does to a service (one row per
# Repair code). Built by SimParams.repairs(). The downtime column is the calibrated default; a
# sandbox's envs read theirs from Dynamics.down, which may be drawn per episode and service.
R_DOWN_TICKS, R_WIPES_JUNK, R_WIPES_DATA, R_COUNTS_RESTART = range(4)
N_REPAIR_EFFECTS = 4


class SystemState(NamedTuple):
    """The simulated systems as they stand; the kernels update these arrays in place."""

    fault: np.ndarray
    """``(n_envs, n_services)`` int8: the fault open on each service (0 = none)."""
    down: np.ndarray
    """``(n_envs, n_services)`` int32: ticks each service stays down, restarting, before it runs."""
    since: np.ndarray
    """``(n_envs, n_services)`` int32: ticks since each service's last repair."""
    junk: np.ndarray
    """``(n_envs, n_services)`` float64: fraction of each volume a disk_full fault has written."""
    data: np.ndarray
    """``(n_envs, n_services)`` float64: fraction of each volume holding real data."""
    restarts: np.ndarray
    """``(n_envs, n_services)`` float64: recent restarts of each service, decaying every tick."""
    restore: np.ndarray
    """``(n_envs, n_services)`` int32: ticks of a restore from backup left once the service runs
    (after a recreate destroyed its data); it fails its users until then."""
    drain: np.ndarray
    """``(n_envs, n_services)`` int32: ticks a link flooded until a rate_limit still takes to drain;
    the service times out as flooded meanwhile."""
    page: np.ndarray
    """``(n_envs, n_services)`` int32: ticks of writes into the page a store is filling (of its
    kind's ``Layout.page_ticks``); a full page needs new space before the next write."""
    started: np.ndarray
    """``(n_envs, n_services)`` int32: readings left that show a new process's start (2 after a
    restart or a recreate): the first has nothing to rate its CPU and network counters against,
    the second shows what its start-up burned (``Layout.start_cpu``)."""
    waited: np.ndarray
    """``(n_envs, n_services)`` int32: ticks a new process has waited, not listening, for the
    stores it needs to start (``Layout.start_needs``); -1 once it listens (or needs none)."""
    health: np.ndarray
    """``(n_envs, n_services)`` bool: each /health result of the last tick (what a ping answers)."""
    history: np.ndarray
    """``(n_envs, probe_delay + 1, n_services)`` bool: recent health results, a ring by tick."""
    rng: np.ndarray
    """``(n_envs,)`` uint64: each env's splitmix64 stream."""
    deployed: np.ndarray
    """``(n_envs, n_services)`` int32: ticks since each service's last deploy (a rollback is one)."""
    behind: np.ndarray
    """``(n_envs, n_services)`` int32: releases each service has before its current one, what a
    rollback can go back to (0: none, a rollback does nothing)."""
    held: np.ndarray
    """``(n_envs, n_services)`` float64: memory a leaking release has taken since its process
    started, as a share of the allowance; ``OOM_KILLED`` once the kernel killed it for that."""
    conns: np.ndarray
    """``(n_envs, n_services)`` float64: connections a client with a connection leak holds open at
    its PostgreSQL server (``Layout.leaks_at``), as a share of the server's connection limit."""


class Layout(NamedTuple):
    """The topology as the kernels read it: the same in every env."""

    has_disk: np.ndarray
    """``(n_services,)`` bool: services with a data volume."""
    entries: np.ndarray
    """``(n_services,)`` bool: services user traffic enters through (where the SLO is measured)."""
    adjacency: np.ndarray
    """``(n_services, n_services)`` bool: ``[s, d]`` when s depends directly on d (then d < s)."""
    deps: np.ndarray
    """``(n_services, n_services)`` int64: row s lists the slots s depends on directly, ascending,
    in its first ``n_deps[s]`` columns (``adjacency`` as lists: the tick walks edges, not the matrix)."""
    n_deps: np.ndarray
    """``(n_services,)`` int64: how many direct dependencies each service has."""
    direct: np.ndarray
    """``(n_services, n_services)`` bool: the dependencies s checks now with their own client
    (whether d answers), not through d's last health report (``Topology.direct_checks``)."""
    page_ticks: np.ndarray
    """``(n_services,)`` int32: ticks of writes one page of each service's data files holds (its
    kind's): with its disk full it serves until that page is full. 0: every write needs new space
    (the generic program), so a full disk fails its users at once."""
    check_in_page: np.ndarray
    """``(n_services,)`` bool: services whose own health check writes into that page too (Redis):
    with the disk full it passes while the page has room, and a tick longer (the tick's first
    write); the others' check needs new space and fails at once."""
    start_needs: np.ndarray
    """``(n_services, n_services)`` bool: ``[s, d]`` when a new process of s listens only once d
    answers (an app and every PostgreSQL it uses), and exits after ``Rules.start_wait`` ticks."""
    start_cpu: np.ndarray
    """``(n_services, 2)`` float64: the CPU range a new process of each service reads in its second
    reading, its start-up (its kind's: loading its code, opening connections, recovery)."""
    rows: np.ndarray
    """``(n_services, DOWN_ROW + 1)`` int64: the symptom-table row service s reads per fault code
    (and when down): its kind's own where it has one (``SimParams.symptoms``)."""
    memory: np.ndarray
    """``(n_services,)`` float64: the memory each service's processes hold while it runs, as a
    fraction of its allowance (its kind's, measured at work)."""
    connections: np.ndarray
    """``(n_services,)`` float64: the share of its connection limit each service has in use while
    it runs (a database's served connections, a client's pool; 0 for the rest)."""
    volume_room: np.ndarray
    """``(n_services,)`` float64: each volume's size as a share of the memory allowance. The volume
    is tmpfs, and the container's limit is the allowance plus its size; the data in it was written
    by the host (not charged to the container), so a leaking process is killed only once its
    memory reaches ``1 + volume_room``."""
    leaks_at: np.ndarray
    """``(n_services,)`` int64: the PostgreSQL server (a lower slot) each service's connections leak
    into when it has a connection leak, or -1 (``Topology.leaks_at``)."""


class Rules(NamedTuple):
    """How the simulated system behaves each tick: ``SimParams`` as the kernels read them."""

    probe_timeout: float
    """Timeout of the /health probe and of its pings, in seconds."""
    slo_latency: float
    """A user request slower than this, in seconds, fails the SLO."""
    disk_fill: float
    """Fraction of a volume a disk_full fault writes per tick."""
    disk_full_at: float
    """Disk usage at and above which writes fail."""
    start_wait: int
    """Ticks a starting process waits for the stores it needs (``Layout.start_needs``) before it exits."""
    restart_decay: float
    """Per-tick factor of the recent-restarts count."""
    leak: float
    """Memory a leaking release takes per tick of running, as a share of the allowance."""
    leak_first: float
    """Share of a tick's leak a new leaking process has taken by its first reading: it starts
    part-way through the tick, once its deploy or restart is done."""
    conn_leak: float
    """Connections a leaking client opens and keeps per tick, as a share of its server's limit."""
    conn_leak_first: float
    """Ticks of connection leak taken by the first reading after the leak starts (after the
    injection, or once its server is back from a restart)."""
    conn_full_at: float
    """Share of its connection limit in use at and above which a server has none left for its
    clients' pools: they take a slot back as often as they close one, and lose it to the leak."""
    data_lo: float
    """Least initial usage of a volume by real data."""
    data_hi: float
    """Most initial usage of a volume by real data."""


class Dynamics(NamedTuple):
    """How each env's system behaves this episode: set at reset by :func:`start`, from
    :class:`Draws` (drawn from the env's own stream when randomised, the calibration otherwise)."""

    down: np.ndarray
    """``(n_envs, n_services, len(Repair))`` int32: ticks each repair keeps each service down."""
    symptoms: np.ndarray
    """``(n_envs, rows, N_SYMPTOMS)`` float64: the symptom table (``Layout.rows`` says which row each
    service reads per fault code, and when down);
    ``(1, ...)`` when every env shares the calibrated table (less memory to stream each tick)."""
    probe_noise: np.ndarray
    """``(n_envs,)`` float64: chance that a reported health result is flipped."""
    probe_delay: np.ndarray
    """``(n_envs,)`` int64: ticks between a health result and its report (< the history's depth)."""
    deploy_rate: np.ndarray
    """``(n_envs,)`` float64: chance per tick that a service with no open fault gets a benign deploy."""


class Draws(NamedTuple):
    """What :func:`start` sets each env's :class:`Dynamics` from: the calibration, and the
    ranges it is drawn from per episode (and per service) when ``randomise`` is set."""

    randomise: bool
    """Draw from the ranges below; otherwise every env gets ``down_lo``, ``symptoms``, ``noise_lo`` and ``delay_lo``."""
    down_lo: np.ndarray
    """``(n_services, len(Repair))`` int64: least downtime of each repair on each service."""
    down_hi: np.ndarray
    """``(n_services, len(Repair))`` int64: most downtime (inclusive)."""
    symptoms: np.ndarray
    """``(rows, N_SYMPTOMS)`` float64: the calibrated symptom table (``SimParams.symptoms``)."""
    jitter: float
    """Each symptom number strictly inside (0, 1) is scaled by a factor drawn from [1 - jitter, 1 + jitter]."""
    noise_lo: float
    """Least probe noise."""
    noise_hi: float
    """Most probe noise."""
    delay_lo: int
    """Least monitoring lag, in ticks."""
    delay_hi: int
    """Most monitoring lag, in ticks (inclusive)."""
    deploys_lo: float
    """Least benign-deploy rate (per service and tick)."""
    deploys_hi: float
    """Most benign-deploy rate."""


class RepairRules(NamedTuple):
    """What each repair does to a service, by Repair code."""

    effects: np.ndarray
    """``(len(Repair), N_REPAIR_EFFECTS)`` float64: downtime, what it wipes, whether it is a restart."""
    clears: np.ndarray
    """``(len(Repair), len(Fault) + 1)`` bool: ``[repair, fault]`` when the repair ends the fault."""
    restore_full: float
    """Ticks to restore a full volume from backup after a repair destroyed its data."""
    drain_ticks: int
    """Ticks a flooded link takes to drain once a rate_limit ends the flood."""
    dead_saves: np.ndarray
    """``(n_services,)`` int64: ticks a restart of each service is quicker when it was killed (its
    kind's; ``DEAD_START_SAVES`` for the generic program)."""


class Readings(NamedTuple):
    """What the last tick measured, written by :func:`advance`."""

    features: np.ndarray
    """``(n_envs, MAX_SLOTS, N_FEATURES)`` float32: the observed symptoms of every service."""
    slo: np.ndarray
    """``(n_envs,)`` bool: whether user traffic through every entry service succeeded."""


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)


@njit(cache=True, inline="always")
def _next(z: np.uint64) -> tuple[np.uint64, float]:
    """One step of a splitmix64 stream whose state is held in a local: the next state and its float
    in [0, 1). The tick keeps each env's state in a register for its draws and stores it once,
    rather than storing and reloading the array at every draw."""
    z = z + _GOLDEN
    x = (z ^ (z >> _S30)) * _MIX1
    x = (x ^ (x >> _S27)) * _MIX2
    x = x ^ (x >> _S31)
    return z, float(x >> _S11) * (1.0 / 9007199254740992.0)


@njit(cache=True, inline="always")
def uniform(rng: np.ndarray, e: int) -> float:
    """Next float in [0, 1) of env e's splitmix64 stream (``_next`` on its stored state)."""
    z, u = _next(rng[e])
    rng[e] = z
    return u


@njit(cache=True, inline="always")
def _first_invalid(slots: np.ndarray, codes: np.ndarray, n_services: int, n_codes: int) -> int:
    """The first env whose slot or code is out of range (code 0 always passes), or -1."""
    for e in range(codes.shape[0]):
        if codes[e] != 0 and not (0 <= slots[e] < n_services and 0 < codes[e] < n_codes):
            return e
    return -1


@njit(cache=True)
def inject(state: SystemState, dyn: Dynamics, slots: np.ndarray, codes: np.ndarray) -> int:
    """Start fault ``codes[e]`` on ``slots[e]`` (code 0: nothing). Effects unfold in ``advance``,
    but for a bad release's own: a broken or leaking release is deployed now (a restart onto it).

    Returns the first env whose slot or code is out of range (nothing is applied), or -1.
    """
    fault = state.fault
    bad = _first_invalid(slots, codes, fault.shape[1], N_FAULT_CODES)
    if bad >= 0:
        return bad
    for e in range(fault.shape[0]):
        if codes[e] > 0:
            fault[e, slots[e]] = codes[e]
            if codes[e] == BAD_DEPLOY or codes[e] == MEMORY_LEAK:  # a release: deployed now
                _deploy(state, dyn, e, slots[e])
    return -1


@njit(cache=True, inline="always")
def _deploy(state: SystemState, dyn: Dynamics, e: int, s: int) -> None:
    """Switch service s of env e to a new release and start it on that one: down as long as a
    deploy takes (a rollback's downtime), a new process. (A rollback goes back the same way, as a
    repair: ``repair``.)"""
    state.behind[e, s] += 1
    state.deployed[e, s] = 0
    state.down[e, s] = max(state.down[e, s], dyn.down[e, s, ROLLBACK])  # a rollback's time: a deploy's
    state.restarts[e, s] += 1.0
    state.waited[e, s] = 0
    state.started[e, s] = 2
    state.held[e, s] = 0.0
    state.conns[e, s] = 0.0


@njit(cache=True)
def repair(
    state: SystemState, rules: RepairRules, dyn: Dynamics, slots: np.ndarray, codes: np.ndarray, cleared: np.ndarray
) -> int:
    """Apply repair ``codes[e]`` to ``slots[e]``; ``cleared[e]`` says whether it ended a fault.
    A repair that wipes a volume holding data starts a restore of that data from backup.

    Returns the first env whose slot or code is out of range (nothing is applied), or -1.
    """
    fault = state.fault
    bad = _first_invalid(slots, codes, fault.shape[1], rules.clears.shape[0])
    if bad >= 0:
        return bad
    for e in range(fault.shape[0]):
        code = codes[e]
        cleared[e] = False
        if code == 0:
            continue
        s = slots[e]
        state.since[e, s] = 0
        if code == ROLLBACK:
            if state.behind[e, s] == 0:
                continue  # no release before this one: nothing to go back to
            state.behind[e, s] -= 1
            state.deployed[e, s] = 0
        downtime = dyn.down[e, s, code]
        if code in (RESTART, ROLLBACK) and fault[e, s] == KILL:
            downtime = max(0, downtime - rules.dead_saves[s])
        if code == RATE_LIMIT and fault[e, s] == NET_SATURATION:
            state.drain[e, s] = rules.drain_ticks
        if rules.clears[code, fault[e, s]]:
            fault[e, s] = 0
            cleared[e] = True
        effect = rules.effects[code]
        state.down[e, s] = max(state.down[e, s], downtime)
        if effect[R_WIPES_JUNK]:
            state.junk[e, s] = 0.0
        if effect[R_WIPES_DATA]:
            state.page[e, s] = 0  # its data files start anew
        if effect[R_WIPES_DATA] and state.data[e, s] > 0.0:
            # A fresh, empty volume: the data comes back only by a restore that grows with it.
            need = int(np.ceil(state.data[e, s] * rules.restore_full))
            state.restore[e, s] = max(state.restore[e, s], need)
        state.restarts[e, s] += effect[R_COUNTS_RESTART]
        if effect[R_COUNTS_RESTART]:
            state.waited[e, s] = 0  # a new process: it starts once what it needs answers
            state.started[e, s] = 2
            state.held[e, s] = 0.0  # with none of the old one's leaked memory
            state.conns[e, s] = 0.0  # and its connections closed with it
    return -1


@njit(cache=True, inline="always")
def _leak_connections(state: SystemState, layout: Layout, rules: Rules, e: int, taken: np.ndarray) -> None:
    """Env e's connection leaks, at the start of its tick: each leaking client that listens opens
    ``Rules.conn_leak`` more connections to its server while the server has room for them, and a
    server whose processes died (down, killed) holds none of them any more. ``taken[d]`` is the
    share of server d's connection limit the leaks now hold."""
    fault, down, waited, conns = state.fault, state.down, state.waited, state.conns
    leaks_at, base = layout.leaks_at, layout.connections
    n = fault.shape[1]
    for d in range(n):
        taken[d] = 0.0
    for s in range(n):
        d = leaks_at[s]
        if d >= 0:
            if down[e, d] > 0 or fault[e, d] == KILL:
                conns[e, s] = 0.0
            taken[d] += conns[e, s]
    for s in range(n):
        d = leaks_at[s]
        if d < 0 or fault[e, s] != CONN_LEAK or down[e, s] > 0 or waited[e, s] >= 0:
            continue
        if down[e, d] > 0 or fault[e, d] == KILL or fault[e, d] == PAUSE:
            continue  # nothing accepts its connections: its attempts fail
        step = rules.conn_leak * (rules.conn_leak_first if conns[e, s] == 0.0 else 1.0)
        step = max(0.0, min(step, 1.0 - base[d] - taken[d]))
        conns[e, s] += step
        taken[d] += step


@njit(cache=True)
def advance(state: SystemState, layout: Layout, rules: Rules, dyn: Dynamics, tick: int, readings: Readings) -> None:
    """One tick of every env (``advance_envs`` of them all)."""
    advance_envs(state, layout, rules, dyn, tick, readings, 0, state.fault.shape[0])


@njit(cache=True, parallel=True)
def advance_parallel(
    state: SystemState, layout: Layout, rules: Rules, dyn: Dynamics, tick: int, readings: Readings, chunks: int
) -> None:
    """One tick of every env, the batch cut into ``chunks`` runs of envs ticked on numba's threads.
    Envs share nothing (each has its own random stream), so the result is ``advance``'s."""
    n_envs = state.fault.shape[0]
    for c in prange(chunks):
        advance_envs(state, layout, rules, dyn, tick, readings, c * n_envs // chunks, (c + 1) * n_envs // chunks)


@njit(cache=True)
def advance_envs(
    state: SystemState, layout: Layout, rules: Rules, dyn: Dynamics, tick: int, readings: Readings, first: int, end: int
) -> None:
    """One tick of envs ``first`` to ``end`` (excluded): faults act, health and the SLO are measured,
    symptoms written.

    Health is dependency-aware as a real service's /health is: its own process answers, its
    disk takes a write, and every direct dependency answers a shallow ping. A ping returns the
    dependency's last health result, so a failure climbs the graph one hop per tick, and so
    does recovery. An app or worker checks a PostgreSQL or Redis with its own client instead
    (``Layout.direct``): whether the store answers now, not its own health report (a store with a
    full disk still answers a query). User requests (the SLO) are deep: they fail at once if any service on the
    path cannot serve, as errors where one failed them and as late answers where one was only slow.
    A service restoring its data runs but serves nothing until done; a store with a full disk
    serves until the page it is filling is full; a new app process listens only once its
    PostgreSQL answers, and exits if it waited ``Rules.start_wait`` ticks in vain. A leaking
    release takes ``Rules.leak`` more memory each tick it runs, and is killed once the memory
    limit is reached (the allowance, plus the room its tmpfs volume leaves): down until repaired.
    A client with a connection leak fills its PostgreSQL server's connection limit; once it is full
    the server, healthy itself, refuses every client's new connections: each of its clients (whose
    pools need new ones every tick) fails its check and its requests there, and a new one cannot
    start.
    """
    fault, down, since, junk, data = state.fault, state.down, state.since, state.junk, state.data
    restarts, health, history, rng, restore = state.restarts, state.health, state.history, state.rng, state.restore
    drain, page, started, waited, deployed = state.drain, state.page, state.started, state.waited, state.deployed
    held, volume_room, leak, leak_first = state.held, layout.volume_room, rules.leak, rules.leak_first
    rows, page_ticks, direct, needs = layout.rows, layout.page_ticks, layout.direct, layout.start_needs
    deps, n_deps = layout.deps, layout.n_deps
    has_disk, entries, check_in_page = layout.has_disk, layout.entries, layout.check_in_page
    start_cpu, memory, connections = layout.start_cpu, layout.memory, layout.connections
    leaks_at, conns = layout.leaks_at, state.conns
    probe_timeout, slo_latency, disk_fill = rules.probe_timeout, rules.slo_latency, rules.disk_fill
    disk_full_at, start_wait, restart_decay = rules.disk_full_at, rules.start_wait, rules.restart_decay
    feats, slo = readings.features, readings.slo
    n = fault.shape[1]
    depth = history.shape[1]
    write = tick % depth
    latency = np.empty(n)
    responsive = np.empty(n, dtype=np.bool_)
    answers = np.empty(n, dtype=np.bool_)
    path_ok = np.empty(n, dtype=np.bool_)
    path_failed = np.empty(n, dtype=np.bool_)
    previous = np.empty(n, dtype=np.bool_)
    taken = np.zeros(n)
    full = np.zeros(n, dtype=np.bool_)
    leaky = False  # a topology with a client that can leak connections
    for s in range(n):
        leaky = leaky or leaks_at[s] >= 0
    table, shared = dyn.symptoms, dyn.symptoms.shape[0] == 1
    for e in range(first, end):
        se = 0 if shared else e
        rate = dyn.deploy_rate[e]
        z = rng[e]  # the env's stream, in a local for the tick (see _next)
        for s in range(n):
            previous[s] = health[e, s]
        if rate > 0.0:  # no draw at rate 0, so a world without benign deploys keeps its stream
            for s in range(n):
                # A benign release, where no incident is open (one is not deployed over): a clue
                # to a bad deploy, not a proof.
                if fault[e, s] == 0 and down[e, s] == 0:
                    z, u = _next(z)
                    if u < rate:
                        _deploy(state, dyn, e, s)
        if leaky:
            _leak_connections(state, layout, rules, e, taken)
            for d in range(n):
                full[d] = taken[d] > 0.0 and connections[d] + taken[d] >= rules.conn_full_at
        # Health as it was probe_delay ticks ago (no division where the ring holds one tick).
        read = 0 if depth == 1 else (tick - dyn.probe_delay[e]) % depth
        noise = dyn.probe_noise[e]
        slo_ok = True
        for s in range(n):
            f = fault[e, s]
            running = f != KILL and down[e, s] == 0
            if f == MEMORY_LEAK and running:
                if held[e, s] != OOM_KILLED:
                    held[e, s] += leak * (leak_first if held[e, s] == 0.0 else 1.0)
                    if memory[s] + held[e, s] >= 1.0 + volume_room[s]:
                        held[e, s] = OOM_KILLED
                running = held[e, s] != OOM_KILLED
            listening = running
            if running and waited[e, s] >= 0:  # a new process: it listens once what it needs answers
                ready = True
                for d in range(s):
                    if needs[s, d] and not (responsive[d] and answers[d] and not full[d]):
                        ready = False
                if ready:
                    waited[e, s] = -1
                else:
                    waited[e, s] += 1
                    listening = False
                    if waited[e, s] > start_wait:  # it gives up and exits: down until restarted
                        fault[e, s] = KILL
                        f = KILL
                        running = False
                        waited[e, s] = -1
            awake = listening and f != PAUSE
            restoring = running and restore[e, s] > 0
            code = f if listening else DOWN_ROW
            if running and f == 0 and drain[e, s] > 0:
                code = NET_SATURATION  # still draining: as flooded
            r = rows[s, code]
            z, u = _next(z)
            lat = table[se, r, LAT_LO] + (table[se, r, LAT_HI] - table[se, r, LAT_LO]) * u
            used = 0.0
            if has_disk[s]:
                if f == DISK_FULL:
                    junk[e, s] += disk_fill
                used = min(1.0, data[e, s] + junk[e, s])
            disk_ok = used < disk_full_at and not restoring
            writes_ok = disk_ok
            check_ok = disk_ok
            if page_ticks[s] > 0 and awake and not restoring:
                # Writes go into the page it is filling; a full one needs space for the next. The
                # health check is the tick's first write: it still fits where the users' overflow.
                if page[e, s] >= page_ticks[s] and used < disk_full_at:
                    page[e, s] = 0
                writes_ok = page[e, s] < page_ticks[s]
                if page[e, s] <= page_ticks[s]:
                    page[e, s] += 1
                    check_ok = check_ok or check_in_page[s]
            ok = awake and check_ok and lat < probe_timeout
            probe_fail = table[se, r, PROBE_FAIL]
            if ok and probe_fail > 0.0:
                z, u = _next(z)
                if u < probe_fail:
                    ok = False
            serves = awake and writes_ok and lat < slo_latency
            failed = not serves  # not served here: the request fails (an error), it is not merely late
            serve_fail, serve_slow = table[se, r, SERVE_FAIL], table[se, r, SERVE_SLOW]
            if serves and serve_fail + serve_slow > 0.0:
                z, u = _next(z)
                if u < serve_fail + serve_slow:
                    serves = False
                    failed = u < serve_fail
            for k in range(n_deps[s]):  # dependencies occupy lower slots
                d = deps[s, k]
                # A ping reads d's last health report; a direct check asks d itself, now.
                seen = answers[d] if direct[s, d] else previous[d]
                if not (responsive[d] and latency[d] < probe_timeout and seen):
                    ok = False
                if full[d] and direct[s, d]:  # its pool's new connection is refused
                    ok = False
                    serves = False
                    failed = True
                if not path_ok[d]:
                    serves = False  # a late answer below is late here; a failure fails here
                    failed = failed or path_failed[d]
            latency[s] = lat
            responsive[s] = awake
            answers[s] = not restoring  # a store restoring from backup has not started its server yet
            path_ok[s] = serves
            path_failed[s] = failed
            health[e, s] = ok
            history[e, write, s] = ok
            if noise == 0.0:  # reported as probed, probe_delay ticks ago (noise draws come after the loop)
                feats[e, s, F_HEALTHY] = 1.0 if history[e, read, s] else 0.0
            if entries[s] and not serves:
                slo_ok = False

            z, u = _next(z)
            if not awake:
                err = 1.0
            elif failed:
                err = 0.6 + 0.4 * u
            else:
                err = 0.02 * u
            z, u = _next(z)
            cpu = table[se, r, CPU_LO] + (table[se, r, CPU_HI] - table[se, r, CPU_LO]) * u
            z, u_net = _next(z)
            net = table[se, r, NET_LO] + (table[se, r, NET_HI] - table[se, r, NET_LO]) * u_net
            if started[e, s] > 0:  # a new process's readings: its counters start anew
                started[e, s] -= 1
                if started[e, s] == 1:
                    cpu = 0.0
                    net = 0.0
                elif running:
                    cpu = start_cpu[s, 0] + (start_cpu[s, 1] - start_cpu[s, 0]) * u
            feats[e, s, F_RUNNING] = 1.0 if running else 0.0
            feats[e, s, F_LATENCY] = lat
            feats[e, s, F_ERROR] = err
            feats[e, s, F_DISK] = used
            feats[e, s, F_CPU] = cpu
            feats[e, s, F_NET] = net
            restarts[e, s] *= restart_decay
            feats[e, s, F_RESTARTS] = min(1.0, restarts[e, s] / RESTARTS_SCALE)
            feats[e, s, F_SINCE] = min(1.0, since[e, s] / SINCE_REPAIR_SCALE)
            feats[e, s, F_MEMORY] = min(1.0, memory[s] + held[e, s]) if running else 0.0
            con = connections[s]
            if leaky:  # a server's share the leaks hold; a leaking client holds more than its pools
                con = 1.0 if conns[e, s] > 0.0 else min(1.0, con + taken[s])
            feats[e, s, F_CONNECTIONS] = con if running else 0.0
            feats[e, s, F_DEPLOY] = min(1.0, deployed[e, s] / SINCE_REPAIR_SCALE)
            since[e, s] += 1
            deployed[e, s] += 1
            if drain[e, s] > 0:
                drain[e, s] -= 1
            if down[e, s] > 0:
                down[e, s] -= 1
            elif restore[e, s] > 0:
                restore[e, s] -= 1
        slo[e] = slo_ok
        if noise > 0.0:  # each report flipped by chance: the env's last draws of the tick
            for s in range(n):
                seen = history[e, read, s]
                z, u = _next(z)
                if u < noise:
                    seen = not seen
                feats[e, s, F_HEALTHY] = 1.0 if seen else 0.0
        rng[e] = z


@njit(cache=True)
def start(state: SystemState, layout: Layout, rules: Rules, draws: Draws, seeds: np.ndarray, dyn: Dynamics) -> None:
    """Start env e's random stream from ``seeds[e]``, draw its initial data usage from it, and
    set its episode's dynamics from ``draws`` (drawn from the same stream when randomised)."""
    rng, data, lo, hi = state.rng, state.data, rules.data_lo, rules.data_hi
    n_repairs = draws.down_lo.shape[1]
    for e in range(rng.shape[0]):
        rng[e] = np.uint64(seeds[e]) * _MIX1 + _GOLDEN
        uniform(rng, e)
        for s in range(data.shape[1]):
            data[e, s] = lo + (hi - lo) * uniform(rng, e) if layout.has_disk[s] else 0.0
        if not draws.randomise:
            dyn.down[e] = draws.down_lo
            dyn.symptoms[min(e, dyn.symptoms.shape[0] - 1)] = draws.symptoms
            dyn.probe_noise[e] = draws.noise_lo
            dyn.probe_delay[e] = draws.delay_lo
            dyn.deploy_rate[e] = draws.deploys_lo
            continue
        for s in range(data.shape[1]):
            for r in range(n_repairs):
                if r == ROLLBACK:  # a deploy is a stop and a start: drawn with the restart, at its offset
                    offset = draws.down_lo[s, ROLLBACK] - draws.down_lo[s, RESTART]
                    dyn.down[e, s, r] = max(0, dyn.down[e, s, RESTART] + offset)
                else:
                    dyn.down[e, s, r] = _whole(rng, e, draws.down_lo[s, r], draws.down_hi[s, r])
        for row in range(draws.symptoms.shape[0]):
            for col in range(draws.symptoms.shape[1]):
                x = draws.symptoms[row, col]
                if 0.0 < x < 1.0:  # 0 and 1 are limits (nothing, certain, timed out), not measurements
                    x = min(1.0, x * (1.0 + draws.jitter * (2.0 * uniform(rng, e) - 1.0)))
                dyn.symptoms[e, row, col] = x
            for col in range(0, PROBE_FAIL, 2):  # keep each range's low end at or below its high end
                dyn.symptoms[e, row, col] = min(dyn.symptoms[e, row, col], dyn.symptoms[e, row, col + 1])
        dyn.probe_noise[e] = draws.noise_lo + (draws.noise_hi - draws.noise_lo) * uniform(rng, e)
        dyn.probe_delay[e] = _whole(rng, e, draws.delay_lo, draws.delay_hi)
        dyn.deploy_rate[e] = draws.deploys_lo
        if draws.deploys_hi > draws.deploys_lo:  # no draw for a fixed rate: the stream stays as it was
            dyn.deploy_rate[e] += (draws.deploys_hi - draws.deploys_lo) * uniform(rng, e)


@njit(cache=True, inline="always")
def _whole(rng: np.ndarray, e: int, lo: int, hi: int) -> int:
    """A whole number drawn uniformly from [lo, hi]."""
    return lo + min(hi - lo, int(uniform(rng, e) * (hi - lo + 1)))
