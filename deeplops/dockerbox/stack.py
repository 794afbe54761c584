"""Bringing a sandbox's containers up and down, and finding what is there.

A sandbox NAME is: a network ``NAME``; one container ``NAME-SERVICE`` per service, labelled
``deeplops.sandbox=NAME`` and ``deeplops.service=SERVICE``; a tmpfs data volume per service with
``disk_mb`` under ``STATE_DIR/NAME``; iptables blocks commented ``deeplops:NAME:SERVICE``.
``down`` removes all of it, whoever created it.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import docker
from docker.errors import APIError, DockerException, NotFound
from docker.models.containers import Container

from deeplops.dockerbox import host
from deeplops.errors import SandboxError
from deeplops.topology import Service, Topology, topology_from_dict, topology_to_dict

LABEL_SANDBOX = "deeplops.sandbox"
LABEL_SERVICE = "deeplops.service"
LABEL_TOPOLOGY = "deeplops.topology"
"""On the sandbox's network: its topology as JSON (DESIGN §5's document), so others can attach."""
PORT = 8080
CPU_LIMIT = 0.25
"""CPU allowance of every service, in cores: small, so a CPU hog inside really starves it."""
DEP_TIMEOUT_S = 0.5
HEALTH_INTERVAL_S = 1.0


def connect() -> docker.DockerClient:
    """A client of the local Docker engine, or a SandboxError saying how to get one."""
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except DockerException as exc:
        raise SandboxError(f"Docker engine not reachable ({exc.__class__.__name__}): start dockerd and retry") from None
    return client


def container_name(sandbox: str, service: str) -> str:
    """Name of a service's container."""
    return f"{sandbox}-{service}"


def block_tag(sandbox: str, service: str = "") -> str:
    """Comment of a service's iptables block (a prefix for the whole sandbox when service is empty)."""
    return f"deeplops:{sandbox}:{service}"


def start_service(client: docker.DockerClient, sandbox: str, service: Service, image: str) -> Container:
    """Create and start one service's container on the sandbox network (its volume must be mounted)."""
    depends = ",".join(f"{d}:{PORT}" for d in service.depends_on)
    volumes = {str(host.volume_dir(sandbox, service.name)): {"bind": "/data", "mode": "rw"}} if service.disk_mb else {}
    try:
        container = client.containers.run(
            image,
            name=container_name(sandbox, service.name),
            detach=True,
            labels={LABEL_SANDBOX: sandbox, LABEL_SERVICE: service.name},
            environment={
                "DEEPLOPS_SERVICE": service.name,
                "DEEPLOPS_DEPENDS": depends,
                "DEEPLOPS_DATA": "/data" if service.disk_mb else "",
                "DEEPLOPS_TIMEOUT": str(DEP_TIMEOUT_S),
                "DEEPLOPS_HEALTH_INTERVAL": str(HEALTH_INTERVAL_S),
            },
            network=sandbox,
            networking_config={sandbox: client.api.create_endpoint_config(aliases=[service.name])},
            volumes=volumes,
            nano_cpus=int(CPU_LIMIT * 1e9),
            mem_limit="128m",
            stop_signal="SIGTERM",
        )
    except APIError as exc:
        raise SandboxError(f"starting {service.name}: {exc.explanation or exc}") from None
    return container


def up(client: docker.DockerClient, topology: Topology, sandbox: str, image: str, data: dict[str, float]) -> None:
    """Start the whole topology as sandbox ``sandbox``; ``data[service]`` is the fraction of its
    volume to fill with data. Returns once every service answers /health."""
    host.require_root()
    if client.containers.list(all=True, filters={"label": f"{LABEL_SANDBOX}={sandbox}"}):
        raise SandboxError(f"sandbox {sandbox!r} already exists: run 'deeplops sandbox down --name {sandbox}' first")
    try:
        spec = json.dumps(topology_to_dict(topology))
        client.networks.create(sandbox, driver="bridge", labels={LABEL_SANDBOX: sandbox, LABEL_TOPOLOGY: spec})
    except APIError as exc:
        raise SandboxError(f"creating network {sandbox!r}: {exc.explanation or exc}") from None
    for service in topology.services:
        if service.disk_mb:
            prepare_volume(sandbox, service, data.get(service.name, 0.0))
    for service in topology.services:
        start_service(client, sandbox, service, image)
    wait_healthy(client, sandbox, topology, timeout_s=30.0)


