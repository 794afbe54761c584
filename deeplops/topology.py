"""Service topologies: load and validate ``envs/*.yaml`` into frozen dataclasses.

A topology is a directed acyclic graph of services (``depends_on`` edges). Cycles are
rejected: with dependency-aware health, a cycle can hold every member unhealthy forever
after one transient failure, and "the root cause" stops being defined. networkx is used
here, at load time only; the simulator steps on the adjacency arrays computed once below.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from deeplops import bounds
from deeplops.catalog import read_yaml, resolve_env
from deeplops.errors import ConfigError

MAX_SERVICES = 16
"""Most services a topology may have: the number of observation and action slots."""

_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,30}$")
_SERVICE_KEYS = {"kind", "depends_on", "entry", "disk_mb", "restart_s"}
KINDS = ("service", "nginx", "app", "worker", "postgres", "redis")
"""The service kinds (docs/design.md §4.1): the program each runs on Docker, and its sim profile."""
HTTP_KINDS = ("service", "app", "nginx")
"""Kinds that answer HTTP: what an nginx may proxy to."""
CLIENT_KINDS = ("app", "worker")
"""The kinds that reach PostgreSQL and Redis with those servers' own clients."""
CODE_KINDS = ("service", "app", "worker")
"""The kinds that run our own programs: the code a release can bring a memory leak into."""
STORE_KINDS = ("postgres", "redis")
"""The kinds that are data stores, spoken to with their own protocol by CLIENT_KINDS."""


@dataclass(frozen=True)
class Service:
    """One service of a topology."""

    name: str
    """Unique name: lower-case letters, digits, ``-`` and ``_``; also the container's name."""
    depends_on: tuple[str, ...] = ()
    """Services this one calls; its health check pings each of them."""
    entry: bool = False
    """Whether user traffic enters here; the SLO is measured through the entry services."""
    disk_mb: int = 0
    """Size of the service's data volume in MiB; 0 means it has none."""
    restart_s: float | None = None
    """Seconds the service takes to start before it serves (its restart's downtime, and a
    recreate's at least); None: unset, the calibrated restart downtime holds."""
    kind: str = "service"
    """What the service runs (one of KINDS): the generic program, or real software."""


