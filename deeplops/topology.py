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
_SERVICE_KEYS = {"depends_on", "entry", "disk_mb", "restart_s"}


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
    by_name = {s.name: s for s in services}
    given = {s.name: i for i, s in enumerate(services)}
    # Dependencies first; ties keep the file's order so slots are predictable.
    order = list(nx.lexicographical_topological_sort(g.reverse(copy=False), key=lambda n: given[n]))
    return Topology(name=name, services=tuple(by_name[n] for n in order))


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
    return Service(name=name, depends_on=tuple(deps), entry=entry, disk_mb=disk, restart_s=restart_s)


def _kind(value: object) -> str:
    """What a document or field is, by type only: the file may not be ours, and may hold secrets."""
    return "nothing" if value is None else f"a {type(value).__name__}"
