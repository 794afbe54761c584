"""DockerSandbox: the Sandbox protocol on real containers. One tick is one second of wall time.

Observations are measured, in the layout and units of ``deeplops.observation``: /health and
/ping probes, user requests (``/work``) to every service (error rate) and through the entry
services (the SLO), Docker state, cgroup CPU time, the veth's receive counter, and statvfs of
the data volume, the cgroup's resident memory, each server's or pool's own connection counters
(``/info``), and the ticks since each service's last release switch. Faults and repairs are real
(``mechanisms``, acting on the sandbox's ``StackHandle``); the sandbox also keeps the book of which
faults are open, as the simulator does, since a real system does not say. With ``deploy_rate``,
services without an open fault get routine deploys of good releases at random, as a team's do.
Every operation translates engine errors (``engine.edge``).
"""

from __future__ import annotations

import atexit
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import docker
import numpy as np
from docker.models.containers import Container

from deeplops.dockerbox import host, image, mechanisms, owner, stack
from deeplops.dockerbox.engine import edge
from deeplops.dockerbox.handle import StackHandle
from deeplops.errors import SandboxError
from deeplops.faults import CLEARS_TABLE, Fault, Repair
from deeplops.observation import MAX_SLOTS, N_FEATURES, RESTARTS_SCALE, SINCE_REPAIR_SCALE, Feature
from deeplops.sandbox import ArrayState
from deeplops.system import (
    COUNTS_AS_RESTART,
    MEMORY_MB,
    NEVER_REPAIRED,
    PROBE_TIMEOUT_S,
    RESTART_DECAY,
    SLO_LATENCY_S,
    TICK_S,
)
from deeplops.topology import Topology

REQUEST_TIMEOUT_S = 0.9
"""Timeout of /ping and /work requests; a timeout reads as latency 1 (the feature's cap)."""
REQUESTS_PER_TICK = 2
"""User requests sent to every service each tick (the error rate's denominator)."""
DEPLOY_STREAM = 0xDE9
"""Mixed into reset's seed for the stream of routine deploys: independent of the volumes' data."""
DEPLOYED_FAULTS = frozenset({Fault.BAD_DEPLOY, Fault.MEMORY_LEAK})
"""Faults injected by a deploy of a bad release: a new process, counted as a restart is."""


@dataclass
class _Reading:
    """One service's measurements in one tick."""

    running: bool = False
    healthy: bool = False
    latency: float = 0.0
    error_rate: float = 1.0
    served: bool = False