@dataclass(frozen=True)
class Topology:
    """A validated service graph and the arrays the simulator steps on.

    Services are kept in dependency order: every service comes after all it depends on,
    so array code can walk index 0..S-1 and find each dependency already computed.
    """

    name: str
    """Name of the topology, e.g. ``shop``."""
    services: tuple[Service, ...]
    """The services, dependencies before dependents."""

    @property
    def n_services(self) -> int:
        """Number of services."""
        return len(self.services)

    @cached_property
    def names(self) -> tuple[str, ...]:
        """Service names in slot order."""
        return tuple(s.name for s in self.services)

    @cached_property
    def index(self) -> dict[str, int]:
        """Slot of each service by name."""
        return {name: i for i, name in enumerate(self.names)}

    @cached_property
    def adjacency(self) -> np.ndarray:
        """``(S, S)`` bool: ``[i, j]`` is true when service i depends directly on j."""
        adj = np.zeros((self.n_services, self.n_services), dtype=np.bool_)
        for i, service in enumerate(self.services):
            for dep in service.depends_on:
                adj[i, self.index[dep]] = True
        return adj

    @cached_property
    def closure(self) -> np.ndarray:
        """``(S, S)`` bool: ``[i, j]`` is true when a request to i reaches j (i itself included)."""
        reach = np.eye(self.n_services, dtype=np.bool_)
        for i in range(self.n_services):  # dependencies come first, so one pass suffices
            for j in np.flatnonzero(self.adjacency[i]):
                reach[i] |= reach[j]
        return reach

    @cached_property
    def entries(self) -> np.ndarray:
        """``(S,)`` bool: entry services."""
        return np.array([s.entry for s in self.services], dtype=np.bool_)

    @cached_property
    def has_disk(self) -> np.ndarray:
        """``(S,)`` bool: services with a data volume."""
        return np.array([s.disk_mb > 0 for s in self.services], dtype=np.bool_)

    @cached_property
    def own_code(self) -> np.ndarray:
        """``(S,)`` bool: services running our own program (``CODE_KINDS``), not server software."""
        return np.isin(np.array(self.kinds), CODE_KINDS)

    @cached_property
    def leaks_at(self) -> np.ndarray:
        """``(S,)`` int64: the slot of the PostgreSQL server each service's connections leak into
        when it has a connection leak (its first, in slot order), or -1: only an app or a worker
        that uses a PostgreSQL server can leak its connections (``faults.FAULTS_NEEDING_DATABASE``)."""
        kinds = np.array(self.kinds)
        uses = self.direct_checks & (kinds == "postgres")[None, :]
        return np.where(uses.any(axis=1), uses.argmax(axis=1), -1).astype(np.int64)

    @cached_property
    def kinds(self) -> tuple[str, ...]:
        """Each service's kind in slot order."""
        return tuple(s.kind for s in self.services)

    @cached_property
    def direct_checks(self) -> np.ndarray:
        """``(S, S)`` bool: ``[i, j]`` when service i checks its dependency j with j's own client
        (an app or worker's connection and query to PostgreSQL or Redis): i's health then asks j
        now, whether it answers, not j's last health report, as a ping of j's /ping does."""
        kinds = np.array(self.kinds)
        return self.adjacency & np.isin(kinds, CLIENT_KINDS)[:, None] & np.isin(kinds, STORE_KINDS)[None, :]

    @cached_property
    def start_needs(self) -> np.ndarray:
        """``(S, S)`` bool: ``[i, j]`` when a new process of i listens only once j answers: an app
        and each PostgreSQL it uses (its connection pool must open to start)."""
        kinds = np.array(self.kinds)
        return self.adjacency & (kinds == "app")[:, None] & (kinds == "postgres")[None, :]

    @cached_property
    def restart_s(self) -> tuple[float | None, ...]:
        """Each service's ``restart_s`` in slot order; None where the topology does not set it."""
        return tuple(s.restart_s for s in self.services)

    @cached_property
    def depth(self) -> np.ndarray:
        """``(S,)`` int: length of the longest dependency chain below each service (leaves are 0)."""
        depth = np.zeros(self.n_services, dtype=np.int64)
        for i in range(self.n_services):
            deps = np.flatnonzero(self.adjacency[i])
            if deps.size:
                depth[i] = depth[deps].max() + 1
        return depth

    def graph(self) -> nx.DiGraph:
        """The topology as a networkx graph (edge u → v: u depends on v), for analysis."""
        g = nx.DiGraph()
        g.add_nodes_from(self.names)
        g.add_edges_from((s.name, d) for s in self.services for d in s.depends_on)
        return g


@dataclass(frozen=True)
class Placement:
    """Where a service of one kind may stand in a topology: what the real program can do."""

    why: str
    """What the program is, said in every refusal of a placement."""
    calls: tuple[str, ...]
    """Kinds it may depend on."""
    deps: tuple[int, int] = (0, MAX_SERVICES)
    """Fewest and most dependencies it may have."""
    needs: str | None = None
    """A kind it must depend on at least once."""
    disk_mb: tuple[int, int] = (0, bounds.MAX_DISK_MB)
    """Smallest and largest volume it may have (MiB)."""
    entry: bool = True
    """Whether user traffic may enter through it."""
    serves: bool = True
    """Whether other services may depend on it."""


_CALLABLE = ("service", "nginx", "app", "postgres", "redis")
PLACEMENT = {
    "service": Placement("the generic program calls any service that serves", calls=_CALLABLE),
    "nginx": Placement(
        "an nginx proxies to one HTTP upstream and keeps no data", calls=HTTP_KINDS, deps=(1, 1), disk_mb=(0, 0)
    ),
    "app": Placement("the web app calls any service that serves", calls=_CALLABLE),
    "worker": Placement(
        "a worker drains a redis queue into redis or postgres, takes no user traffic and serves no one",
        calls=("redis", "postgres"),
        needs="redis",
        entry=False,
        serves=False,
    ),
    "postgres": Placement(
        "a postgres serves, it calls nothing, and keeps its data directory on its volume",
        calls=(),
        deps=(0, 0),
        disk_mb=(64, bounds.MAX_DISK_MB),
    ),
    "redis": Placement("a redis serves, it calls nothing", calls=(), deps=(0, 0)),
}
"""Each kind's placement rules (docs/design.md §4.1), checked by ``build_topology``."""
assert tuple(PLACEMENT) == KINDS, "every kind has its placement"


