"""The live stack a sidecar watches: a deeplops sandbox, or a user's Docker Compose project.

Both measure into the observation layout of ``deeplops.observation`` and repair through the
Docker backend's mechanisms. A deeplops sandbox (``deeplops.sandbox=NAME``) is measured exactly
as the environment measures it (``DockerSandbox.attach``). A Compose project
(``com.docker.compose.project=NAME``) is read from its labels and its HEALTHCHECK status:
dependencies from ``com.docker.compose.depends_on`` (or a ``deeplops.depends_on`` label,
comma-separated), entries from ``deeplops.entry=true`` (else the services nothing depends on),
and containers labelled ``deeplops.ignore=true`` (the sidecar's own, when it runs as a service of
the project) left out; each service gets ``restart`` and the repairs its labels declare
(``deeplops.sidecar.labels``).

Stacks change under a sidecar: containers are removed, added or recreated by others at any
moment. What cannot be watched (a container with a sandbox's label but no service label) is
left out and named; a stack larger than the observation's slots is refused (``attach``); a
repair that finds its container gone raises ``StackChangedError``. Every operation on a stack
translates engine errors (``EngineError``), so a caller catches ``SandboxError`` alone.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterable
from pathlib import Path
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
from deeplops.faults import REPAIRS_NEEDING_DISK, Repair
from deeplops.observation import MAX_SLOTS, N_FEATURES, RESTARTS_SCALE, SINCE_REPAIR_SCALE, Feature
from deeplops.sandbox import ArrayState
from deeplops.sidecar import composeops, deploys, labels
from deeplops.sidecar.deploys import COMPOSE_PROJECT, COMPOSE_SERVICE
from deeplops.system import COUNTS_AS_RESTART, NEVER_REPAIRED, RESTART_DECAY, TICK_S
from deeplops.topology import Service, Topology, build_topology

COMPOSE_DEPENDS = "com.docker.compose.depends_on"
DEPENDS = "deeplops.depends_on"
ENTRY = "deeplops.entry"
IGNORE = "deeplops.ignore"
EVENTS_LOOKBACK_S = 5.0
"""How far back a Compose stack attached afresh reads stop events: a deploy under way when it
attached (a stop, then the replacement) is still seen as one."""


class StackChangedError(SandboxError):
    """The stack's containers changed under an operation (one removed, or not a service at all)."""