class DockerSandbox(ArrayState):
    """One copy of ``topology`` as real containers named ``NAME-SERVICE`` on network ``NAME``."""

    def __init__(
        self,
        topology: Topology,
        n_envs: int = 1,
        name: str | None = None,
        base: str = image.BASE_IMAGE,
        log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
        attach: bool = False,
        deploy_rate: float = 0.0,
    ) -> None:
        if n_envs != 1:
            raise SandboxError(f"the docker backend runs one env at a time, got n_envs={n_envs}")
        if not (isinstance(deploy_rate, int | float) and math.isfinite(deploy_rate) and 0 <= deploy_rate <= 1):
            raise SandboxError(f"deploy_rate must be a chance per service per tick in [0, 1], got {deploy_rate!r}")
        self.deploy_rate = float(deploy_rate)
        """Chance per service per tick of a routine deploy of a good release (``deploy``)."""
        self._deploy_rng = np.random.default_rng(0)
        name = host.check_name(f"deeplops-{os.getpid()}" if name is None else name)
        host.require_root()
        if not attach:
            stack.check_memory(topology)  # before an image is built
        self.topology = topology
        self.n_envs = 1
        self._log = log
        self.handle = StackHandle(stack.connect(), name, topology, self.rewire)
        """The sandbox's containers, addresses, links and floods: what the mechanisms act on."""
        self.owned = not attach
        """Whether this object made the stack (and tears it down), or attached to a live one."""
        self.handle.image = image.ensure_image(self.client, base, log) if self.owned else ""
        n = topology.n_services
        self._fault = np.zeros((1, n), np.int8)
        self._health = np.ones((1, n), np.bool_)
        self._slo = np.ones(1, np.bool_)
        self._cleared = np.zeros(1, np.bool_)
        self._since = np.full(n, NEVER_REPAIRED, np.float64)
        self._since_deploy = np.full(n, NEVER_REPAIRED, np.float64)
        self._deploys_seen: dict[str, int] = {}
        self._restarts = np.zeros(n)
        self._feats = np.zeros((1, MAX_SLOTS, N_FEATURES), np.float32)
        self._feats[0, :n, Feature.PRESENT] = 1.0
        self._feats[0, :n, Feature.HAS_DISK] = topology.has_disk
        self._feats[0, :n, Feature.ENTRY] = topology.entries
        self._cpu: dict[str, tuple[float, int]] = {}
        self._rx: dict[str, tuple[float, int]] = {}
        self._pool = ThreadPoolExecutor(max_workers=5 * n + 4)
        self._lifted: dict[str, tuple[Path, str]] = {}
        """The CPU cap of each container (re)started this tick, lifted until the tick ends."""
        self._next_tick = 0.0
        self.measure_s = 0.0
        """Seconds the last tick's measurement of the whole system took."""
        self._reaper: subprocess.Popen[bytes] | None = None
        self._closed = False
        if self.owned:
            self._guard_signals()

    @classmethod
    @edge
    def attach(cls, name: str) -> DockerSandbox:
        """The live sandbox ``name`` (made by ``deeplops sandbox up``), to act on and measure without
        owning it: ``close`` leaves its containers running. Its faults are not known, so all read 0."""
        host.check_name(name)
        client = stack.connect()
        box = cls(stack.topology_of(client, name), name=name, attach=True)
        # Only the topology's services: a container wearing the sandbox's label without being one
        # of them (no service label, or an unknown one) is not ours to measure or repair.
        found = client.containers.list(all=True, sparse=False, filters={"label": f"{stack.LABEL_SANDBOX}={name}"})
        box.handle.containers = {
            c.labels[stack.LABEL_SERVICE]: c for c in found if c.labels.get(stack.LABEL_SERVICE) in box.topology.index
        }
        for service in box.topology.names:
            if box.containers.get(service) is not None and box.containers[service].status == "running":
                box._wire(service)
        box._next_tick = time.monotonic()
        box._measure()
        return box

    @property
    def name(self) -> str:
        """The sandbox's name: its network, the prefix of its containers."""
        return self.handle.name

    @property
    def client(self) -> docker.DockerClient:
        """The engine's client."""
        return self.handle.client

    @property
    def containers(self) -> dict[str, Container]:
        """Each service's container, by service name."""
        return self.handle.containers

    # -- the Sandbox protocol --------------------------------------------------------------

    @edge
    def reset(self, seeds: Sequence[int]) -> None:
        """A fresh system: every container recreated, volumes refilled with data, all healthy."""
        seed = int(seeds[0])
        stack.reap_stale(self.client, self._log)  # what earlier runs left when their reaper died with them
        stack.down(self.name, self.client)
        self._start_reaper()
        data = stack.data_fractions(self.topology, seed)
        stack.up(self.client, self.topology, self.name, self.handle.image, data, owner=owner.owner_id(os.getpid()))
        self.handle.containers = stack.containers(self.client, self.name)
        self.handle.restores.clear()
        self.handle.releases.clear()  # each new container's label: the first release
        self.handle.deploys.clear()
        self._deploys_seen.clear()
        self._since_deploy[:] = NEVER_REPAIRED
        self._deploy_rng = np.random.default_rng([seed, DEPLOY_STREAM])
        for service in self.topology.names:
            self._wire(service)  # started healthy by ``up``: only a repair's start runs uncapped
        self._fault[:] = 0
        self._since[:] = NEVER_REPAIRED
        self._restarts[:] = 0.0
        self._next_tick = time.monotonic()
        self._measure()

    @edge
    def inject(self, slots: np.ndarray, faults: np.ndarray) -> None:
        """Start the fault for real, and check that it took."""
        code = int(faults[0])
        if code == 0:
            return
        slot = self._slot(int(slots[0]))
        mechanisms.INJECT[Fault(code)](self.handle, self.topology.names[slot])
        self._fault[0, slot] = code
        self._restarts[slot] += code in DEPLOYED_FAULTS  # a new container on the bad release

    @edge
    def repair(self, slots: np.ndarray, repairs: np.ndarray) -> np.ndarray:
        """Apply the repair for real; return whether it ended the service's open fault."""
        code = int(repairs[0])
        self._cleared[0] = False
        if code == 0:
            return self._cleared
        slot = self._slot(int(slots[0]))
        repair = Repair(code)
        fault = int(self._fault[0, slot])
        service = self.topology.names[slot]
        # A rollback with no release before the current one does nothing, and ends nothing.
        acts = repair is not Repair.ROLLBACK or mechanisms.history(self.handle, service).rollback() is not None
        mechanisms.REPAIR[repair](self.handle, service)
        if acts and CLEARS_TABLE[repair, fault]:
            self._fault[0, slot] = 0
            self._cleared[0] = True
            if fault == Fault.NET_SATURATION:
                mechanisms.stop_flood(self.handle, service)
        self._since[slot] = 0
        self._restarts[slot] += acts and repair in COUNTS_AS_RESTART
        return self._cleared

    @edge
    def deploy(self, service: str) -> str:
        """Deploy a new, good release of ``service`` (a routine deploy); the release's name. Only
        onto a service without an open fault: a new container would end some faults behind the
        book's back, and a rollback would go back to the fault's release."""
        if service not in self.topology.index:
            raise SandboxError(f"deploy: no service {service!r} in topology {self.topology.name!r}")
        slot = self.topology.index[service]
        if self._fault[0, slot]:
            raise SandboxError(f"deploy on {service}: it has an open fault ({Fault(self._fault[0, slot]).label})")
        mechanisms.deploy(self.handle, service)
        self._restarts[slot] += 1  # a deploy starts a new process, as the simulator counts it
        return mechanisms.history(self.handle, service).current.name

    @edge
    def advance(self) -> None:
        """Routine deploys (``deploy_rate``), wait for the end of the tick (one second after the
        last), then measure the system."""
        self._routine_deploys()
        self._next_tick += TICK_S
        delay = self._next_tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            self._next_tick = time.monotonic()  # running late: start the next tick from now
        self._cap_again()
        start = time.monotonic()
        self._measure()
        self.measure_s = time.monotonic() - start

    @edge
    def close(self) -> None:
        """Remove every container, network, volume and block of the sandbox (attached: only stop the
        floods this process started). Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for service in list(self.handle.floods):  # floods this process started, attached or not
            mechanisms.stop_flood(self.handle, service)
        if not self.owned:
            self._pool.shutdown(wait=False, cancel_futures=True)
            return
        try:
            stack.down(self.name, self.client)
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)
            if self._reaper is not None:
                self._reaper.kill()
                self._reaper.wait()

    @edge
    def measure(self) -> None:
        """Measure the system now, outside the tick clock (for probes of a live sandbox)."""
        self._measure()

    def _routine_deploys(self) -> None:
        """Each service draws, every tick, whether it gets a routine deploy; one with an open fault
        skips its turn (its draw is still made, so the stream does not depend on the faults)."""
        if self.deploy_rate <= 0:
            return
        draws = self._deploy_rng.random(self.topology.n_services)
        for slot, service in enumerate(self.topology.names):
            if draws[slot] < self.deploy_rate and not self._fault[0, slot]:
                self.deploy(service)

    # -- used by the mechanisms ------------------------------------------------------------

    @edge
    def rewire(self, service: str, resume_flood: bool = False) -> None:
        """After a repair's (re)start: let the container start uncapped until the tick ends, refresh
        its address and veth, re-cap its link, and resume a flood that is still on."""
        self._lift_cap(service)
        self._wire(service)
        if resume_flood:
            mechanisms.start_flood(self.handle, service)

    def _wire(self, service: str) -> None:
        """Refresh a started container's address and veth, and re-cap its link (a start drops the qdisc)."""
        container = self.containers[service]
        container.reload()
        ip = stack.ip_of(container, self.name)
        if ip is None or not container.attrs["State"]["Pid"]:
            raise SandboxError(f"{service} is not running after its (re)start")
        self.handle.ips[service] = ip
        self.handle.veths[service] = host.veth_of(container.attrs["State"]["Pid"])
        host.cap_link(self.handle.veths[service])
        self._rx.pop(service, None)
        self._cpu.pop(service, None)

    def _lift_cap(self, service: str) -> None:
        """Let a (re)started container start at full speed: its CPU cap (``stack.CPU_LIMIT``) is
        the sandbox's, to share two cores and make a CPU hog starve, not the software's. Held to
        it, a start's ~120 ms of CPU (the program's imports, PostgreSQL's recovery) takes four
        times as long, and whether the restart is done within its tick turns on a few tens of ms
        (sandbox/README.md, restarts). Lifted where the host's cgroups are visible, until the tick ends."""
        if self.owned and service not in self._lifted:
            lifted = host.lift_cpu_cap(self.containers[service].id)
            if lifted is not None:
                self._lifted[service] = lifted

    def _cap_again(self) -> None:
        """Put back the caps lifted this tick, before the tick's measurement."""
        for path, cap in self._lifted.values():
            host.set_cpu_cap(path, cap)
        self._lifted.clear()

    # -- measurement -----------------------------------------------------------------------

    def _measure(self) -> None:
        states = self._states()
        probes = {service: self._probe(service, states.get(service, "missing")) for service in self.topology.names}
        counted = {service: self._count(service, states.get(service, "missing")) for service in self.topology.names}
        readings = [self._reading(states.get(s, "missing"), probes[s]) for s in self.topology.names]
        now = time.monotonic()
        slo = True
        for slot, (service, r) in enumerate(zip(self.topology.names, readings, strict=True)):
            f = self._feats[0, slot]
            f[Feature.HEALTHY] = self._health[0, slot] = r.healthy
            f[Feature.RUNNING] = r.running
            f[Feature.LATENCY] = r.latency
            f[Feature.ERROR_RATE] = r.error_rate
            f[Feature.DISK_USED] = (
                host.disk_usage(host.volume_dir(self.name, service)) if self.topology.has_disk[slot] else 0.0
            )
            f[Feature.CPU] = counter_rate(self._cpu, service, now, self._cpu_ns(service), 1e9 * stack.CPU_LIMIT)
            f[Feature.NET_RX] = counter_rate(
                self._rx, service, now, host.tx_bytes(self.handle.veths.get(service, "")), host.LINK_BYTES_PER_S
            )
            self._restarts[slot] *= RESTART_DECAY
            f[Feature.RESTARTS] = min(1.0, self._restarts[slot] / RESTARTS_SCALE)
            f[Feature.SINCE_REPAIR] = min(1.0, self._since[slot] / SINCE_REPAIR_SCALE)
            self._since[slot] += 1
            f[Feature.MEMORY] = self._memory(service, states.get(service, "missing"))
            count = counted[service]
            f[Feature.CONNECTIONS] = count.result() if count is not None else 0.0
            deploys = self.handle.deploys.get(service, 0)
            if deploys != self._deploys_seen.get(service, 0):  # a release switched since the last tick
                self._deploys_seen[service] = deploys
                self._since_deploy[slot] = 0
            f[Feature.SINCE_DEPLOY] = min(1.0, self._since_deploy[slot] / SINCE_REPAIR_SCALE)
            self._since_deploy[slot] += 1
            if self.topology.entries[slot] and not r.served:
                slo = False
        self._slo[0] = slo
        # After the probes: a service read healthy has ended its restore, so it is checked now.
        mechanisms.finish_restores(self.handle)  # a restore that ended short of its data fails here

    def _probe(self, service: str, state: str) -> list[Future[tuple[bool | None, float]]]:
        """Start this tick's requests to a running service: /health, /ping, then the user requests."""
        ip = self.handle.ips.get(service)
        if state != "running" or ip is None:
            return []
        return [
            self._pool.submit(self._timed, ip, "/health", PROBE_TIMEOUT_S),
            self._pool.submit(self._timed, ip, "/ping", REQUEST_TIMEOUT_S),
        ] + [self._pool.submit(self._timed, ip, "/work", REQUEST_TIMEOUT_S) for _ in range(REQUESTS_PER_TICK)]

    def _count(self, service: str, state: str) -> Future[float] | None:
        """Start this tick's read of a running service's connections (``/info``)."""
        ip = self.handle.ips.get(service)
        if state != "running" or ip is None:
            return None
        return self._pool.submit(connections, ip)

    def _memory(self, service: str, state: str) -> float:
        """Its cgroup's resident anonymous memory (not its tmpfs volume's files) over its allowance."""
        container = self.containers.get(service)
        used = host.memory_bytes(container.id) if container is not None and state in ("running", "paused") else None
        return min(1.0, (used or 0) / (MEMORY_MB * 2**20))

    @staticmethod
    def _reading(state: str, probes: list[Future[tuple[bool | None, float]]]) -> _Reading:
        running = state in ("running", "paused")
        if not probes:
            # Exited: refused at once. Paused: every request times out (known without waiting).
            return _Reading(running=running, latency=1.0 if running else 0.0)
        (health_ok, _), (ping_ok, ping_s), *work = (p.result() for p in probes)
        return _Reading(
            running=True,
            healthy=bool(health_ok),
            latency=min(1.0, ping_s) if ping_ok is not None else 0.0,
            error_rate=sum(1 for ok, _ in work if not ok) / len(work),
            served=all(bool(ok) and s <= SLO_LATENCY_S for ok, s in work),
        )

    @staticmethod
    def _timed(ip: str, path: str, timeout: float) -> tuple[bool | None, float]:
        """(answered 200?, seconds); None when refused, and latency 1 on a timeout."""
        start = time.monotonic()
        status, _ = stack.http_json(ip, path, timeout)
        elapsed = time.monotonic() - start
        if status == 0:
            return (False, 1.0) if elapsed >= timeout * 0.95 else (None, 0.0)
        return status == 200, elapsed

    def _cpu_ns(self, service: str) -> int | None:
        container = self.containers.get(service)
        return host.cpu_ns(container.id) if container is not None else None

    def _states(self) -> dict[str, str]:
        """Docker state of every container of the sandbox, in one cheap call."""
        found = self.client.api.containers(all=True, filters={"label": f"{stack.LABEL_SANDBOX}={self.name}"})
        # A container with the sandbox's label but no service label is none of its services.
        return {c["Labels"][stack.LABEL_SERVICE]: c["State"] for c in found if stack.LABEL_SERVICE in c["Labels"]}

    def _slot(self, slot: int) -> int:
        if not 0 <= slot < self.topology.n_services:
            raise SandboxError(f"expected a slot in [0, {self.topology.n_services}), got {slot}")
        return slot

    # -- cleanup guarantees ----------------------------------------------------------------

    def _start_reaper(self) -> None:
        if self._reaper is None or self._reaper.poll() is not None:
            self._reaper = subprocess.Popen(
                [sys.executable, "-m", "deeplops.dockerbox.reaper", owner.owner_id(os.getpid()), self.name],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip

    def _guard_signals(self) -> None:
        """SIGTERM unwinds like Ctrl-C, so ``finally`` blocks and atexit tear the sandbox down."""
        atexit.register(self.close)
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) in (
            signal.SIG_DFL, None,
        ):  # fmt: skip
            signal.signal(signal.SIGTERM, stack.exit_on_signal)