def load_topology(ref: str | Path) -> Topology:
    """Load the topology named ``ref`` (a name under ``envs/``) or stored at path ``ref``."""
    path = resolve_env(ref)
    return topology_from_dict(read_yaml(path, ConfigError, "a topology YAML file"), source=str(path))


def topology_from_dict(doc: Any, source: str = "<dict>") -> Topology:
    """Validate a parsed topology document (docs/design.md §8) and build the Topology."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: expected a mapping with 'name' and 'services', got {_kind(doc)}")
    if "services" not in doc:  # not a topology at all: name none of its keys, which may be its content
        raise ConfigError(f"{source}: expected a mapping with 'name' and 'services', got one without 'services'")
    unknown = set(doc) - {"name", "services", "description"}
    if unknown:
        keys = bounds.shown_keys(unknown)
        raise ConfigError(f"{source}: unknown key(s) {keys}: expected name, services, description")
    name = doc.get("name", Path(source).stem)
    if not isinstance(name, str) or not name.isprintable() or not 0 < len(name) <= 64:
        raise ConfigError(f"{source}: 'name' must be one line of 1 to 64 characters, got {bounds.shown(name)}")
    raw = doc.get("services")
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{source}: 'services' must be a non-empty mapping of name to settings, got {_kind(raw)}")
    if len(raw) > MAX_SERVICES:
        raise ConfigError(f"{source}: at most {MAX_SERVICES} services are supported, got {len(raw)}")
    services = [_service(source, key, value) for key, value in raw.items()]
    return build_topology(name, services, source)


def topology_to_dict(topology: Topology) -> dict[str, Any]:
    """The topology as its YAML document (docs/design.md §8): ``topology_from_dict`` of it gives it back."""
    services: dict[str, Any] = {}
    for s in topology.services:
        spec: dict[str, Any] = {}
        if s.kind != "service":  # only when set: documents without it read as they always did
            spec["kind"] = s.kind
        if s.depends_on:
            spec["depends_on"] = list(s.depends_on)
        if s.entry:
            spec["entry"] = True
        if s.disk_mb:
            spec["disk_mb"] = s.disk_mb
        if s.restart_s is not None:  # only when set: documents without it read as they always did
            spec["restart_s"] = s.restart_s
        services[s.name] = spec
    return {"name": topology.name, "services": services}


def build_topology(name: str, services: list[Service], source: str = "<topology>") -> Topology:
    """Check a list of services as a whole and order it dependencies-first."""
    known = {s.name for s in services}
    for s in services:
        for dep in s.depends_on:
            if dep not in known:
                raise ConfigError(
                    f"{source}: service {s.name!r} depends on unknown service {dep!r}: "
                    f"expected one of {', '.join(sorted(known))}"
                )
            if dep == s.name:
                raise ConfigError(f"{source}: service {s.name!r} depends on itself")
    for s in services:
        if s.kind not in KINDS:  # a tuple: an unhashable kind is refused, not a TypeError
            raise ConfigError(
                f"{source}: service {s.name!r}: 'kind' must be one of {', '.join(KINDS)}, got {bounds.shown(s.kind)}"
            )
    by_name = {s.name: s for s in services}
    for s in services:
        _check_placement(source, s, by_name)
    if not any(s.entry for s in services):
        raise ConfigError(f"{source}: no entry service: expected at least one service with 'entry: true'")
    g = nx.DiGraph()
    g.add_nodes_from(s.name for s in services)
    g.add_edges_from((s.name, d) for s in services for d in s.depends_on)
    try:
        cycle = nx.find_cycle(g)
    except nx.NetworkXNoCycle:
        cycle = None
    if cycle:
        path = " -> ".join([u for u, _ in cycle] + [cycle[0][0]])
        raise ConfigError(f"{source}: dependency cycle {path}: expected an acyclic graph")
    given = {s.name: i for i, s in enumerate(services)}
    # Dependencies first; ties keep the file's order so slots are predictable.
    order = list(nx.lexicographical_topological_sort(g.reverse(copy=False), key=lambda n: given[n]))
    return Topology(name=name, services=tuple(by_name[n] for n in order))


def _check_placement(source: str, service: Service, by_name: dict[str, Service]) -> None:
    """Refuse ``service`` where its kind's program could not stand (``PLACEMENT``), in one line."""
    rule = PLACEMENT[service.kind]
    where = f"{source}: service {service.name!r}: {rule.why}"
    deps = [by_name[d] for d in service.depends_on]
    given = ", ".join(repr(d.name) for d in deps) or "none"
    least, most = rule.deps
    if not least <= len(deps) <= most:
        wanted = {0: "no dependencies", 1: "exactly one dependency"}.get(most, f"at least {least} dependencies")
        raise ConfigError(f"{where}: expected {wanted}, got {given}")
    for dep in deps:
        if not PLACEMENT[dep.kind].serves:
            raise ConfigError(
                f"{source}: service {service.name!r} depends on {dep.name!r} ({dep.kind}): "
                f"{PLACEMENT[dep.kind].why}: expected no service to depend on a {dep.kind}"
            )
        if dep.kind not in rule.calls:
            raise ConfigError(
                f"{where}: expected dependencies of kind {_either(rule.calls)}, got {dep.name!r} ({dep.kind})"
            )
    if rule.needs is not None and not any(d.kind == rule.needs for d in deps):
        shown = ", ".join(f"{d.name!r} ({d.kind})" for d in deps) or "none"
        raise ConfigError(f"{where}: expected at least one dependency of kind {rule.needs}, got {shown}")
    low, high = rule.disk_mb
    if not low <= service.disk_mb <= high:
        wanted = f"disk_mb {low}" if low == high else f"disk_mb >= {low}"
        raise ConfigError(f"{where}: expected {wanted}, got {service.disk_mb}")
    if service.entry and not rule.entry:
        raise ConfigError(f"{where}: expected entry false, got true")


