"""SimSandbox: the default backend, a batched simulation of the system in numpy arrays.

State is ``(n_envs, n_services)`` arrays stepped by the compiled kernels in ``simkernel``.
Its parameters (:class:`SimParams`) are set from timings measured on real containers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import numba
import numpy as np

from deeplops import bounds, simkernel
from deeplops.catalog import read_yaml
from deeplops.errors import ConfigError, SandboxError
from deeplops.faults import CLEARS_TABLE, Fault, Repair
from deeplops.kernels import checked_array, compiled_for
from deeplops.observation import MAX_SLOTS, N_FEATURES, Feature
from deeplops.sandbox import ArrayState
from deeplops.system import (
    APP_DB_WAIT_S,
    CONN_LEAK_PER_TICK,
    COUNTS_AS_RESTART,
    DATA_FRACTION,
    LEAK_MB_PER_TICK,
    MEMORY_MB,
    NEVER_REPAIRED,
    PG_CLIENT_CONNECTIONS,
    PROBE_TIMEOUT_S,
    RESTART_HALF_LIFE_TICKS,
    RESTORE_TICKS_PER_VOLUME,
    SLO_LATENCY_S,
    TICK_S,
)
from deeplops.topology import KINDS, Topology

PARALLEL_ENVS = 512
"""Envs per thread from which a batch's tick runs on numba's threads (``simkernel.advance_parallel``):
below it, starting the threads costs more than they save."""
MAX_DOWN_TICKS = 3600
"""Most ticks a restart, recreate or clean_disk may keep a service down (an hour of ticks)."""
MAX_PROBE_DELAY = 60
"""Most ticks of monitoring lag (each env keeps that many ticks of health results)."""
MAX_SIM_NUMBER = 1e6
"""Bound of the simulator's other numbers (timeouts, fill rate, half-life, restore time)."""
MAX_PROBE_NOISE = 0.5
"""Most probe noise: at one half a health report says nothing."""
NEVER_BACK = MAX_DOWN_TICKS + 1
"""What ``SimSandbox.downtime`` says of a repair that would bring nothing back (a rollback with no
release to go back to): longer than any repair takes."""


def _pair(value: Any) -> Any:
    """A (low, high) range as files write it (a list) as SimParams holds it (a tuple)."""
    return tuple(value) if isinstance(value, list) else value


def _pairs(fields_: dict[str, Any]) -> dict[str, Any]:
    """A symptom table's fields as Symptoms holds them."""
    return {key: _pair(value) for key, value in fields_.items()}


def _check_range(name: str, value: object, top: float | None = None, whole: bool = False) -> None:
    kind = "whole numbers of ticks" if whole else "numbers"
    number = _is_whole if whole else _is_number
    if not (isinstance(value, tuple) and len(value) == 2 and all(number(v) for v in value)):
        raise ConfigError(f"{name} must be a (low, high) pair of {kind}, got {value!r}")
    lo, hi = value
    if not 0 <= lo <= hi or (top is not None and hi > top):
        raise ConfigError(f"{name} must satisfy 0 <= low <= high{f' <= {top}' if top else ''}, got {value!r}")


def _is_whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float)


