"""Bringing a sandbox's containers up and down, and finding what is there.

A sandbox NAME is: a network ``NAME``; one container ``NAME-SERVICE`` per service, labelled
``deeplops.sandbox=NAME`` and ``deeplops.service=SERVICE``; a tmpfs data volume per service with
``disk_mb`` under ``STATE_DIR/NAME``; iptables blocks commented ``deeplops:NAME:SERVICE``.
``down`` removes all of it, whoever created it. NAME passes ``host.check_name`` first, always.

A sandbox made for a process (a DockerSandbox) records that process as its owner
(``deeplops.owner``, see ``owner.owner_id``); once the owner is gone the sandbox is stale, and
``reap_stale`` removes it, for when its reaper was killed along with its owner. A sandbox made by
``deeplops sandbox up`` has no owner and lives until ``down``.

Every public function here is an edge of the backend: engine errors leave it as EngineError.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import docker
import psutil
from docker.errors import APIError, NotFound
from docker.models.containers import Container

from deeplops import bounds
from deeplops.dockerbox import host, releases, restore
from deeplops.dockerbox.engine import ENGINE_ERRORS, edge
from deeplops.dockerbox.owner import owner_gone, owner_pid
from deeplops.errors import EngineError, SandboxError
from deeplops.system import APP_DB_WAIT_S, CONN_LEAK_PER_TICK, DATA_FRACTION, MEMORY_MB, PROBE_TIMEOUT_S, TICK_S
from deeplops.topology import CLIENT_KINDS, Service, Topology, topology_from_dict, topology_to_dict

LABEL_SANDBOX = "deeplops.sandbox"
LABEL_SERVICE = "deeplops.service"
LABEL_TOPOLOGY = "deeplops.topology"
"""On the sandbox's network: its topology as JSON (the document of docs/design.md §8), so others can attach."""
LABEL_OWNER = "deeplops.owner"
"""On the network and containers of a sandbox made for a process: that process (``owner.owner_id``)."""
MEMORY_SHARE = 0.5
"""Most of the host's available memory one sandbox's volumes may take: they are tmpfs, in memory."""
PORT = 8080
"""Where every kind answers the service's HTTP contract (/ping, /health, /work, /stats)."""
NATIVE_PORTS = {"postgres": 5432, "redis": 6379}
"""Where each of ``STORE_KINDS`` also speaks its own protocol, to ``CLIENT_KINDS`` (every other
kind calls each dependency's PORT)."""
PROGRAMS: dict[str, list[str]] = {
    "service": ["python3", "-u", "/app/service.py"],
    "app": ["python3", "-u", "/app/app.py"],
    "worker": ["python3", "-u", "/app/worker.py"],
    "postgres": ["python3", "-u", "/app/launcher.py", "postgres"],
    "redis": ["python3", "-u", "/app/launcher.py", "redis"],
    "nginx": ["python3", "-u", "/app/launcher.py", "nginx"],
}
"""Each kind's command in the service image (docs/design.md §4.1; the programs are ``sandbox/``'s)."""
CPU_LIMIT = 0.25
"""CPU allowance of every service, in cores: small, so a CPU hog inside really starves it."""
UP_TIMEOUT_S = 30.0
"""How long ``up`` waits for every service to pass /health, besides the slowest ``restart_s``."""
SHOWN_HOST_WIDTH = 200
"""Characters of a ``DOCKER_HOST`` an error shows: a socket's whole path, unless past any sensible length."""
HEALTH_INTERVAL_S = TICK_S
"""How often each service refreshes the health its /ping answers: a failure climbs one hop a tick."""


def connect() -> docker.DockerClient:
    """A client of the local Docker engine (``DOCKER_HOST``'s, if set), or an EngineError saying how
    to get one. The engine must be this machine's: sandboxes act on its host (network, cgroups,
    volumes)."""
    given = os.environ.get("DOCKER_HOST", "")
    _check_local(given)
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except ENGINE_ERRORS as exc:
        at = f" at {bounds.shown(given, SHOWN_HOST_WIDTH)}" if given else ""
        raise EngineError(
            f"Docker engine{at} not reachable ({exc.__class__.__name__}): start dockerd and retry"
        ) from None
    return client