def _either(kinds: tuple[str, ...]) -> str:
    """``a, b or c``."""
    return " or ".join([", ".join(kinds[:-1]), kinds[-1]]) if len(kinds) > 1 else "".join(kinds)


def _service(source: str, name: object, value: object) -> Service:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"{source}: service name {bounds.shown(name)} is invalid: expected lower-case letters, digits, '-' or '_', "
            "starting with a letter, at most 31 characters"
        )
    where = f"{source}: service {name!r}"
    value = {} if value is None else value
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping of settings, got {_kind(value)}")
    unknown = set(value) - _SERVICE_KEYS
    if unknown:
        keys = bounds.shown_keys(unknown)
        raise ConfigError(f"{where}: unknown key(s) {keys}: expected {', '.join(sorted(_SERVICE_KEYS))}")
    kind = value.get("kind", "service")
    if kind not in KINDS:
        raise ConfigError(f"{where}: 'kind' must be one of {', '.join(KINDS)}, got {bounds.shown(kind)}")
    deps = value.get("depends_on", [])
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise ConfigError(f"{where}: 'depends_on' must be a list of service names, got {bounds.shown(deps)}")
    if len(set(deps)) != len(deps):
        raise ConfigError(f"{where}: 'depends_on' lists a service twice: {', '.join(deps)}")
    entry = value.get("entry", False)
    if not isinstance(entry, bool):
        raise ConfigError(f"{where}: 'entry' must be true or false, got {bounds.shown(entry)}")
    disk = bounds.whole(value.get("disk_mb", 0), f"{where}: 'disk_mb' (MiB)", 0, bounds.MAX_DISK_MB)
    restart_s = None
    if "restart_s" in value:
        restart_s = bounds.number(value["restart_s"], f"{where}: 'restart_s' (seconds)", 0.0, bounds.MAX_RESTART_S)
    return Service(name=name, depends_on=tuple(deps), entry=entry, disk_mb=disk, restart_s=restart_s, kind=kind)


def _kind(value: object) -> str:
    """What a document or field is, by type only: the file may not be ours, and may hold secrets."""
    return "nothing" if value is None else f"a {type(value).__name__}"
