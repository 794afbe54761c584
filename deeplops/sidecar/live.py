"""The live stack a sidecar watches: a deeplops sandbox, or a user's Docker Compose project.

Both measure into the observation layout of ``deeplops.observation`` and repair through the
Docker backend's mechanisms. A deeplops sandbox (``deeplops.sandbox=NAME``) is measured exactly
as the environment measures it (``DockerSandbox.attach``). A Compose project
(``com.docker.compose.project=NAME``) is read from its labels and its HEALTHCHECK status:
dependencies from ``com.docker.compose.depends_on`` (or a ``deeplops.depends_on`` label,
comma-separated), entries from ``deeplops.entry=true`` (else the services nothing depends on),
and containers labelled ``deeplops.ignore=true`` (the sidecar's own, when it runs as a service of
the project) left out; only ``restart`` applies there, since the other repairs need deeplops' own
volumes and links.

Stacks change under a sidecar: containers are removed, added or recreated by others at any
moment. What cannot be watched (a container with a sandbox's label but no service label) is
left out and named; a stack larger than the observation's slots is refused (``attach``); a
repair that finds its container gone raises ``StackChangedError``. Every operation on a stack
translates engine errors (``EngineError``), so a caller catches ``SandboxError`` alone.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import docker
import numpy as np
from docker.errors import NotFound
from docker.models.containers import Container

from deeplops.dockerbox import host, mechanisms, stack
from deeplops.dockerbox.engine import edge
from deeplops.dockerbox.handle import StackHandle
from deeplops.dockerbox.sandbox import DockerSandbox, counter_rate
from deeplops.errors import ConfigError, EngineError, SandboxError
from deeplops.faults import Repair
from deeplops.observation import MAX_SLOTS, N_FEATURES, RESTARTS_SCALE, SINCE_REPAIR_SCALE, Feature
from deeplops.sandbox import ArrayState
from deeplops.system import COUNTS_AS_RESTART, NEVER_REPAIRED, RESTART_DECAY
from deeplops.topology import Service, Topology, build_topology

COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
COMPOSE_DEPENDS = "com.docker.compose.depends_on"
DEPENDS = "deeplops.depends_on"
ENTRY = "deeplops.entry"
IGNORE = "deeplops.ignore"


class StackChangedError(SandboxError):
    """The stack's containers changed under an operation (one removed, or not a service at all)."""


class LiveStack(Protocol):
    """What the sidecar needs of a stack."""

    name: str
    topology: Topology
    repairs: tuple[Repair, ...]
    """Repairs that can be applied to this kind of stack."""
    built_from: frozenset[str]
    """The fingerprint of the containers it was attached from (set by ``attach``)."""

    def measure(self) -> None: ...
    def observe(self) -> np.ndarray: ...
    @property
    def health(self) -> np.ndarray: ...
    @property
    def slo(self) -> np.ndarray: ...
    def apply(self, service: str, repair: Repair) -> None: ...
    def fingerprint(self) -> frozenset[str]: ...
    def close(self) -> None: ...
    @property
    def ignored(self) -> tuple[str, ...]:
        """Containers of the project left out, each with why (audited when attaching)."""
        ...


@edge
def project_containers(client: docker.DockerClient, project: str) -> tuple[str, list[Container]]:
    """('sandbox' or 'compose', the project's containers); never a container outside it."""
    for kind, label in (("sandbox", stack.LABEL_SANDBOX), ("compose", COMPOSE_PROJECT)):
        found = _labelled(client, label, project)
        if found:
            return kind, found
    return "", []


def _labelled(client: docker.DockerClient, label: str, project: str) -> list[Container]:
    """The containers labelled ``label=project``, less those labelled deeplops.ignore=true."""
    found = client.containers.list(all=True, filters={"label": f"{label}={project}"})
    return [c for c in found if c.labels.get(IGNORE, "").lower() != "true"]