def _check_local(docker_host: str) -> None:
    """An EngineError where ``docker_host`` (a ``DOCKER_HOST``) names an engine on another machine."""
    if not docker_host or docker_host.startswith(("unix://", "/")):
        return
    where = urllib.parse.urlsplit(docker_host if "://" in docker_host else f"tcp://{docker_host}")
    try:
        loopback = ipaddress.ip_address(where.hostname or "").is_loopback
    except ValueError:
        loopback = where.hostname == "localhost"
    if not loopback:
        shown = bounds.shown(docker_host, SHOWN_HOST_WIDTH)
        raise EngineError(f"DOCKER_HOST={shown} names an engine that may be another machine's: expected this "
                          "machine's (a unix:// socket or a loopback address), whose network, cgroups and volumes "
                          "the sandbox acts on")  # fmt: skip


def container_name(sandbox: str, service: str) -> str:
    """Name of a service's container."""
    return f"{sandbox}-{service}"


def block_tag(sandbox: str, service: str = "") -> str:
    """Comment of a service's iptables block (a prefix for the whole sandbox when service is empty)."""
    return f"deeplops:{sandbox}:{service}"


def environment(service: Service, kinds: Mapping[str, str]) -> dict[str, str]:
    """The environment a service's program reads (``sandbox/service.py`` and the kinds' programs);
    ``kinds`` holds its dependencies' kinds (one missing is taken for a generic service), in slot
    order where it is a topology's.

    An app or a worker reaches a PostgreSQL or Redis dependency at its own port with its own
    client (``DEEPLOPS_POSTGRES``, ``DEEPLOPS_REDIS``; its PostgreSQL servers in slot order, so its
    first is the one a connection leak of it goes into, ``Topology.leaks_at``); every other
    dependency, and every dependency of the other kinds, over HTTP at PORT (``DEEPLOPS_DEPENDS``).
    A service with ``restart_s`` is told to listen only that long after its process starts; one
    with a volume, where a recreate leaves a restore plan (``restore.PLAN_NAME``). Every one is told
    the rate of a connection leak (``DEEPLOPS_CONN_LEAK_PER_S``), which only an app's or a worker's
    running process takes, when it is set off (``mechanisms.conn_leak``)."""
    by_port: dict[str, list[str]] = {"DEEPLOPS_DEPENDS": [], "DEEPLOPS_POSTGRES": [], "DEEPLOPS_REDIS": []}
    slot = {name: i for i, name in enumerate(kinds)}
    postgres = sorted((dep for dep in service.depends_on if kinds.get(dep) == "postgres"), key=slot.__getitem__)
    for dep in [*postgres, *(dep for dep in service.depends_on if dep not in postgres)]:
        kind = kinds.get(dep, "service")
        if service.kind in CLIENT_KINDS and kind in NATIVE_PORTS:
            by_port[f"DEEPLOPS_{kind.upper()}"].append(f"{dep}:{NATIVE_PORTS[kind]}")
        else:
            by_port["DEEPLOPS_DEPENDS"].append(f"{dep}:{PORT}")
    env = {
        "DEEPLOPS_SERVICE": service.name,
        "DEEPLOPS_DEPENDS": ",".join(by_port["DEEPLOPS_DEPENDS"]),
        "DEEPLOPS_DATA": "/data" if service.disk_mb else "",
        "DEEPLOPS_TIMEOUT": str(PROBE_TIMEOUT_S),
        "DEEPLOPS_HEALTH_INTERVAL": str(HEALTH_INTERVAL_S),
        "DEEPLOPS_CONN_LEAK_PER_S": repr(CONN_LEAK_PER_TICK / TICK_S),
    }
    if service.kind in CLIENT_KINDS:
        env |= {name: ",".join(by_port[name]) for name in ("DEEPLOPS_POSTGRES", "DEEPLOPS_REDIS")}
    if service.kind == "app":
        env["DEEPLOPS_DB_WAIT_S"] = repr(APP_DB_WAIT_S)
    if service.restart_s is not None:
        env["DEEPLOPS_START_S"] = repr(service.restart_s)
    if service.disk_mb:
        env["DEEPLOPS_RESTORE_PLAN"] = f"/data/{restore.PLAN_NAME}"
    return env