def data_fractions(topology: Topology, seed: int) -> dict[str, float]:
    """How full of data each service's volume starts, drawn from ``seed`` as the simulator draws it."""
    import numpy as np

    from deeplops.sim import SimParams

    lo, hi = SimParams().data_fraction
    rng = np.random.default_rng(seed)
    return {s.name: float(rng.uniform(lo, hi)) for s in topology.services if s.disk_mb}


def prepare_volume(sandbox: str, service: Service, fraction: float) -> None:
    """A fresh volume for ``service`` holding ``fraction`` of its size in data."""
    path = host.volume_dir(sandbox, service.name)
    host.mount_volume(path, service.disk_mb)
    size = int(fraction * service.disk_mb * 2**20)
    with (path / "data.bin").open("wb") as f:
        f.write(b"\1" * size)


def topology_of(client: docker.DockerClient, sandbox: str) -> Topology:
    """The topology sandbox ``sandbox`` runs, from its network's label."""
    for network in client.networks.list(filters={"label": f"{LABEL_SANDBOX}={sandbox}"}):
        spec = network.attrs.get("Labels", {}).get(LABEL_TOPOLOGY)
        if spec:
            return topology_from_dict(json.loads(spec), source=f"sandbox {sandbox}")
    running = ", ".join(sorted(sandboxes(client))) or "none"
    raise SandboxError(f"no live sandbox {sandbox!r}: expected one made by 'deeplops sandbox up' (running: {running})")


def containers(client: docker.DockerClient, sandbox: str) -> dict[str, Container]:
    """The sandbox's containers by service name (any state)."""
    found = client.containers.list(all=True, sparse=False, filters={"label": f"{LABEL_SANDBOX}={sandbox}"})
    return {c.labels[LABEL_SERVICE]: c for c in found}


def ip_of(container: Container, sandbox: str) -> str | None:
    """The container's address on the sandbox network, or None when it is not running."""
    networks = container.attrs.get("NetworkSettings", {}).get("Networks", {})
    ip = (networks.get(sandbox) or {}).get("IPAddress")
    return ip or None


def http_json(ip: str, path: str, timeout: float) -> tuple[int, dict[str, Any]]:
    """GET http://ip:PORT/path; (status, body) with status 0 on a refused or timed-out request."""
    try:
        with urllib.request.urlopen(f"http://{ip}:{PORT}{path}", timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {}
    except (OSError, ValueError):
        return 0, {}


def wait_healthy(client: docker.DockerClient, sandbox: str, topology: Topology, timeout_s: float) -> None:
    """Block until every service's /health passes, or fail naming those that do not."""
    deadline = time.monotonic() + timeout_s
    pending = set(topology.names)
    while pending and time.monotonic() < deadline:
        found = containers(client, sandbox)
        for name in list(pending):
            ip = ip_of(found[name], sandbox) if name in found else None
            if ip and http_json(ip, "/health", 0.5)[0] == 200:
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


def status(client: docker.DockerClient, sandbox: str) -> list[ServiceStatus]:
    """State and health of each container of ``sandbox``."""
    found = containers(client, sandbox)

    def one(item: tuple[str, Container]) -> ServiceStatus:
        name, container = item
        ip = ip_of(container, sandbox)
        healthy = container.status == "running" and ip is not None and http_json(ip, "/health", 0.5)[0] == 200
        return ServiceStatus(name, container.status, healthy, ip)

    with ThreadPoolExecutor(max_workers=16) as pool:
        return sorted(pool.map(one, found.items()), key=lambda s: s.service)


def sandboxes(client: docker.DockerClient) -> set[str]:
    """Names of every sandbox with a container or network on this engine."""
    names = {c.labels[LABEL_SANDBOX] for c in client.containers.list(all=True, filters={"label": LABEL_SANDBOX})}
    names |= {n.attrs["Labels"][LABEL_SANDBOX] for n in client.networks.list(filters={"label": LABEL_SANDBOX})}
    return names


def down(sandbox: str, client: docker.DockerClient | None = None) -> list[str]:
    """Remove every container, network, volume and block of ``sandbox``; return what was removed."""
    client = client or connect()
    removed = []
    for container in client.containers.list(all=True, filters={"label": f"{LABEL_SANDBOX}={sandbox}"}):
        try:
            container.remove(force=True)
            removed.append(f"container {container.name}")
        except NotFound:
            pass
    for network in client.networks.list(filters={"label": f"{LABEL_SANDBOX}={sandbox}"}):
        try:
            network.remove()
            removed.append(f"network {network.name}")
        except NotFound:
            pass
    root = host.STATE_DIR / sandbox
    if root.exists():
        host.unmount_all(root)
        removed.append(f"volumes {root}")
    host.unblock(block_tag(sandbox))
    return removed