def attach(project: str) -> LiveStack:
    """The live stack ``project``, or a SandboxError naming what was looked for or what is wrong
    with it (a topology it cannot hold, more services than the observation's MAX_SLOTS)."""
    client = stack.connect()
    kind, found = project_containers(client, project)
    made: LiveStack | None = None
    try:
        if kind == "sandbox":
            box = DockerSandbox.attach(project)
            made = SandboxStack(box, _strangers(box.topology, found))
        elif kind == "compose":
            made = ComposeStack(client, project, found)
    except (ConfigError, ValueError) as exc:  # the stack's labels, not the command line: retried while running
        raise SandboxError(f"{kind} {project}: {exc}") from None
    if made is not None:
        # The listing it was made from, not a fresh one: a container added meanwhile must read as
        # a change at the next tick (a fresh listing would take it in, and it would never be seen).
        made.built_from = _fingerprint(found)
        return made
    raise SandboxError(f"no containers labelled deeplops.sandbox={project} or {COMPOSE_PROJECT}={project}: "
                       "expected a running sandbox or Compose project")  # fmt: skip


def check_size(project: str, services: list[str]) -> None:
    """A SandboxError naming the limit when there are more services than observation slots.

    The sidecar refuses rather than watching the first MAX_SLOTS: a policy shown part of a graph
    would blame the services it sees for failures of those it does not, and repair the wrong ones.
    """
    if len(services) > MAX_SLOTS:
        shown = ", ".join(sorted(services)[:4])
        raise SandboxError(
            f"project {project!r} has {len(services)} services ({shown}, ...): the sidecar watches at most "
            f"{MAX_SLOTS} (its observation's slots); expected at most {MAX_SLOTS}, or deeplops.ignore=true "
            "on the containers to leave out"
        )


class SandboxStack:
    """A deeplops sandbox, measured and repaired as the environment does."""

    built_from: frozenset[str] = frozenset()
    """The fingerprint of the containers it was attached from (``attach`` sets it)."""

    repairs: tuple[Repair, ...] = (
        Repair.RESTART, Repair.CLEAN_DISK, Repair.RATE_LIMIT, Repair.RECREATE, Repair.ROLLBACK
    )  # fmt: skip

    def __init__(self, box: DockerSandbox, ignored: tuple[str, ...] = ()) -> None:
        self.box, self.name, self.topology = box, box.name, box.topology
        self.ignored = ignored

    def measure(self) -> None:
        self.box.measure()

    def observe(self) -> np.ndarray:
        return self.box.observe()

    @property
    def health(self) -> np.ndarray:
        return self.box.health

    @property
    def slo(self) -> np.ndarray:
        return self.box.slo

    def apply(self, service: str, repair: Repair) -> None:
        # Recreate makes a container where there is none; every other repair acts on one.
        if service not in self.box.containers and repair is not Repair.RECREATE:
            raise StackChangedError(f"{repair.label} of {service}: it has no container in sandbox {self.name}")
        slot = self.topology.index[service]
        try:
            self.box.repair(np.array([slot]), np.array([int(repair)]))
        except EngineError as exc:
            if not exc.not_found:
                raise
            raise StackChangedError(f"{repair.label} of {service}: its container was removed meanwhile") from None

    @edge
    def fingerprint(self) -> frozenset[str]:
        return _fingerprint(_labelled(self.box.client, stack.LABEL_SANDBOX, self.name))

    def close(self) -> None:
        self.box.close()  # attached: the containers stay