@edge
def start_service(
    client: docker.DockerClient,
    sandbox: str,
    service: Service,
    image: str,
    owner: str | None = None,
    topology: Topology | None = None,
    history: releases.History | None = None,
) -> Container:
    """Create and start one service's container on the sandbox network (its volume must be mounted),
    running its kind's program; ``topology``, the one it belongs to, tells its dependencies' kinds;
    ``history``, its releases (the first release when None): it runs the current one."""
    volumes = {str(host.volume_dir(sandbox, service.name)): {"bind": "/data", "mode": "rw"}} if service.disk_mb else {}
    history = history or releases.History()
    labels = {LABEL_SANDBOX: sandbox, LABEL_SERVICE: service.name, releases.LABEL: releases.to_label(history)}
    labels |= {LABEL_OWNER: owner} if owner else {}
    kinds = dict(zip(topology.names, topology.kinds, strict=True)) if topology is not None else {}
    try:
        container = client.containers.run(
            image,
            command=PROGRAMS[service.kind],
            name=container_name(sandbox, service.name),
            detach=True,
            labels=labels,
            environment=environment(service, kinds) | releases.environment(history),
            network=sandbox,
            networking_config={sandbox: client.api.create_endpoint_config(aliases=[service.name])},
            volumes=volumes,
            nano_cpus=int(CPU_LIMIT * 1e9),
            mem_limit=f"{MEMORY_MB + service.disk_mb}m",
            # No swap beyond it: a process over its limit (a leaking release) is killed, not swapped out.
            memswap_limit=f"{MEMORY_MB + service.disk_mb}m",
            stop_signal="SIGTERM",
        )
    except APIError as exc:
        raise SandboxError(f"starting {service.name}: {exc.explanation or exc}") from None
    return container


@edge
def up(
    client: docker.DockerClient,
    topology: Topology,
    sandbox: str,
    image: str,
    data: dict[str, float],
    owner: str | None = None,
) -> None:
    """Start the whole topology as sandbox ``sandbox``; ``data[service]`` is the fraction of its
    volume to fill with data; ``owner`` (``owner.owner_id``) the process it is made for, if any.
    Returns once every service answers /health. Whole or nothing: on any failure or interruption
    it removes what it made (and never touches a sandbox that was already there)."""
    host.check_name(sandbox)
    check_memory(topology)
    host.require_root()
    if sandbox in sandboxes(client) or host.sandbox_dir(sandbox).exists():
        raise SandboxError(f"sandbox {sandbox!r} already exists: run 'deeplops sandbox down --name {sandbox}' first")
    labels = {LABEL_SANDBOX: sandbox, LABEL_TOPOLOGY: json.dumps(topology_to_dict(topology))}
    try:
        # check_duplicate: the engine would otherwise make a second network of a name in use.
        client.networks.create(sandbox, driver="bridge", check_duplicate=True,
                               labels=labels | ({LABEL_OWNER: owner} if owner else {}))  # fmt: skip
    except APIError as exc:  # refused: nothing was made, and the name may be another's
        raise SandboxError(f"creating network {sandbox!r}: {exc.explanation or exc}") from None
    except BaseException:  # interrupted while the engine may have made it
        _undo(client, sandbox)
        raise
    try:
        for service in topology.services:
            if service.disk_mb:
                prepare_volume(sandbox, service, data.get(service.name, 0.0))
        for service in topology.services:
            start_service(client, sandbox, service, image, owner, topology)
        slowest = max((s.restart_s or 0.0 for s in topology.services), default=0.0)
        wait_healthy(client, sandbox, topology, timeout_s=UP_TIMEOUT_S + slowest)
    except BaseException:
        _undo(client, sandbox)
        raise


def _undo(client: docker.DockerClient, sandbox: str) -> None:
    """Remove a sandbox half made; a second Ctrl-C must not cut that short."""
    with deferred_signals():
        down(sandbox, client)