def connections(ip: str) -> float:
    """The connections a service's program reports (``/info``: a server's clients, or a client's
    pools) as a fraction of their limit; 0 when it reports none, or does not answer."""
    _, body = stack.http_json(ip, "/info", PROBE_TIMEOUT_S)
    return connection_share(body)


def connection_share(stats: dict[str, object]) -> float:
    """``used`` over ``limit`` of a ``/info`` answer's ``connections``, in [0, 1]; 0 without them."""
    counted = stats.get("connections")
    if not isinstance(counted, dict):
        return 0.0
    used, limit = counted.get("used"), counted.get("limit")
    if not isinstance(used, int | float) or not isinstance(limit, int | float) or not limit > 0:
        return 0.0
    return float(min(1.0, max(0.0, used / limit)))


def counter_rate(last: dict[str, tuple[float, int]], key: str, now: float, value: int | None, unit: float) -> float:
    """The growth of a counter (CPU ns, bytes) since its last reading under ``key``, per second, in
    ``unit``s, clamped to [0, 1]; 0 on the first reading, and when the counter is gone (``None``)."""
    if value is None:
        last.pop(key, None)
        return 0.0
    prev = last.get(key)
    last[key] = (now, value)
    if prev is None or now <= prev[0]:
        return 0.0
    return float(min(1.0, max(0.0, (value - prev[1]) / (now - prev[0]) / unit)))