def _check_chance(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be a probability in [0, 1], got {value!r}")


@dataclass(frozen=True)
class Symptoms:
    """What a service shows in one condition. Ranges are drawn uniformly every tick."""

    latency_s: tuple[float, float]
    """Latency of /ping, in seconds (1 means timed out)."""
    cpu: tuple[float, float]
    """CPU use, as a fraction of the service's CPU allowance."""
    net_rx: tuple[float, float]
    """Receive rate, as a fraction of the service's link."""
    probe_fail: float = 0.0
    """Chance its /health fails for a reason latency does not show (a starved health handler)."""
    serve_fail: float = 0.0
    """Chance a user request through it fails: an error, at it and at every caller on the path."""
    serve_slow: float = 0.0
    """Chance a user request through it is answered, but slower than the SLO: the SLO fails while
    the error rates along the path stay low (a starved process that still answers, late)."""

    def __post_init__(self) -> None:
        _check_range("latency_s", self.latency_s, 1.0)
        _check_range("cpu", self.cpu, 1.0)
        _check_range("net_rx", self.net_rx, 1.0)
        _check_chance("probe_fail", self.probe_fail)
        _check_chance("serve_fail", self.serve_fail)
        _check_chance("serve_slow", self.serve_slow)
        if self.serve_fail + self.serve_slow > 1.0:
            raise ConfigError(
                f"serve_fail + serve_slow must be at most 1 (a request fails, is slow, or is served), "
                f"got {self.serve_fail} + {self.serve_slow}"
            )

    def row(self) -> tuple[float, ...]:
        """The symptom-table row the kernel reads (column order in ``simkernel``)."""
        return (*self.latency_s, *self.cpu, *self.net_rx, self.probe_fail, self.serve_fail, self.serve_slow)


KIND_FIELDS = ("restart_ticks", "recreate_ticks", "clean_disk_ticks")
"""A kind profile's downtimes, named as the ``SimParams`` fields of the generic service."""
OWN_SYMPTOMS = {Fault.CPU_HOG: "cpu_hog", Fault.BAD_DEPLOY: "bad_release"}
"""The faults a kind may show its own way: the profile field with its symptom table for each."""
SAME_SYMPTOMS = {Fault.MEMORY_LEAK: 0, Fault.CONN_LEAK: 0}
"""Faults with no symptom row of their own, and the code whose row they read: a leaking release
serves as a good one until the kernel kills it (then it reads as down), and only its memory shows;
a client leaking connections is well itself, until its server refuses it and every other client."""
PROFILE_FIELDS = (
    *KIND_FIELDS,
    "deploy_ticks",
    "dead_start_saves",
    "start_cpu",
    *OWN_SYMPTOMS.values(),
    "page_ticks",
    "check_in_page",
    "memory",
    "connections",
)
"""Every field a kind profile may set in a file."""
_DOWN_REPAIRS = (Repair.RESTART, Repair.RECREATE, Repair.CLEAN_DISK)
"""The repair each of ``KIND_FIELDS`` is the downtime of."""


def _check_kind(kind: object) -> None:
    if kind not in KINDS[1:]:
        raise ConfigError(
            f"kinds: expected a kind of {', '.join(KINDS[1:])} (the generic service's downtimes are "
            f"restart_ticks, recreate_ticks and clean_disk_ticks themselves), got {bounds.shown(kind)}"
        )


@dataclass(frozen=True)
class KindProfile:
    """How long one kind of service stays down after each repair that takes it down, in ticks.
    A field left None is the generic ``service``'s figure (the ``SimParams`` field of that name)."""

    kind: str
    """The kind (``topology.KINDS``, not ``service``: its figures are ``SimParams``' own)."""
    restart_ticks: int | None = None
    """Ticks a restart keeps it down."""
    recreate_ticks: int | None = None
    """Ticks a recreate keeps it down."""
    clean_disk_ticks: int | None = None
    """Ticks a clean_disk keeps it down (a database that comes back up after its disk is freed)."""
    deploy_ticks: int | None = None
    """Ticks a deploy (a rollback too: the previous release deployed) keeps it down; None: the
    generic program's (``SimParams.deploy_ticks``)."""
    dead_start_saves: int | None = None
    """Ticks its restart is quicker when it was killed (nothing to stop), off ``restart_ticks``;
    None: the generic program's ``simkernel.DEAD_START_SAVES``."""
    start_cpu: tuple[float, float] | None = None
    """The CPU a new process of it reads once started (``SimParams.start_cpu``); None: the
    generic program's."""
    cpu_hog: Symptoms | None = None
    """What it shows starved by a CPU hog, where that differs from the generic service's (a
    PostgreSQL's processes keep their share and serve); None: the generic ``SimParams.cpu_hog``."""
    bad_release: Symptoms | None = None
    """What it shows running a broken release (a read-only PostgreSQL fails its own check and its
    users' writes); None: the generic ``SimParams.bad_release``."""
    page_ticks: int | None = None
    """Ticks of its users' writes one page of its data files holds. With its disk full it goes on
    serving them until the page it is filling is full, then fails them until the disk is cleaned
    (PostgreSQL extends a table a page at a time); None: 0, the generic program's every write
    needs new space."""
    memory: float | None = None
    """The memory its processes hold at work, as a fraction of its allowance; None: the generic
    program's (``SimParams.memory``)."""
    connections: float | None = None
    """The share of its connection limit in use at work; None: the generic program's (0)."""
    check_in_page: bool = False
    """Whether its own health check writes into the page its users' writes fill (Redis: a SET
    that joins its append-only file) rather than needing new space, and failing at once
    (PostgreSQL's canary extends a file). With its disk full such a check passes while the page
    has room, and a tick longer: it is the tick's first write, the last one the page takes."""

    def __post_init__(self) -> None:
        _check_kind(self.kind)
        if self.start_cpu is not None:
            _check_range(f"kinds.{self.kind}.start_cpu", self.start_cpu, 1.0)
        for name in ("memory", "connections"):
            if getattr(self, name) is not None:
                _check_chance(f"kinds.{self.kind}.{name}", getattr(self, name))
        if not isinstance(self.check_in_page, bool):
            raise ConfigError(f"kinds.{self.kind}.check_in_page must be true or false, got {self.check_in_page!r}")
        for name in OWN_SYMPTOMS.values():
            table = getattr(self, name)
            if table is not None and not isinstance(table, Symptoms):
                raise ConfigError(f"kinds.{self.kind}.{name} must be a symptom table, got {table!r}")
        for name in (*KIND_FIELDS, "deploy_ticks", "dead_start_saves", "page_ticks"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DOWN_TICKS
            ):
                raise ConfigError(
                    f"kinds.{self.kind}.{name} must be a whole number of ticks in [0, {MAX_DOWN_TICKS}], got {value!r}"
                )


def _kind_profiles(doc: object, base: tuple[KindProfile, ...] = ()) -> tuple[KindProfile, ...]:
    """Kind profiles as files write them (``{postgres: {restart_ticks: 4}}``), over ``base``'s: a
    kind's fields not named keep their value in ``base``."""
    if not isinstance(doc, dict):
        raise ConfigError(f"kinds: expected a mapping of kind to downtimes, got {type(doc).__name__}")
    profiles = {p.kind: p for p in base}
    for kind, value in doc.items():
        _check_kind(kind)
        if not isinstance(value, dict):
            raise ConfigError(
                f"kinds.{kind}: expected a mapping of {', '.join(KIND_FIELDS)}, got {type(value).__name__}"
            )
        unknown = sorted(str(k) for k in value if k not in PROFILE_FIELDS)
        if unknown:
            raise ConfigError(
                f"kinds.{kind}: unknown field {unknown[0]!r}: expected some of {', '.join(PROFILE_FIELDS)}"
            )
        fields_ = dict(value)
        if "start_cpu" in fields_:
            fields_["start_cpu"] = _pair(fields_["start_cpu"])
        for name in OWN_SYMPTOMS.values():
            if name not in fields_:
                continue
            own = getattr(profiles.get(kind, KindProfile(kind)), name)
            table = fields_[name]
            if not isinstance(table, dict):
                raise ConfigError(
                    f"kinds.{kind}.{name}: expected a mapping of symptom fields, got {type(table).__name__}"
                )
            try:
                fields_[name] = replace(own, **_pairs(table)) if own is not None else Symptoms(**_pairs(table))
            except TypeError as exc:
                raise ConfigError(f"kinds.{kind}.{name}: {exc}") from None
        profiles[kind] = replace(profiles.get(kind, KindProfile(kind)), **fields_)
    return tuple(profiles.values())


@dataclass(frozen=True)
class Randomisation:
    """Ranges a system's dynamics are drawn from at every reset, per env and (for times) per
    service, so that an agent trained on them meets many worlds rather than one calibration.
    The draws come from each env's own stream: an episode still depends on its seed alone."""

    restart_ticks: tuple[int, int] = (0, 8)
    """Ticks a restart keeps a generic service down; a kind whose own restart is slower or quicker
    than the generic service's has the range shifted by as much (a service's own ``restart_s`` is
    kept as it is)."""
    recreate_ticks: tuple[int, int] = (0, 8)
    """Ticks a recreate keeps a generic service down, shifted per kind as ``restart_ticks`` is
    (never less than a service's own ``restart_s``)."""
    probe_noise: tuple[float, float] = (0.0, 0.2)
    """Chance a reported health result is flipped, drawn per episode."""
    probe_delay: tuple[int, int] = (0, 3)
    """Monitoring lag in ticks, drawn per episode."""
    symptom_jitter: float = 0.2
    """Every calibrated symptom number strictly between 0 and 1 is scaled by a factor drawn per
    episode from [1 - jitter, 1 + jitter] (0 and 1 are limits, not measurements)."""
    deploy_rate: tuple[float, float] = (0.0, 0.005)
    """Chance per service and tick of a benign deploy, drawn per episode: a recent deploy is a clue
    to a bad one, never a proof."""
    data_fraction: tuple[float, float] = (0.1, 0.85)
    """Range of each volume's initial usage, drawn per service at reset in place of the calibrated
    one: a disk is as full as its data and its program's own files make it (PostgreSQL's own
    files fill a third of a 128 MiB volume on Docker, where it reads 0.66 full), and a full-looking
    disk that is not filling is no fault."""

    def __post_init__(self) -> None:
        _check_range("randomise.restart_ticks", self.restart_ticks, MAX_DOWN_TICKS, whole=True)
        _check_range("randomise.recreate_ticks", self.recreate_ticks, MAX_DOWN_TICKS, whole=True)
        _check_range("randomise.probe_delay", self.probe_delay, MAX_PROBE_DELAY, whole=True)
        _check_range("randomise.probe_noise", self.probe_noise, MAX_PROBE_NOISE)
        _check_range("randomise.deploy_rate", self.deploy_rate, 1.0)
        _check_range("randomise.data_fraction", self.data_fraction, 1.0)
        jitter = self.symptom_jitter
        if isinstance(jitter, bool) or not isinstance(jitter, int | float) or not 0.0 <= jitter <= 0.5:
            raise ConfigError(f"randomise.symptom_jitter must be a number in [0, 0.5], got {jitter!r}")


@dataclass(frozen=True)
class SimParams:
    """How the simulated system behaves. Times are in ticks (one tick = one second).

    The defaults are the calibration of the Docker backend (``sandbox/calibration.json``, made
    by ``deeplops sandbox calibrate``): ``SimParams.from_calibration`` of that file equals them.
    """

    restart_ticks: int = 1
    """Ticks a restarted service is down: 0 when a restart completes within the tick it is taken."""
    recreate_ticks: int = 0
    """Ticks a recreated service is down: new container, new volume."""
    clean_disk_ticks: int = 0
    """Ticks a service is down after its disk is cleaned: 0, the generic program keeps serving."""
    rate_limit_ticks: int = 1
    """Ticks a flooded link takes to drain once a rate_limit ends the flood: the service runs but
    still times out, as flooded, meanwhile."""
    deploy_ticks: int = 0
    """Ticks a deploy keeps a service down: the old container stopped as a restart stops it, a new
    one started on the release. A rollback deploys the previous release, so it takes as long."""
    kinds: tuple[KindProfile, ...] = (
        KindProfile(
            "nginx",
            restart_ticks=0,
            dead_start_saves=0,
            start_cpu=(0.005, 0.006),
            recreate_ticks=0,
            deploy_ticks=0,
            memory=0.013,
            connections=0.0,
            cpu_hog=Symptoms(
                latency_s=(0.0931, 0.2536), cpu=(0.951, 1.0), net_rx=(0.0043, 0.0054), probe_fail=0.0, serve_fail=0.0
            ),
            bad_release=Symptoms(
                latency_s=(0.001, 0.0073), cpu=(0.003, 0.004), net_rx=(0.0025, 0.0029), probe_fail=1.0, serve_fail=1.0
            ),
        ),
        KindProfile(
            "app",
            restart_ticks=1,
            dead_start_saves=1,
            start_cpu=(0.055, 0.067),
            recreate_ticks=0,
            deploy_ticks=0,
            memory=0.146,
            connections=0.667,
            cpu_hog=Symptoms(
                latency_s=(0.1186, 0.3784),
                cpu=(0.979, 1.0),
                net_rx=(0.0044, 0.007),
                probe_fail=0.375,
                serve_fail=0.25,
                serve_slow=0.75,
            ),
            bad_release=Symptoms(
                latency_s=(0.0032, 0.0249), cpu=(0.065, 0.078), net_rx=(0.0116, 0.013), probe_fail=1.0, serve_fail=1.0
            ),
        ),
        KindProfile(
            "worker",
            restart_ticks=0,
            dead_start_saves=0,
            start_cpu=(0.035, 0.044),
            recreate_ticks=0,
            deploy_ticks=0,
            memory=0.145,
            connections=0.556,
            cpu_hog=Symptoms(
                latency_s=(0.1718, 0.3699), cpu=(0.969, 1.0), net_rx=(0.0034, 0.0059), probe_fail=0.25, serve_fail=0.0
            ),
            bad_release=Symptoms(
                latency_s=(0.0026, 0.0099), cpu=(0.052, 0.061), net_rx=(0.0099, 0.0102), probe_fail=1.0, serve_fail=0.0
            ),
        ),
        KindProfile(
            "postgres",
            restart_ticks=1,
            dead_start_saves=1,
            start_cpu=(0.047, 0.063),
            recreate_ticks=0,
            clean_disk_ticks=0,
            page_ticks=30,
            deploy_ticks=0,
            memory=0.241,
            connections=0.185,
            cpu_hog=Symptoms(
                latency_s=(0.0183, 0.1516), cpu=(0.971, 1.0), net_rx=(0.005, 0.0064), probe_fail=0.0, serve_fail=0.0
            ),
            bad_release=Symptoms(
                latency_s=(0.0016, 0.027), cpu=(0.246, 0.275), net_rx=(0.0098, 0.0108), probe_fail=1.0, serve_fail=1.0
            ),
        ),
        KindProfile(
            "redis",
            restart_ticks=1,
            dead_start_saves=1,
            start_cpu=(0.035, 0.039),
            recreate_ticks=0,
            clean_disk_ticks=0,
            page_ticks=4,
            check_in_page=True,
            deploy_ticks=0,
            memory=0.156,
            connections=0.172,
            cpu_hog=Symptoms(
                latency_s=(0.1463, 0.2516), cpu=(0.972, 1.0), net_rx=(0.004, 0.0066), probe_fail=0.0, serve_fail=0.0
            ),
            bad_release=Symptoms(
                latency_s=(0.0049, 0.0145), cpu=(0.033, 0.043), net_rx=(0.0052, 0.0053), probe_fail=1.0, serve_fail=1.0
            ),
        ),
    )
    """Each real-software kind's own downtimes and CPU-hog symptoms, as calibrated on ``store``
    (the generic service's are the three fields above and the symptom tables below; at most one
    profile per kind, kept in ``KINDS`` order); a kind without one, or a field a profile leaves
    None, takes the generic service's."""
    probe_timeout_s: float = PROBE_TIMEOUT_S
    """Timeout of the /health probe and of the pings it makes to dependencies."""
    slo_latency_s: float = SLO_LATENCY_S
    """A user request slower than this counts as failed for the SLO."""
    disk_fill_per_tick: float = 1.0
    """Fraction of the volume a disk_full fault writes per tick until the disk is full."""
    disk_full_at: float = 0.98
    """Disk usage at and above which writes fail (ENOSPC)."""
    data_fraction: tuple[float, float] = DATA_FRACTION
    """Range of the volume's initial usage by real data, drawn per service at reset."""
    probe_noise: float = 0.0
    """Chance that a reported health result is flipped (flaky probes)."""
    probe_delay: int = 0
    """Ticks between a health result and its report (monitoring lag)."""
    restart_half_life: float = RESTART_HALF_LIFE_TICKS
    """Half-life in ticks of the recent-restarts count."""
    restore_ticks: float = RESTORE_TICKS_PER_VOLUME
    """Ticks to restore a full volume from backup after a recreate destroyed its data: the
    service fails its users for this times the fraction of its volume that held data."""
    deploy_rate: float = 0.0
    """Chance per service and tick of a benign deploy (a good release, started as a restart is) on
    a service with no open fault. 0 in the calibrated world, so that a drill replays the same on
    both backends; ``randomise.deploy_rate`` sets the range training and the benchmark draw from."""
    memory: float = 0.091
    """The memory the generic program holds at work, as a fraction of its allowance."""
    leak_per_tick: float = LEAK_MB_PER_TICK / MEMORY_MB
    """Memory a leaking release takes each tick it runs, as a fraction of the allowance (the
    leaking release's rate on Docker, ``system.LEAK_MB_PER_TICK``)."""
    leak_first_tick: float = 0.6
    """Share of a tick's leak a new leaking process has taken by its first reading: it starts
    part-way through the tick, once its deploy or restart is done (on Docker the first reading
    after a leaking deploy holds 0.075 of the allowance, 0.6 of a tick's 0.125, sandbox/README.md)."""
    conn_leak_per_tick: float = CONN_LEAK_PER_TICK / PG_CLIENT_CONNECTIONS
    """Connections a client with a connection leak opens and keeps each tick, as a share of its
    PostgreSQL server's limit (the leak's rate on Docker, ``system.CONN_LEAK_PER_TICK``)."""
    conn_leak_first_tick: float = 1.0
    """Ticks of connection leak the first reading after the leak starts holds. On Docker the first
    reading after the injection shows 0.15-0.3 above the server's level at work (the leak ran the
    two seconds the injection takes to check it), and then it climbs more slowly than 3 a second,
    the pools taking slots too: in six runs the server read full at the 6th to 10th reading, the
    7th on average, where one tick's worth at the first reading puts it (sandbox/README.md)."""
    conn_full_at: float = 0.95
    """Share of its connection limit in use (the feature) at and above which a PostgreSQL server
    with leaked connections refuses its clients: their pools close a connection twice a second
    and open a new one, and the leak, trying three times a second, takes the slot. On Docker the
    users' requests start to fail as the server reads 0.85-1.0 (sandbox/README.md)."""
    randomise: Randomisation | None = None
    """Ranges to draw the restart, recreate and probe dynamics and the symptoms from at every
    reset (training); None keeps the fields above for every episode."""
    start_cpu: tuple[float, float] = (0.073, 0.086)
    """The CPU a new process reads once started: after a restart or a recreate, the first
    reading has nothing to rate the new container's counters against (0), the second shows
    what its start-up burned, drawn from this range."""
    healthy: Symptoms = Symptoms(
        latency_s=(0.0028, 0.0152), cpu=(0.031, 0.083), net_rx=(0.0048, 0.0147), probe_fail=0.0, serve_fail=0.0
    )
    """A service with no fault (and one whose disk is full: its failures come from the disk)."""
    paused: Symptoms = Symptoms(
        latency_s=(1.0, 1.0), cpu=(0.0, 0.0), net_rx=(0.001, 0.0014), probe_fail=1.0, serve_fail=1.0
    )
    """A frozen service: everything times out."""
    cpu_hog: Symptoms = Symptoms(
        latency_s=(0.1284, 0.2592),
        cpu=(0.974, 1.0),
        net_rx=(0.0091, 0.018),
        probe_fail=0.625,
        serve_fail=0.25,
        serve_slow=0.75,
    )
    """A service starved by a CPU hog."""
    flooded: Symptoms = Symptoms(
        latency_s=(1.0, 1.0), cpu=(0.012, 0.038), net_rx=(0.966, 1.0), probe_fail=1.0, serve_fail=1.0
    )
    """A service whose link is saturated by a flood."""
    bad_release: Symptoms = Symptoms(
        latency_s=(0.004, 0.0147), cpu=(0.061, 0.072), net_rx=(0.0115, 0.0117), probe_fail=1.0, serve_fail=1.0
    )
    """A service running a broken release (a bad deploy): it answers at once, with errors."""

    def __post_init__(self) -> None:
        for name, most in (("restart_ticks", MAX_DOWN_TICKS), ("recreate_ticks", MAX_DOWN_TICKS),
                           ("clean_disk_ticks", MAX_DOWN_TICKS), ("rate_limit_ticks", MAX_DOWN_TICKS),
                           ("deploy_ticks", MAX_DOWN_TICKS), ("probe_delay", MAX_PROBE_DELAY)):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
                raise ConfigError(f"sim parameter {name} must be a whole number of ticks in [0, {most}], got {value!r}")
        for name in ("probe_timeout_s", "slo_latency_s", "disk_fill_per_tick", "restart_half_life", "restore_ticks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_SIM_NUMBER:
                raise ConfigError(f"sim parameter {name} must be a number in [0, {MAX_SIM_NUMBER}], got {value!r}")
        _check_chance("disk_full_at", self.disk_full_at)
        _check_range("data_fraction", self.data_fraction, 1.0)
        _check_range("start_cpu", self.start_cpu, 1.0)
        _check_chance("deploy_rate", self.deploy_rate)
        _check_chance("memory", self.memory)
        _check_chance("leak_per_tick", self.leak_per_tick)
        _check_chance("leak_first_tick", self.leak_first_tick)
        _check_chance("conn_leak_per_tick", self.conn_leak_per_tick)
        _check_chance("conn_full_at", self.conn_full_at)
        if not 0.0 <= self.conn_leak_first_tick <= 10.0:
            raise ConfigError(
                f"sim parameter conn_leak_first_tick must be in [0, 10] ticks, got {self.conn_leak_first_tick!r}"
            )
        if not 0.0 <= self.probe_noise <= MAX_PROBE_NOISE:
            raise ConfigError(f"sim parameter probe_noise must be in [0, {MAX_PROBE_NOISE}], got {self.probe_noise!r}")
        if self.randomise is not None and not isinstance(self.randomise, Randomisation):
            raise ConfigError(f"sim parameter randomise must be ranges of Randomisation, got {self.randomise!r}")
        if not isinstance(self.kinds, tuple) or not all(isinstance(p, KindProfile) for p in self.kinds):
            raise ConfigError(f"sim parameter kinds must be a tuple of KindProfile, got {self.kinds!r}")
        given = [p.kind for p in self.kinds]
        twice = sorted({k for k in given if given.count(k) > 1})
        if twice:
            raise ConfigError(f"sim parameter kinds: expected one profile per kind, got {twice[0]!r} twice")
        # One order, so that equal profiles make equal parameters however they were listed.
        object.__setattr__(self, "kinds", tuple(sorted(self.kinds, key=lambda p: KINDS.index(p.kind))))

    @property
    def history_depth(self) -> int:
        """Ticks of health results each env keeps: one more than the longest monitoring lag."""
        most = self.probe_delay if self.randomise is None else max(self.probe_delay, self.randomise.probe_delay[1])
        return most + 1

    @classmethod
    def from_file(cls, path: Path) -> SimParams:
        """The calibrated defaults with the fields a YAML file sets (``--sim FILE``), e.g.
        ``restart_ticks: 3``, ``cpu_hog: {probe_fail: 0.3}`` (a symptom table's other fields kept)
        or ``randomise: {restart_ticks: [0, 8]}`` (the other ranges at their defaults), or
        ``kinds: {postgres: {restart_ticks: 4}}`` (the kind's other downtimes kept).

        Raises:
            ConfigError: the file is unreadable, not a mapping, names an unknown field, or sets a
                value out of its range; the message names the field.
        """
        expected = "a YAML mapping of simulator fields (SimParams)"
        doc = read_yaml(path, ConfigError, expected)
        if not isinstance(doc, dict):
            raise ConfigError(f"--sim {path}: expected {expected}, got {type(doc).__name__}")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(str(k) for k in doc if k not in known)
        if unknown:
            raise ConfigError(f"--sim {path}: unknown field {unknown[0]!r}: expected some of {', '.join(known)}")
        base = cls()
        changes: dict[str, Any] = {}
        for key, value in doc.items():
            current = Randomisation() if key == "randomise" else getattr(base, key)
            try:
                if key == "kinds":
                    changes[key] = _kind_profiles(value, base.kinds)
                elif is_dataclass(current) and not isinstance(current, type):
                    if not isinstance(value, dict):
                        raise ConfigError(f"expected a mapping of {', '.join(f.name for f in fields(current))}")
                    changes[key] = replace(current, **_pairs(value))
                else:
                    changes[key] = _pair(value)
            except (TypeError, ConfigError) as exc:
                raise ConfigError(f"--sim {path}: field {key!r}: {exc}") from None
        try:
            return replace(base, **changes)
        except ConfigError as exc:
            raise ConfigError(f"--sim {path}: {exc}") from None

    @classmethod
    def from_calibration(cls, fields_: dict[str, Any]) -> SimParams:
        """SimParams from the ``sim_params`` section of a calibration file. Its optional ``kinds``
        maps a kind to its measured downtimes, e.g. ``{"postgres": {"restart_ticks": 4,
        "recreate_ticks": 6, "clean_disk_ticks": 2}}``; a kind it leaves out is the generic service."""
        kwargs: dict[str, Any] = {}
        try:
            for key, value in fields_.items():
                if key == "kinds":
                    kwargs[key] = _kind_profiles(value)
                else:
                    kwargs[key] = Symptoms(**_pairs(value)) if isinstance(value, dict) else _pair(value)
            return cls(**kwargs)
        except (TypeError, ConfigError) as exc:
            raise ConfigError(f"calibration: {exc}") from None

    def profile(self, kind: str) -> KindProfile | None:
        """The profile of ``kind``; None for a kind without one (the generic service's figures hold)."""
        return next((p for p in self.kinds if p.kind == kind), None)

    def downtimes(self, kind: str) -> tuple[int, int, int]:
        """Ticks a restart, a recreate and a clean_disk keep a service of ``kind`` down (``KIND_FIELDS``):
        its profile's, the generic service's where it sets none."""
        restart, recreate, clean = (self._own(kind, name, getattr(self, name)) for name in KIND_FIELDS)
        return restart, recreate, clean

    def page_ticks(self, kind: str) -> int:
        """Ticks of writes one page of a ``kind``'s data files holds (0 for the generic service)."""
        return self._own(kind, "page_ticks", 0)

    def dead_start_saves(self, kind: str) -> int:
        """Ticks a restart of a killed ``kind`` is quicker (``KindProfile.dead_start_saves``)."""
        return self._own(kind, "dead_start_saves", simkernel.DEAD_START_SAVES)

    def start_cpu_of(self, kind: str) -> tuple[float, float]:
        """The CPU range a new process of ``kind`` reads once started (``start_cpu``)."""
        return self._own(kind, "start_cpu", self.start_cpu)

    def deploy_ticks_of(self, kind: str) -> int:
        """Ticks a deploy or a rollback keeps a service of ``kind`` down (``KindProfile.deploy_ticks``)."""
        return self._own(kind, "deploy_ticks", self.deploy_ticks)

    def memory_of(self, kind: str) -> float:
        """The memory share a ``kind`` holds at work (``KindProfile.memory``)."""
        return self._own(kind, "memory", self.memory)

    def connections_of(self, kind: str) -> float:
        """The share of its connection limit a ``kind`` has in use at work (``KindProfile.connections``)."""
        return self._own(kind, "connections", 0.0)

    def check_in_page(self, kind: str) -> bool:
        """Whether a ``kind``'s own health check writes into its page (``KindProfile.check_in_page``)."""
        return self._own(kind, "check_in_page", False)

    def _own(self, kind: str, name: str, generic: Any) -> Any:
        """Field ``name`` of ``kind``'s profile; ``generic`` where it has none or leaves it None."""
        own = self.profile(kind)
        value = None if own is None else getattr(own, name)
        return generic if value is None else value

    def rules(self) -> simkernel.Rules:
        """These parameters as the tick's kernels read them (numbers as floats: one compiled kernel for all)."""
        lo, hi = self.randomise.data_fraction if self.randomise else self.data_fraction
        return simkernel.Rules(
            probe_timeout=float(self.probe_timeout_s),
            slo_latency=float(self.slo_latency_s),
            disk_fill=float(self.disk_fill_per_tick),
            disk_full_at=float(self.disk_full_at),
            start_wait=round(APP_DB_WAIT_S / TICK_S),
            restart_decay=0.5 ** (1.0 / self.restart_half_life) if self.restart_half_life else 0.0,
            leak=float(self.leak_per_tick),
            leak_first=float(self.leak_first_tick),
            conn_leak=float(self.conn_leak_per_tick),
            conn_leak_first=float(self.conn_leak_first_tick),
            conn_full_at=float(self.conn_full_at),
            data_lo=float(lo),
            data_hi=float(hi),
        )

    def draws(self, topology: Topology) -> simkernel.Draws:
        """What each reset sets an env's dynamics from on ``topology``: these fields, each
        service's kind profile, its own ``restart_s``, and the ranges of ``randomise`` when set."""
        generic = self.repairs()[:, simkernel.R_DOWN_TICKS].astype(np.int64)
        lo = np.repeat(generic[None, :], topology.n_services, axis=0)
        for slot, kind in enumerate(topology.kinds):
            lo[slot, _DOWN_REPAIRS] = self.downtimes(kind)
            lo[slot, Repair.ROLLBACK] = self.deploy_ticks_of(kind)
        # A deploy stops and starts the service as a restart does: drawn or set with the restart,
        # it keeps its measured difference from it.
        deploy_offset = lo[:, Repair.ROLLBACK] - lo[:, Repair.RESTART]
        hi = lo.copy()
        ranges = self.randomise
        if ranges is not None:
            # The ranges are the generic service's; a kind that comes back slower (or quicker) has
            # them shifted by as much, so its draws stay centred where it was measured.
            shift = lo - generic[None, :]
            for repair, (low, high) in (
                (Repair.RESTART, ranges.restart_ticks),
                (Repair.RECREATE, ranges.recreate_ticks),
            ):
                lo[:, repair] = np.clip(low + shift[:, repair], 0, MAX_DOWN_TICKS)
                hi[:, repair] = np.clip(high + shift[:, repair], 0, MAX_DOWN_TICKS)
        for slot, seconds in enumerate(topology.restart_s):
            if seconds is not None:  # the service's own start-up time: a recreate starts it too
                ticks = round(seconds / TICK_S)
                lo[slot, Repair.RESTART] = hi[slot, Repair.RESTART] = ticks
                lo[slot, Repair.RECREATE] = max(lo[slot, Repair.RECREATE], ticks)
                hi[slot, Repair.RECREATE] = max(hi[slot, Repair.RECREATE], ticks)
                deploy_offset[slot] = 0  # a new release starts as slowly
        lo[:, Repair.ROLLBACK] = np.clip(lo[:, Repair.RESTART] + deploy_offset, 0, MAX_DOWN_TICKS)
        hi[:, Repair.ROLLBACK] = np.clip(hi[:, Repair.RESTART] + deploy_offset, 0, MAX_DOWN_TICKS)
        deploys = (self.deploy_rate, self.deploy_rate) if ranges is None else ranges.deploy_rate
        noise = (self.probe_noise, self.probe_noise) if ranges is None else ranges.probe_noise
        delay = (self.probe_delay, self.probe_delay) if ranges is None else ranges.probe_delay
        return simkernel.Draws(
            randomise=ranges is not None,
            down_lo=lo,
            down_hi=hi,
            symptoms=self.symptoms(topology.kinds)[0],
            jitter=float(ranges.symptom_jitter) if ranges else 0.0,
            noise_lo=float(noise[0]),
            noise_hi=float(noise[1]),
            delay_lo=int(delay[0]),
            delay_hi=int(delay[1]),
            deploys_lo=float(deploys[0]),
            deploys_hi=float(deploys[1]),
        )

    def symptoms(self, kinds: Sequence[str] = ()) -> tuple[np.ndarray, np.ndarray]:
        """The symptom table, and which of its rows each service of ``kinds`` reads per fault code.

        The table has one row per fault code but those of ``SAME_SYMPTOMS``, plus one for a service
        that is not running (``simkernel.DOWN_ROW``), then one per kind and fault it shows its own
        way (``OWN_SYMPTOMS``); ``rows[s, code]`` is the row service ``s`` reads under fault ``code``."""
        down = Symptoms(latency_s=(0.0, 0.0), cpu=(0.0, 0.0), net_rx=(0.0, 0.0), probe_fail=1.0, serve_fail=1.0)
        rows: dict[int, Symptoms] = {
            0: self.healthy,
            Fault.KILL: down,  # connection refused at once, nothing running
            Fault.PAUSE: self.paused,
            Fault.CPU_HOG: self.cpu_hog,
            Fault.DISK_FULL: self.healthy,  # fast failures: writes get ENOSPC at once
            Fault.NET_SATURATION: self.flooded,
            Fault.BAD_DEPLOY: self.bad_release,
            simkernel.DOWN_ROW: down,  # restarting: not running yet
        }
        own = {
            (p.kind, fault): getattr(p, name)
            for p in self.kinds
            if p.kind in kinds
            for fault, name in OWN_SYMPTOMS.items()
            if getattr(p, name) is not None
        }
        table = np.zeros((len(rows) + len(own), simkernel.N_SYMPTOMS))
        at = {code: i for i, code in enumerate(rows)}
        at.update({int(code): at[like] for code, like in SAME_SYMPTOMS.items()})
        for code, symptoms in rows.items():
            table[at[code]] = symptoms.row()
        extra = {}
        for i, (key, symptoms) in enumerate(own.items()):
            extra[key] = len(rows) + i
            table[extra[key]] = symptoms.row()
        lookup = np.repeat(np.array([at[c] for c in range(simkernel.DOWN_ROW + 1)], np.int64)[None, :], len(kinds), 0)
        for s, kind in enumerate(kinds):
            for fault in OWN_SYMPTOMS:
                if (kind, fault) in extra:
                    lookup[s, fault] = extra[(kind, fault)]
        return table, lookup

    def repairs(self) -> np.ndarray:
        """What each repair's mechanism does to a service, one row per Repair code (docs/design.md §4.2)."""
        rows = {  # downtime ticks, wipes junk, wipes data (whether it counts as a restart: COUNTS_AS_RESTART)
            Repair.NOOP: (0, 0, 0),
            Repair.RESTART: (self.restart_ticks, 0, 0),
            Repair.CLEAN_DISK: (self.clean_disk_ticks, 1, 0),
            Repair.RATE_LIMIT: (0, 0, 0),
            Repair.RECREATE: (self.recreate_ticks, 1, 1),  # new container, new (empty) volume
            Repair.ROLLBACK: (self.deploy_ticks, 0, 0),  # the previous release deployed
        }
        table = np.zeros((len(Repair), simkernel.N_REPAIR_EFFECTS))
        for repair, row in rows.items():
            table[repair] = (*row, repair in COUNTS_AS_RESTART)
        return table


def _dependency_lists(adjacency: np.ndarray) -> np.ndarray:
    """``simkernel.Layout.deps``: row s lists the slots s depends on, ascending, then zeros."""
    n = adjacency.shape[0]
    out = np.zeros((n, n), np.int64)
    for s in range(n):
        found = np.flatnonzero(adjacency[s])
        out[s, : found.size] = found
    return out


class SimSandbox(ArrayState):
    """A batch of ``n_envs`` simulated copies of ``topology``, stepped together."""

    def __init__(self, topology: Topology, n_envs: int = 1, params: SimParams | None = None) -> None:
        if n_envs < 1:
            raise ConfigError(f"n_envs must be >= 1, got {n_envs}")
        self.topology = topology
        self.n_envs = n_envs
        self.params = params or SimParams()
        e, n = n_envs, topology.n_services
        self._rules = self.params.rules()
        self._repair_rules = simkernel.RepairRules(
            effects=self.params.repairs(),
            clears=CLEARS_TABLE,
            restore_full=float(self.params.restore_ticks),
            drain_ticks=int(self.params.rate_limit_ticks),
            dead_saves=np.array([self.params.dead_start_saves(k) for k in topology.kinds], np.int64),
        )
        self._layout = simkernel.Layout(
            has_disk=topology.has_disk.copy(),
            entries=topology.entries.copy(),
            adjacency=topology.adjacency.copy(),
            deps=_dependency_lists(topology.adjacency),
            n_deps=topology.adjacency.sum(axis=1).astype(np.int64),
            direct=topology.direct_checks.copy(),
            start_needs=topology.start_needs.copy(),
            page_ticks=np.array([self.params.page_ticks(k) for k in topology.kinds], np.int32),
            check_in_page=np.array([self.params.check_in_page(k) for k in topology.kinds], np.bool_),
            start_cpu=np.array([self.params.start_cpu_of(k) for k in topology.kinds], np.float64).reshape(-1, 2),
            rows=self.params.symptoms(topology.kinds)[1],
            memory=np.array([self.params.memory_of(k) for k in topology.kinds], np.float64),
            connections=np.array([self.params.connections_of(k) for k in topology.kinds], np.float64),
            volume_room=np.array([s.disk_mb / MEMORY_MB for s in topology.services], np.float64),
            leaks_at=topology.leaks_at.copy(),
        )
        self._state = simkernel.SystemState(
            fault=np.zeros((e, n), np.int8),
            down=np.zeros((e, n), np.int32),
            since=np.zeros((e, n), np.int32),
            junk=np.zeros((e, n), np.float64),
            data=np.zeros((e, n), np.float64),
            restarts=np.zeros((e, n), np.float64),
            restore=np.zeros((e, n), np.int32),
            drain=np.zeros((e, n), np.int32),
            page=np.zeros((e, n), np.int32),
            started=np.zeros((e, n), np.int32),
            waited=np.full((e, n), -1, np.int32),
            health=np.ones((e, n), np.bool_),
            history=np.ones((e, self.params.history_depth, n), np.bool_),
            rng=np.zeros(e, np.uint64),
            deployed=np.zeros((e, n), np.int32),
            behind=np.zeros((e, n), np.int32),
            held=np.zeros((e, n), np.float64),
            conns=np.zeros((e, n), np.float64),
        )
        self._draws = self.params.draws(topology)
        self._dyn = simkernel.Dynamics(
            down=np.zeros((e, n, len(Repair)), np.int32),
            symptoms=np.zeros((e if self._draws.randomise else 1, *self._draws.symptoms.shape), np.float64),
            probe_noise=np.zeros(e, np.float64),
            probe_delay=np.zeros(e, np.int64),
            deploy_rate=np.zeros(e, np.float64),
        )
        self._readings = simkernel.Readings(
            features=np.zeros((e, MAX_SLOTS, N_FEATURES), np.float32), slo=np.ones(e, np.bool_)
        )
        self._readings.features[:, :n, Feature.PRESENT] = 1.0
        self._readings.features[:, :n, Feature.HAS_DISK] = topology.has_disk
        self._readings.features[:, :n, Feature.ENTRY] = topology.entries
        self._fault, self._health = self._state.fault, self._state.health  # what ArrayState reads
        self._feats, self._slo = self._readings.features, self._readings.slo
        self._cleared = np.zeros(e, np.bool_)
        self._tick = 0
        # The records live as long as the sandbox, so each kernel is looked up once for their
        # types and called without numba's per-call typing (deeplops.kernels says why).
        per_env = np.zeros(e, np.int64)
        state, layout, rules, dyn = self._state, self._layout, self._rules, self._dyn
        self._chunks = min(numba.get_num_threads(), n_envs // PARALLEL_ENVS)
        if self._chunks > 1:
            self._advance = compiled_for(simkernel.advance_parallel, state, layout, rules, dyn, 0, self._readings, 2)
        else:
            self._advance = compiled_for(simkernel.advance, state, layout, rules, dyn, 0, self._readings)
        self._repair = compiled_for(simkernel.repair, state, self._repair_rules, dyn, per_env, per_env, self._cleared)
        self._start = compiled_for(simkernel.start, state, layout, rules, self._draws, per_env, dyn)
        self._inject = compiled_for(simkernel.inject, state, dyn, per_env, per_env)

    def reset(self, seeds: Sequence[int]) -> None:
        """Fresh, healthy systems; env e's randomness comes from ``seeds[e]`` alone."""
        seeds_arr = np.array(seeds, dtype=np.int64)  # a fresh array: contiguous, as the kernel takes it
        if seeds_arr.shape != (self.n_envs,) or (seeds_arr < 0).any():
            raise ConfigError(f"reset needs {self.n_envs} seeds >= 0, got {list(seeds)!r}")
        state = self._state
        self._start(state, self._layout, self._rules, self._draws, seeds_arr, self._dyn)
        state.fault[:] = 0
        state.down[:] = 0
        state.since[:] = NEVER_REPAIRED
        state.deployed[:] = NEVER_REPAIRED
        state.behind[:] = 0
        state.held[:] = 0.0
        state.conns[:] = 0.0
        state.junk[:] = 0.0
        state.restarts[:] = 0.0
        state.restore[:] = 0
        state.drain[:] = 0
        state.page[:] = 0
        state.started[:] = 0
        state.waited[:] = -1
        state.health[:] = True
        state.history[:] = True
        self._slo[:] = True
        self._tick = 0
        self.advance()
        self._tick = 0

    def inject(self, slots: np.ndarray, faults: np.ndarray) -> None:
        """Start ``faults[e]`` on ``slots[e]``; it shows from the next ``advance``."""
        batch = (self.n_envs,)
        slots, faults = checked_array(slots, np.int64, batch), checked_array(faults, np.int64, batch)
        bad = self._inject(self._state, self._dyn, slots, faults)
        if bad >= 0:
            raise SandboxError(
                f"inject in env {bad}: expected a slot in [0, {self.topology.n_services}) and a fault code in "
                f"1..{len(Fault)}, "
                f"got slot {slots[bad]} and code {faults[bad]}"
            )

    def repair(self, slots: np.ndarray, repairs: np.ndarray) -> np.ndarray:
        """Apply ``repairs[e]`` to ``slots[e]``; return whether each ended a fault."""
        batch = (self.n_envs,)
        slots, repairs = checked_array(slots, np.int64, batch), checked_array(repairs, np.int64, batch)
        bad = self._repair(self._state, self._repair_rules, self._dyn, slots, repairs, self._cleared)
        if bad >= 0:
            raise SandboxError(
                f"repair in env {bad}: expected a slot in [0, {self.topology.n_services}) and a repair code in "
                f"0..{len(Repair) - 1}, "
                f"got slot {slots[bad]} and code {repairs[bad]}"
            )
        return self._cleared

    def advance(self) -> None:
        """One tick for every env."""
        if self._chunks > 1:
            self._advance(self._state, self._layout, self._rules, self._dyn, self._tick, self._readings, self._chunks)
        else:
            self._advance(self._state, self._layout, self._rules, self._dyn, self._tick, self._readings)
        self._tick += 1

    def downtime(self) -> np.ndarray:
        """``(n_envs, n_services, len(Repair))`` ticks each repair would keep each service from
        serving now, a restore of destroyed data included: what a privileged policy may read."""
        out = self._dyn.down.astype(np.int64)
        dead = self._state.fault == Fault.KILL
        saves = np.where(dead, self._repair_rules.dead_saves[None, :], 0)
        out[:, :, Repair.RESTART] = np.maximum(0, out[:, :, Repair.RESTART] - saves)
        wiped = self._repair_rules.effects[:, simkernel.R_WIPES_DATA] > 0
        restore = np.ceil(self._state.data * self.params.restore_ticks).astype(np.int64)
        out[:, :, wiped] += restore[:, :, None]
        # With no release before the current one a rollback does nothing: it brings nothing back.
        out[:, :, Repair.ROLLBACK] = np.where(self._state.behind > 0, out[:, :, Repair.ROLLBACK], NEVER_BACK)
        return out

    @property
    def data_fraction(self) -> np.ndarray:
        """Fraction of each service's volume holding real data (0 after a recreate)."""
        return self._state.data

    def close(self) -> None:
        """Nothing to release for the simulator."""