def check_memory(topology: Topology) -> None:
    """Refuse a topology whose volumes together would take more than MEMORY_SHARE of the memory
    this host has available: tmpfs lives in memory, and a full one cannot be swapped out here."""
    total = sum(s.disk_mb for s in topology.services)
    available = psutil.virtual_memory().available // 2**20
    if total > MEMORY_SHARE * available:
        raise SandboxError(
            f"topology {topology.name!r}: its volumes need {total} MiB of memory (tmpfs), more than "
            f"{MEMORY_SHARE:.0%} of the {available} MiB this host has available: lower the services' disk_mb"
        )


def data_fractions(topology: Topology, seed: int) -> dict[str, float]:
    """How full of data each service's volume starts, drawn from ``seed`` in DATA_FRACTION (the
    simulator's default range)."""
    import numpy as np

    lo, hi = DATA_FRACTION
    rng = np.random.default_rng(seed)
    return {s.name: float(rng.uniform(lo, hi)) for s in topology.services if s.disk_mb}


def prepare_volume(sandbox: str, service: Service, fraction: float) -> None:
    """A fresh volume for ``service`` holding ``fraction`` of its size in data."""
    path = host.volume_dir(sandbox, service.name)
    host.mount_volume(path, service.disk_mb)
    size = int(fraction * restore.volume_bytes(service))
    host.write_new(path, restore.DATA_NAME, bytes([restore.DATA_BYTE]) * size)


@edge
def topology_of(client: docker.DockerClient, sandbox: str) -> Topology:
    """The topology sandbox ``sandbox`` runs, from its network's label."""
    for network in client.networks.list(filters={"label": f"{LABEL_SANDBOX}={sandbox}"}):
        spec = network.attrs.get("Labels", {}).get(LABEL_TOPOLOGY)
        if spec:
            return topology_from_dict(json.loads(spec), source=f"sandbox {sandbox}")
    running = ", ".join(sorted(sandboxes(client))) or "none"
    raise SandboxError(f"no live sandbox {sandbox!r}: expected one made by 'deeplops sandbox up' (running: {running})")


@edge
def containers(client: docker.DockerClient, sandbox: str) -> dict[str, Container]:
    """The sandbox's containers by service name (any state); one with the sandbox's label but no
    service label is not one of its services, and is left out."""
    found = client.containers.list(
        all=True, sparse=False, ignore_removed=True, filters={"label": f"{LABEL_SANDBOX}={sandbox}"}
    )
    return {c.labels[LABEL_SERVICE]: c for c in found if LABEL_SERVICE in c.labels}


def ip_of(container: Container, sandbox: str) -> str | None:
    """The container's address on the sandbox network, or None when it is not running."""
    networks = container.attrs.get("NetworkSettings", {}).get("Networks", {})
    ip = (networks.get(sandbox) or {}).get("IPAddress")
    return ip or None