class ComposeStack(ArrayState):
    """A Compose project: topology from labels, health from HEALTHCHECK, restarts through the
    Docker backend's restart (SIGTERM, a short grace, SIGKILL, start)."""

    built_from: frozenset[str] = frozenset()
    """The fingerprint of the containers it was attached from (``attach`` sets it)."""

    repairs: tuple[Repair, ...] = (Repair.RESTART,)

    def __init__(self, client: docker.DockerClient, project: str, found: list[Container]) -> None:
        self.client, self.name = client, project
        containers = {c.labels.get(COMPOSE_SERVICE, c.name): c for c in found}
        self.ignored: tuple[str, ...] = ()
        check_size(project, list(containers))
        self.topology = _compose_topology(project, containers)
        self.handle = StackHandle(client, project, self.topology, self._rewire, containers=containers)
        """What the restart mechanism acts on: the project's containers (no deeplops network, links or floods)."""
        n = self.topology.n_services
        self._fault = np.zeros((1, n), np.int8)
        self._health = np.ones((1, n), np.bool_)
        self._slo = np.ones(1, np.bool_)
        self._feats = np.zeros((1, MAX_SLOTS, N_FEATURES), np.float32)
        self._feats[0, :n, Feature.PRESENT] = 1.0
        self._feats[0, :n, Feature.ENTRY] = self.topology.entries
        # No release of a Compose project is seen yet: "no deploy this episode", not "deployed just now"
        # (a 0 would read as a deploy in progress, which every policy waits out).
        self._feats[0, :n, Feature.SINCE_DEPLOY] = 1.0
        self._since = np.full(n, NEVER_REPAIRED, np.float64)
        self._restarts = np.zeros(n)
        self._cpu: dict[str, tuple[float, int]] = {}

    @edge
    def measure(self) -> None:
        now = time.monotonic()
        for slot, service in enumerate(self.topology.names):
            f, container = self._feats[0, slot], self.handle.containers[service]
            try:
                container.reload()
                state = container.attrs["State"]
            except NotFound:
                state = {"Status": "missing"}
            status = state.get("Status", "missing")
            health = (state.get("Health") or {}).get("Status")
            healthy = status == "running" and health in (None, "healthy")
            f[Feature.HEALTHY] = self._health[0, slot] = healthy
            f[Feature.RUNNING] = status in ("running", "paused")
            f[Feature.LATENCY] = 1.0 if status == "paused" else 0.0
            f[Feature.ERROR_RATE] = 0.0 if healthy else 1.0
            # The host's cgroup files (a sidecar container needs /sys/fs/cgroup mounted): the engine's
            # stats call takes ~1 s a container, too slow for a decision a second.
            used = host.cpu_ns(container.id) if status == "running" else None
            f[Feature.CPU] = counter_rate(self._cpu, service, now, used, 1e9)
            self._restarts[slot] *= RESTART_DECAY
            f[Feature.RESTARTS] = min(1.0, self._restarts[slot] / RESTARTS_SCALE)
            f[Feature.SINCE_REPAIR] = min(1.0, self._since[slot] / SINCE_REPAIR_SCALE)
            self._since[slot] += 1
        self._slo[0] = bool(self._health[0, self.topology.entries].all())

    @edge
    def apply(self, service: str, repair: Repair) -> None:
        if repair is not Repair.RESTART:
            raise SandboxError(f"{repair.label} does not apply to a Compose project: only restart does")
        try:
            mechanisms.restart(self.handle, service)
        except NotFound:
            raise StackChangedError(f"restart of {service}: its container was removed meanwhile") from None
        slot = self.topology.index[service]
        self._since[slot] = 0
        self._restarts[slot] += repair in COUNTS_AS_RESTART

    def _rewire(self, service: str, resume_flood: bool = False) -> None:
        """After a restart (called by the restart mechanism): nothing of deeplops' to re-apply (no
        capped link, no flood), only the container's new state to read."""
        self.handle.containers[service].reload()

    @edge
    def fingerprint(self) -> frozenset[str]:
        return _fingerprint(_labelled(self.client, COMPOSE_PROJECT, self.name))

    def close(self) -> None:
        """Nothing held."""


def _strangers(topology: Topology, found: list[Container]) -> tuple[str, ...]:
    """The containers wearing a sandbox's label that are none of its services: never touched."""
    strangers = []
    for c in found:
        service = c.labels.get(stack.LABEL_SERVICE)
        if not service:
            strangers.append(f"{c.name} (no {stack.LABEL_SERVICE} label)")
        elif service not in topology.index:
            strangers.append(f"{c.name} ({stack.LABEL_SERVICE}={service} is not in the sandbox's topology)")
    return tuple(strangers)


def _compose_topology(project: str, containers: dict[str, Container]) -> Topology:
    depends: dict[str, list[str]] = {}
    for service, c in containers.items():
        raw = c.labels.get(DEPENDS) or c.labels.get(COMPOSE_DEPENDS) or ""
        # Compose writes "db:service_healthy:false,cache:service_started:false"; ours is "db,cache".
        depends[service] = [d.split(":")[0] for d in raw.split(",") if d.split(":")[0] in containers]
    needed = {d for deps in depends.values() for d in deps}
    marked = {s for s, c in containers.items() if c.labels.get(ENTRY, "").lower() == "true"}
    entries = marked or (set(containers) - needed)
    services = [Service(name=s, depends_on=tuple(depends[s]), entry=s in entries) for s in sorted(containers)]
    return build_topology(project, services, source=f"compose project {project}")


def _fingerprint(containers: Any) -> frozenset[str]:
    return frozenset(c.id for c in containers)