class LiveStack(Protocol):
    """What the sidecar needs of a stack."""

    name: str
    topology: Topology
    repairs: tuple[Repair, ...]
    """Repairs that can be applied to this kind of stack (each service's are ``repairs_of``)."""
    refused: tuple[str, ...]
    """Labels of its services it refused, each with why (audited when attaching)."""
    built_from: frozenset[str]
    """The fingerprint of the containers it was attached from (set by ``attach``)."""

    def measure(self) -> None: ...
    def observe(self) -> np.ndarray: ...
    @property
    def health(self) -> np.ndarray: ...
    @property
    def slo(self) -> np.ndarray: ...
    def repairs_of(self, service: str) -> tuple[Repair, ...]:
        """The repairs that apply to ``service``."""
        ...

    def stopped_by_owner(self, service: str) -> bool:
        """Whether someone else stopped ``service`` on purpose: left to them, never repaired."""
        ...

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
    # ignore_removed: a container removed between the engine's listing and its inspection is gone,
    # not an error (a tick failed on it while a stack was being taken down or grown).
    found = client.containers.list(all=True, ignore_removed=True, filters={"label": f"{label}={project}"})
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

    refused: tuple[str, ...] = ()

    def __init__(self, box: DockerSandbox, ignored: tuple[str, ...] = ()) -> None:
        self.box, self.name, self.topology = box, box.name, box.topology
        self.ignored = ignored

    def stopped_by_owner(self, service: str) -> bool:
        """Never: a sandbox's containers are deeplops' own (its faults included)."""
        return False

    def repairs_of(self, service: str) -> tuple[Repair, ...]:
        """Every repair; clean_disk only where there is a volume."""
        disk = self.topology.has_disk[self.topology.index[service]]
        return tuple(r for r in self.repairs if disk or r not in REPAIRS_NEEDING_DISK)

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
    """A Compose project: topology from labels, health from HEALTHCHECK, and the repairs each
    service declares by its labels (``deeplops.sidecar.labels``) besides restart.

    Restart goes through the Docker backend's restart (SIGTERM, a short grace, SIGKILL, start);
    clean_disk, recreate and rollback through ``composeops``, rollback to the deploy before the
    current one in the project's deploy book (``deploys``). Measured besides health and CPU:
    memory against the container's limit, restarts (every start of its container, whoever made
    it), time since its last deploy, and the disk of the folders it declares cleanable; not its
    latency, error rate, network or connections (README, "What the sidecar sees of a Compose
    project").
    """

    built_from: frozenset[str] = frozenset()
    """The fingerprint of the containers it was attached from (``attach`` sets it)."""

    repairs: tuple[Repair, ...] = (Repair.RESTART, Repair.CLEAN_DISK, Repair.RECREATE, Repair.ROLLBACK)

    def __init__(self, client: docker.DockerClient, project: str, found: list[Container],
                 folder: Path | None = None) -> None:  # fmt: skip
        self.client, self.name = client, project
        containers = {c.labels.get(COMPOSE_SERVICE, c.name): c for c in found}
        self.ignored: tuple[str, ...] = ()
        check_size(project, list(containers))
        self.topology = _compose_topology(project, containers)
        self.declared = {s: labels.declared(c.labels) for s, c in containers.items()}
        self.refused = tuple(f"{s}: {why}" for s in self.topology.names for why in self.declared[s].refused)
        """Labels refused, each with its service and why (audited when attaching)."""
        self.book = deploys.DeployBook(project, folder, _networks(containers.values()))
        self.handle = StackHandle(client, project, self.topology, self._rewire, containers=containers)
        """What the restart mechanism acts on: the project's containers (no deeplops network, links or floods)."""
        n = self.topology.n_services
        self._fault = np.zeros((1, n), np.int8)
        self._health = np.ones((1, n), np.bool_)
        self._slo = np.ones(1, np.bool_)
        self._feats = np.zeros((1, MAX_SLOTS, N_FEATURES), np.float32)
        self._feats[0, :n, Feature.PRESENT] = 1.0
        self._feats[0, :n, Feature.ENTRY] = self.topology.entries
        self._feats[0, :n, Feature.HAS_DISK] = [bool(self.declared[s].clean) for s in self.topology.names]
        # A repair of ours that replaced a container made this a fresh attach: its time is the book's.
        now = time.time()
        self._since = np.array([_ticks(self.book.since_repair(s, now), NEVER_REPAIRED) for s in self.topology.names])
        self._restarts = np.zeros(n)
        self._cpu: dict[str, tuple[float, int]] = {}
        self._started: dict[str, tuple[str, str]] = {}
        """Each service's container and when it last started, as last seen: a new start is a restart."""
        self._seen: dict[str, str] = {}
        """Each service's container whose deploy the book has been shown."""
        self._stopped: set[str] = set()
        """Containers someone else stopped through the engine, not started since (``stopped_by_owner``)."""
        self._ours: dict[str, tuple[float, float]] = {}
        """When each service's last repair of ours began and ended: its own signals are not a stop."""
        self._events_from = now - EVENTS_LOOKBACK_S

    def repairs_of(self, service: str) -> tuple[Repair, ...]:
        return self.declared[service].repairs

    @edge
    def measure(self) -> None:
        now, wall = time.monotonic(), time.time()
        for slot, service in enumerate(self.topology.names):
            f, container = self._feats[0, slot], self.handle.containers[service]
            try:
                container.reload()
                attrs = container.attrs
            except NotFound:
                attrs = {"State": {"Status": "missing"}}
            state = attrs["State"]
            status = state.get("Status", "missing")
            health = (state.get("Health") or {}).get("Status")
            healthy = status == "running" and health in (None, "healthy")
            f[Feature.HEALTHY] = self._health[0, slot] = healthy
            f[Feature.RUNNING] = status in ("running", "paused")
            f[Feature.LATENCY] = 1.0 if status == "paused" else 0.0
            # Starting (no check has passed yet since it started): not healthy, but nothing has failed
            # either. Read as failing, a release slow to start would be rolled back before it could.
            f[Feature.ERROR_RATE] = 0.0 if healthy or (status == "running" and health == "starting") else 1.0
            # The host's cgroup files (a sidecar container needs /sys/fs/cgroup mounted): the engine's
            # stats call takes ~1 s a container, too slow for a decision a second.
            used = host.cpu_ns(container.id) if status == "running" else None
            f[Feature.CPU] = counter_rate(self._cpu, service, now, used, 1e9)
            if status != "missing":
                self._read_container(slot, service, container, attrs, wall)
            self._restarts[slot] *= RESTART_DECAY
            f[Feature.RESTARTS] = min(1.0, self._restarts[slot] / RESTARTS_SCALE)
            f[Feature.SINCE_REPAIR] = min(1.0, self._since[slot] / SINCE_REPAIR_SCALE)
            f[Feature.SINCE_DEPLOY] = min(1.0, _ticks(self.book.since_change(service, wall), NEVER_REPAIRED)
                                          / SINCE_REPAIR_SCALE)  # fmt: skip
            self._since[slot] += 1
        self._slo[0] = bool(self._health[0, self.topology.entries].all())
        self._read_stops(time.time())  # to now, after the states: one read as exited has its stop in

    def _read_container(self, slot: int, service: str, container: Container, attrs: dict[str, Any],
                        wall: float) -> None:  # fmt: skip
        """Its deploy, restarts, memory against its limit and declared disk, into its features."""
        f, state = self._feats[0, slot], attrs["State"]
        if self._seen.get(service) != container.id:  # a container not shown to the book yet
            self._seen[service] = container.id
            self.book.observe(service, deploys.digest(attrs), lambda: composeops.creation_spec(container),
                              deploys.created(attrs) or wall)  # fmt: skip
        started = (container.id, str(state.get("StartedAt", "")))
        seen = self._started.get(service)
        if seen is not None and seen[0] == started[0] and seen[1] != started[1]:
            self._restarts[slot] += 1  # started anew by anyone: its restart policy, a person, us
        self._started[service] = started
        running = state.get("Status") == "running"
        limit = (attrs.get("HostConfig") or {}).get("Memory") or 0
        memory = host.memory_bytes(container.id) if running and limit else None
        f[Feature.MEMORY] = min(1.0, memory / limit) if memory is not None else 0.0
        dirs = self.declared[service].clean_dirs
        if dirs and running:
            disk = composeops.disk_used(container, dirs)
            f[Feature.DISK_USED] = f[Feature.DISK_USED] if disk is None else disk

    @edge
    def stopped_by_owner(self, service: str) -> bool:
        """Whether someone else stopped ``service``'s container through the engine (``docker stop``,
        ``docker-compose stop``, or ``up`` replacing it) and it has not started since: theirs to
        start again, as the engine's own restart policies leave a container stopped by hand.

        Asked right before a repair, it reads the events up to now: a stop since the last
        measurement (``docker-compose down`` stops one service after another) counts too.
        """
        self._read_stops(time.time())
        return self.handle.containers[service].id in self._stopped

    def _read_stops(self, until: float) -> None:
        """The engine's stop and start events of the project's containers since the last reading.

        A stop is the engine's ``stop`` event, or a SIGTERM sent through it (``kill`` signal 15),
        which comes first: a deploy replacing a container is seen as it begins. Ours (the restart
        and replace mechanisms signal through the engine from a sidecar's container) fall within
        ``_ours`` and are left out.
        """
        wanted = {"type": "container", "event": ["kill", "stop", "start"], "label": f"{COMPOSE_PROJECT}={self.name}"}
        events = self.client.events(since=_stamp(self._events_from), until=_stamp(until), decode=True, filters=wanted)
        for event in events:
            actor = event.get("Actor") or {}
            cid, attributes, at = actor.get("ID", ""), actor.get("Attributes") or {}, event.get("timeNano", 0) / 1e9
            if event.get("Action") == "start":
                self._stopped.discard(cid)
            elif event.get("Action") == "stop" or attributes.get("signal") == str(int(signal.SIGTERM)):
                start, end = self._ours.get(attributes.get(COMPOSE_SERVICE, ""), (0.0, 0.0))
                if not start <= at <= end:
                    self._stopped.add(cid)
        self._events_from = until

    @edge
    def apply(self, service: str, repair: Repair) -> None:
        started = time.time()
        try:
            self._apply(service, repair)
        finally:
            self._ours[service] = (started, time.time())

    def _apply(self, service: str, repair: Repair) -> None:
        declared = self.declared[service]
        if repair not in declared.repairs:
            shown = ", ".join(r.label for r in declared.repairs)
            raise SandboxError(f"{repair.label} of {service}: its labels do not declare it (it may: {shown})")
        container = self.handle.containers[service]
        slot = self.topology.index[service]
        try:
            if repair is Repair.RESTART:
                mechanisms.restart(self.handle, service)
                container.reload()  # its own start is counted here, not again when measured
                self._started[service] = (container.id, str(container.attrs["State"].get("StartedAt", "")))
            elif repair is Repair.CLEAN_DISK:
                composeops.clean(container, declared.clean)
            else:
                self.handle.containers[service] = self._replace(service, container, repair)
        except (NotFound, EngineError) as exc:
            if isinstance(exc, EngineError) and not exc.not_found:
                raise
            raise StackChangedError(f"{repair.label} of {service}: its container was removed meanwhile") from None
        self._since[slot] = 0
        self._restarts[slot] += repair in COUNTS_AS_RESTART

    def _replace(self, service: str, container: Container, repair: Repair) -> Container:
        """A recreate or a rollback: the service's container replaced, and the book told."""
        if repair is Repair.RECREATE:
            new = composeops.recreate(self.client, container, self.name)
            self.book.replaced(service, time.time())
            return new
        spec = self.book.previous(service)
        if spec is None:
            raise SandboxError(f"rollback of {service}: no earlier deploy of it was seen: none to go back to")
        new = composeops.replace(self.client, container, spec, f"rollback of {service}")
        self.book.rolled_back(service, time.time())
        return new

    def _rewire(self, service: str, resume_flood: bool = False) -> None:
        """After a restart (called by the restart mechanism): nothing of deeplops' to re-apply (no
        capped link, no flood), only the container's new state to read."""
        self.handle.containers[service].reload()

    @edge
    def fingerprint(self) -> frozenset[str]:
        return _fingerprint(_labelled(self.client, COMPOSE_PROJECT, self.name))

    def close(self) -> None:
        """Nothing held."""


def _networks(containers: Iterable[Container]) -> frozenset[str]:
    """The IDs of the networks the containers are on."""
    settings = ((c.attrs.get("NetworkSettings") or {}).get("Networks") or {} for c in containers)
    return frozenset(n["NetworkID"] for networks in settings for n in networks.values() if n.get("NetworkID"))


def _stamp(when: float) -> str:
    """A time as the engine's event filters take it: seconds and nanoseconds (a plain fraction
    would be read as nanoseconds)."""
    seconds = int(when)
    return f"{seconds}.{int((when - seconds) * 1e9):09d}"


def _ticks(seconds: float | None, never: float) -> float:
    """Seconds as the observation's ticks (one a second, as trained agents know them); ``never`` for None."""
    return never if seconds is None else seconds / TICK_S


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