def http_json(ip: str, path: str, timeout: float) -> tuple[int, dict[str, Any]]:
    """GET http://ip:PORT/path; (status, body) with status 0 on a refused or timed-out request, or
    one cut off mid-answer (a process killed while it answered: HTTPException, not an OSError)."""
    try:
        with urllib.request.urlopen(f"http://{ip}:{PORT}{path}", timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except (OSError, ValueError, http.client.HTTPException):
            return exc.code, {}
    except (OSError, ValueError, http.client.HTTPException):
        return 0, {}


@edge
def wait_healthy(client: docker.DockerClient, sandbox: str, topology: Topology, timeout_s: float) -> None:
    """Block until every service's /health passes, or fail naming those that do not."""
    deadline = time.monotonic() + timeout_s
    pending = set(topology.names)
    while pending and time.monotonic() < deadline:
        found = containers(client, sandbox)
        for name in list(pending):
            ip = ip_of(found[name], sandbox) if name in found else None
            if ip and http_json(ip, "/health", PROBE_TIMEOUT_S)[0] == 200:
                pending.discard(name)
        if pending:
            time.sleep(0.2)
    if pending:
        raise SandboxError(f"sandbox {sandbox!r}: not healthy after {timeout_s:.0f} s: {', '.join(sorted(pending))}")


@dataclass(frozen=True)
class ServiceStatus:
    """What ``sandbox status`` reports for one service."""

    service: str
    state: str
    healthy: bool
    ip: str | None
    kind: str = "service"
    """What it runs (docs/design.md §4.1)."""
    processes: tuple[str, ...] = ()
    """The programs running in its container, each named once, in the order of its process list:
    ``launcher.py`` and ``postgres``, say, for real PostgreSQL under its launcher."""


def program_name(command: str) -> str:
    """The program a process list's command line runs: a Python program by its script's name,
    and a server by its own name, without the title it gives its children (``postgres: walwriter``)."""
    words = command.split()
    if not words:
        return "?"
    name = words[0].rsplit("/", 1)[-1].removesuffix(":")
    if name.startswith("python"):
        return next((w.rsplit("/", 1)[-1] for w in words[1:] if w.endswith(".py")), name)
    return name


def processes(container: Container) -> tuple[str, ...]:
    """The programs running in a container (none when it is not running)."""
    try:
        listing = container.top()
    except APIError:  # not running: no process list
        return ()
    column = listing.get("Titles", []).index("CMD") if "CMD" in listing.get("Titles", []) else -1
    names = [program_name(row[column]) for row in listing.get("Processes") or []]
    return tuple(dict.fromkeys(names))


@edge
def status(client: docker.DockerClient, sandbox: str) -> list[ServiceStatus]:
    """State, health, kind and programs of each container of ``sandbox``."""
    found = containers(client, sandbox)
    try:
        topology = topology_of(client, sandbox)
        kinds = dict(zip(topology.names, topology.kinds, strict=True))
    except SandboxError:  # containers left without their network: their kinds are not known
        kinds = {}

    def one(item: tuple[str, Container]) -> ServiceStatus:
        name, container = item
        ip = ip_of(container, sandbox)
        healthy = (
            container.status == "running" and ip is not None and http_json(ip, "/health", PROBE_TIMEOUT_S)[0] == 200
        )
        return ServiceStatus(name, container.status, healthy, ip, kinds.get(name, "?"), processes(container))

    with ThreadPoolExecutor(max_workers=16) as pool:
        return sorted(pool.map(one, found.items()), key=lambda s: s.service)


@dataclass(frozen=True)
class Found:
    """A sandbox on this engine, as ``sandbox status --all`` lists it."""

    sandbox: str
    containers: int
    """How many containers it has, in any state."""
    owner: int | None
    """The process it was made for; None when made by ``deeplops sandbox up`` (it lives until ``down``)."""
    stale: bool
    """Whether that process is certainly gone (and its reaper with it): nothing will remove it but ``down``."""


@edge
def survey(client: docker.DockerClient) -> list[Found]:
    """Every sandbox on this engine with a valid name, by name, with its owner and whether it is stale."""
    found: dict[str, list[dict[str, str]]] = {}
    for labels in _container_labels(client):
        found.setdefault(labels[LABEL_SANDBOX], []).append(labels)
    networks = {n.attrs["Labels"][LABEL_SANDBOX]: n.attrs["Labels"] for n in _networks(client)}
    result = []
    for name in sorted(set(found) | set(networks)):
        if not _valid(name):
            continue
        owners = {
            labels[LABEL_OWNER] for labels in [*found.get(name, []), networks.get(name, {})] if LABEL_OWNER in labels
        }
        stale = bool(owners) and all(owner_gone(o) for o in owners)
        pids = sorted(pid for pid in map(owner_pid, owners) if pid is not None)
        result.append(Found(name, len(found.get(name, [])), pids[0] if pids else None, stale))
    return result


@edge
def reap_stale(client: docker.DockerClient, log: Callable[[str], None] = lambda line: None) -> list[str]:
    """Remove every stale sandbox (its owner is gone, and its reaper with it); their names."""
    reaped = []
    for found in survey(client):
        if not found.stale:
            continue
        try:
            down(found.sandbox, client)
        except SandboxError as exc:  # this run goes on; 'sandbox down' says more
            log(f"could not remove stale sandbox {found.sandbox}: {exc}")
            continue
        log(f"removed stale sandbox {found.sandbox} (its owner, process {found.owner}, is gone)")
        reaped.append(found.sandbox)
    return reaped


@edge
def sandboxes(client: docker.DockerClient) -> set[str]:
    """Names of every sandbox with a container or network on this engine (valid names only: a label
    no deeplops wrote is left to 'docker rm')."""
    names = {labels[LABEL_SANDBOX] for labels in _container_labels(client)}
    names |= {n.attrs["Labels"][LABEL_SANDBOX] for n in _networks(client)}
    return {name for name in names if _valid(name)}


def _container_labels(client: docker.DockerClient) -> list[dict[str, str]]:
    """The labels of every sandbox's container, in one call: no inspection of each, which fails on a
    container another process removes meanwhile."""
    return [c["Labels"] for c in client.api.containers(all=True, filters={"label": LABEL_SANDBOX})]


def _networks(client: docker.DockerClient) -> list[Any]:
    return client.networks.list(filters={"label": LABEL_SANDBOX})


def _valid(name: str) -> bool:
    try:
        host.check_name(name)
    except SandboxError:
        return False
    return True


@edge
def down(sandbox: str, client: docker.DockerClient | None = None) -> list[str]:
    """Remove every container, network, volume and block of ``sandbox``; return what was removed.
    Safe to run while another cleanup of the same sandbox (its reaper) runs."""
    root = host.sandbox_dir(sandbox)  # checks the name before anything is touched
    client = client or connect()
    removed = []
    listed = client.containers.list(all=True, ignore_removed=True, filters={"label": f"{LABEL_SANDBOX}={sandbox}"})
    for container in listed:
        if _removed(lambda container=container: remove_container(container)):
            removed.append(f"container {container.name}")
    for network in client.networks.list(filters={"label": f"{LABEL_SANDBOX}={sandbox}"}):
        if _removed(lambda network=network: _remove_network(network)):
            removed.append(f"network {network.name}")
    if root.exists() or root.is_symlink():
        host.unmount_all(root)
        removed.append(f"volumes {root}")
    host.unblock(block_tag(sandbox))
    return removed


def _remove_network(network: Any, timeout_s: float = 10.0) -> None:
    """Remove a network once it has no endpoints: a container of it may still be on its way out,
    removed by another cleanup of the same sandbox (its reaper, or a reaping of stale sandboxes)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            network.remove()
            return
        except APIError as exc:
            if "active endpoints" not in str(exc.explanation) or time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def remove_container(container: Any, timeout_s: float = 5.0) -> None:
    """Remove the container, killing it if it runs. A process that has just died (stopped by us, or
    crashed) can still read as running to the engine, whose kill then fails with "is not running":
    wait for the engine to record the exit, then remove it again."""
    try:
        container.remove(force=True)
    except APIError as exc:
        if isinstance(exc, NotFound) or "is not running" not in str(exc.explanation or exc):
            raise
        deadline = time.monotonic() + timeout_s
        while (container.reload() or container.status) == "running" and time.monotonic() < deadline:
            time.sleep(0.01)
        container.remove(force=True)


def _removed(remove: Callable[..., None], **options: bool) -> bool:
    """Run a removal; False when the thing is gone or already going (another cleanup got there first)."""
    try:
        remove(**options)
    except NotFound:
        return False
    except APIError as exc:
        if exc.status_code == 409 and "in progress" in str(exc.explanation):
            return False
        raise
    return True


@contextmanager
def terminate_unwinds() -> Iterator[None]:
    """Inside: SIGTERM raises SystemExit(143) as Ctrl-C raises KeyboardInterrupt, so a sandbox half
    made is removed on the way out. Only where SIGTERM has its default action, in the main thread."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) not in (
        signal.SIG_DFL, None,
    ):  # fmt: skip
        yield
        return
    signal.signal(signal.SIGTERM, exit_on_signal)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block is done (main thread only), then deliver the first."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    before = {sig: signal.getsignal(sig) for sig in held}
    for sig in held:
        signal.signal(sig, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        if caught:
            signal.raise_signal(caught[0])


def exit_on_signal(signum: int, frame: object) -> None:
    """A signal handler that unwinds like an exit: ``finally`` blocks and atexit run."""
    raise SystemExit(128 + signum)
