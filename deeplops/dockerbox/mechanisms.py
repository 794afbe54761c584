"""Every fault and repair of docs/design.md §4.2 by its real mechanism, each checked to have taken effect.

Dispatch goes through the tables at the bottom (``INJECT[fault]``, ``REPAIR[repair]``). Each
function acts on one service of a live stack through its ``StackHandle`` (a DockerSandbox's, or a
Compose project's) and raises SandboxError when the mechanism did not take.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import ipaddress
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from docker.errors import APIError, ImageNotFound, NotFound
from docker.models.containers import Container

from deeplops.dockerbox import host, releases, restore, stack
from deeplops.dockerbox.handle import StackHandle
from deeplops.errors import SandboxError
from deeplops.faults import Fault, Repair
from deeplops.system import LEAK_MB_PER_TICK, PROBE_TIMEOUT_S, TICK_S
from deeplops.topology import CLIENT_KINDS, CODE_KINDS

HOG_PROCESSES = 8
"""Busy processes a cpu_hog starts: many, so the service gets a small share of its CPU allowance."""
_HOG = f"import os\nfor _ in range({HOG_PROCESSES.bit_length() - 1}): os.fork()\nwhile True: pass\n"
RESTART_GRACE_S = 0.2
"""How long a restart waits for the service to exit on SIGTERM before SIGKILL."""
FLOOD_FACTOR = 4.0
"""A flood sends this many times the link's capacity."""
_VERIFY_S = 0.5
_JUNK = "junk-{}.fill"
"""Names of the files disk_full writes and clean_disk deletes."""
_JUNK_NAMES = 10_000
"""Most junk names disk_full tries: each is a whole file until ENOSPC, so one or two are used."""
DEPLOY_VERIFY_S = 5.0
"""How long a bad deploy waits for the broken release to serve, and fail, besides a slow start."""
LEAK_VERIFY_S = 2.0
"""How long a memory leak's growth is waited for once its release serves."""
LEAK_SEEN_BYTES = int(LEAK_MB_PER_TICK / TICK_S * LEAK_VERIFY_S / 4 * 2**20)
"""Growth that shows the leak (8 MiB): a quarter of what it takes within LEAK_VERIFY_S, far more than
a good release's memory moves in that time at work (a generic service holds ~12 MiB, an app ~19)."""
CONN_LEAK_SIGNAL = signal.SIGUSR2
"""What sets a connection leak off in a client's running program (``sandbox/service.py``'s
``CONN_LEAK_SIGNAL``)."""
CONN_LEAK_VERIFY_S = 4.0
"""How long a connection leak's connections are waited for at its database."""
CLIENT_POOL_SIZE = 4
"""The most connections a client's pool holds to one PostgreSQL server (``sandbox/clients.py``'s
``POOL_SIZE``): one holding more is leaking them."""
CONN_LEAK_SEEN = CLIENT_POOL_SIZE + 2
"""Connections from the leaking client that show the leak at its database: beyond what its pool may
hold, with room for one being replaced as it is recycled (its new one may come before the old one's
backend has gone). At the leak's 3 a second: 0.7 to 2 s, as the pool held 4 to none."""


def _until(check: Callable[[], bool], what: str, timeout_s: float = _VERIFY_S, every_s: float = 0.01) -> None:
    """Poll ``check`` every ``every_s`` until true; a SandboxError naming ``what`` if it never is."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise SandboxError(f"{what} did not take effect within {timeout_s:.1f} s")
        time.sleep(every_s)


def kill(handle: StackHandle, service: str) -> None:
    """SIGKILL the container's main process (from the host: the engine's kill call waits ~100 ms)."""
    container = handle.containers[service]
    container.reload()
    pid = container.attrs["State"]["Pid"]
    if not pid:
        raise SandboxError(f"kill of {service}: it is not running")
    os.kill(pid, signal.SIGKILL)
    _until(lambda: not _alive(pid), f"kill of {service}")


def _alive(pid: int) -> bool:
    """Whether ``pid`` is still a live (not zombie) process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def pause(handle: StackHandle, service: str) -> None:
    """Freeze every process of the container (cgroup freezer)."""
    container = handle.containers[service]
    container.pause()
    _until(lambda: (container.reload() or container.status) == "paused", f"pause of {service}")


def cpu_hog(handle: StackHandle, service: str) -> None:
    """Start busy processes inside the container, competing with the service for its CPU allowance."""
    container = handle.containers[service]
    before = host.cgroup_processes(container.id) or 0
    try:
        container.exec_run(["python3", "-c", _HOG], detach=True)
    except APIError as exc:
        raise SandboxError(f"cpu_hog on {service}: {exc.explanation or exc}") from None
    # The hog's first process is enough: its forks follow within the next scheduling periods.
    _until(lambda: (host.cgroup_processes(container.id) or 0) > before, f"cpu_hog on {service}")


def disk_full(handle: StackHandle, service: str) -> None:
    """Write junk into the data volume until the file system says ENOSPC.

    The volume is the container's to write, so a name may hold a link it planted to a host file:
    every junk file is made new, relative to the volume's descriptor, never through a link.
    """
    path = host.volume_dir(handle.name, service)
    chunk = b"\xff" * 2**20
    with host.open_volume(path) as volume:
        for n in range(_JUNK_NAMES):
            try:
                if _fill(volume, _JUNK.format(n), chunk):
                    break
            except OSError as exc:
                raise SandboxError(f"disk_full on {service}: {exc}") from None
    if host.disk_usage(path) < 0.99:
        raise SandboxError(f"disk_full on {service} did not fill the volume ({host.disk_usage(path):.0%} used)")


def _fill(volume: int, name: str, chunk: bytes) -> bool:
    """Write ``chunk`` into a new file ``name`` of the volume until ENOSPC; whether it got there
    (False: the name is held by a directory, try another)."""
    try:
        fd = host.create_in(volume, name)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:  # not even room for a new name: full already
            return True
        raise
    if fd is None:
        return False
    try:
        while True:
            os.write(fd, chunk)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        return True
    finally:
        os.close(fd)


def net_saturation(handle: StackHandle, service: str) -> None:
    """Flood the service with traffic far above its link's capacity, through the tc cap."""
    host.unblock(stack.block_tag(handle.name, service))  # a new flood is not stopped by an old block
    start_flood(handle, service)


def start_flood(handle: StackHandle, service: str) -> None:
    """(Re)start the flood process at the service's current address."""
    stop_flood(handle, service)
    ip = handle.ips[service]
    rate = str(FLOOD_FACTOR * host.LINK_BYTES_PER_S)
    proc = subprocess.Popen(
        [sys.executable, "-m", "deeplops.dockerbox.flood", ip, rate],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    handle.floods[service] = proc
    time.sleep(0.05)
    if proc.poll() is not None or not host.link_capped(handle.veths[service]):
        raise SandboxError(f"net_saturation on {service}: the flood did not start")


def pause_flood(handle: StackHandle, service: str) -> bool:
    """Hold a flood while its target's veth is replaced; whether there was one to resume.

    While a container restarts, the bridge no longer knows where its address lives and sends
    the flood out of every port: every service would suffer for a tick, which is an artefact
    of one host, not of a flood.
    """
    flooded = service in handle.floods
    stop_flood(handle, service)
    return flooded


def stop_flood(handle: StackHandle, service: str) -> None:
    """Stop the service's flood, if any."""
    proc = handle.floods.pop(service, None)
    if proc is not None:
        proc.kill()
        proc.wait()


def restart(handle: StackHandle, service: str) -> None:
    """Restart the container (SIGTERM, then SIGKILL after 1 s); a frozen one is thawed first."""
    container = handle.containers[service]
    container.reload()
    flooded = pause_flood(handle, service)
    try:
        _stop(container)
        _until(lambda: (container.reload() or container.status) == "exited", f"stop of {service}", 2.0)
        container.start()
    except (APIError, ProcessLookupError) as exc:
        raise SandboxError(f"restart of {service}: {exc}") from None
    handle.rewire(service, resume_flood=flooded)


def _stop(container: Container) -> None:
    """Thaw a frozen container (its process cannot act on a signal), then SIGTERM, then SIGKILL
    after RESTART_GRACE_S (the engine's own timeout is whole seconds).

    Signals go straight to the process when it is visible here (the host's PID namespace: the
    engine's kill call costs ~100 ms), else through the engine, as from inside a sidecar container.
    """
    if container.status == "paused":
        container.unpause()
        container.reload()  # running again: signalled through the engine below when not visible here
    pid = container.attrs["State"]["Pid"]
    if pid and _in_container(pid, container.id):
        _term_then_kill(lambda sig: os.kill(pid, sig), lambda: not _alive(pid))
    elif container.status == "running":
        _term_then_kill(
            lambda sig: container.kill(signal=sig), lambda: container.reload() or container.status != "running"
        )


def _term_then_kill(send: Callable[[signal.Signals], object], stopped: Callable[[], bool]) -> None:
    send(signal.SIGTERM)
    deadline = time.monotonic() + RESTART_GRACE_S
    while not stopped() and time.monotonic() < deadline:
        time.sleep(0.01)
    if not stopped():
        with contextlib.suppress(APIError, ProcessLookupError):  # it may have exited in between
            send(signal.SIGKILL)


def _in_container(pid: int, container_id: str) -> bool:
    """Whether ``pid``, as seen here, is a live process of that container (a PID from the engine is
    the host's: in another PID namespace it would name some other process, or none)."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return container_id in f.read() and _alive(pid)
    except OSError:
        return False


def clean_disk(handle: StackHandle, service: str) -> None:
    """Delete the junk from the data volume (the data stays): names in the volume itself, each
    unlinked relative to its descriptor, so a link is removed, never followed, and no folder is
    entered."""
    with host.open_volume(host.volume_dir(handle.name, service)) as volume:
        for name in os.listdir(volume):
            if fnmatch.fnmatchcase(name, _JUNK.format("*")):
                host.remove_in(volume, name)


def rate_limit(handle: StackHandle, service: str) -> None:
    """Block the flood at the service's ingress; a flood that no longer arrives is over."""
    host.block(handle.ips[service], stack.block_tag(handle.name, service))
    stop_flood(handle, service)


def recreate(handle: StackHandle, service: str) -> None:
    """A new container with a fresh, empty volume: everything but a flood, a bad deploy and a memory
    leak ends (it runs the current release again: a leaking one leaks anew), and the data is lost.

    Lost data is an incident, not a shortcut: a service whose volume held data restores it from
    backup when it starts, failing its users until the data is back (``restore``; checked by
    ``finish_restores``). The image is the sandbox's own, or on a sandbox attached to (which did
    not build it) the image of the container being replaced (or of another of its services, if
    that one is gone): found, and checked to exist, before anything is removed.
    """
    spec = handle.topology.services[handle.topology.index[service]]
    image = handle.image or _image_of(handle, service)
    current = history(handle, service)  # the same release again: a broken one stays broken
    flooded = pause_flood(handle, service)
    old = handle.containers.get(service)
    if old is not None:
        try:
            stack.remove_container(old)
        except APIError as exc:
            if not isinstance(exc, NotFound):  # already gone: nothing to remove
                raise SandboxError(f"recreate of {service}: {exc.explanation or exc}") from None
    if spec.disk_mb:
        held = restore.data_held(handle.name, spec)  # read once the old container can write no more
        stack.prepare_volume(handle.name, spec, 0.0)
        handle.restores.pop(service, None)
        if held:
            restore.plan(handle.name, spec, held)
            handle.restores[service] = held
    handle.containers[service] = stack.start_service(
        handle.client, handle.name, spec, image, topology=handle.topology, history=current
    )
    handle.rewire(service, resume_flood=flooded)


def history(handle: StackHandle, service: str) -> releases.History:
    """The service's release history: the handle's book, else its container's label (a sandbox
    attached to), else the first release."""
    if service not in handle.releases:
        container = handle.containers.get(service)
        label = container.labels.get(releases.LABEL) if container is not None else None
        handle.releases[service] = releases.from_label(label, f"{handle.name}'s {service}")
    return handle.releases[service]


def deploy(handle: StackHandle, service: str) -> None:
    """Deploy a new, good release of the service (a team's routine deploy)."""
    switch(handle, service, history(handle, service).deploy())


def bad_deploy(handle: StackHandle, service: str) -> None:
    """Deploy the kind's broken release; checked to serve that release and to fail a user request."""
    new = switch(handle, service, history(handle, service).deploy(broken=True)).current
    spec = handle.topology.services[handle.topology.index[service]]
    wait_s = DEPLOY_VERIFY_S + (spec.restart_s or 0.0)
    _until(lambda: _fails_on(handle, service, new), f"bad_deploy of {new.name} on {service}", wait_s)


def memory_leak(handle: StackHandle, service: str) -> None:
    """Deploy a release of the service's own code that leaks memory; checked to serve that release
    and its container's resident memory to grow. Server software (PostgreSQL, Redis, nginx) is not
    ours to release: a leak on one is refused. The container keeps its memory limit and has no
    restart policy, so once the kernel kills the process it stays down until a repair."""
    spec = handle.topology.services[handle.topology.index[service]]
    if spec.kind not in CODE_KINDS:
        raise SandboxError(f"memory_leak on {service}: it is a {spec.kind}, server software, not our own code "
                           f"(only {', '.join(CODE_KINDS)} services run a release that can leak)")  # fmt: skip
    new = switch(handle, service, history(handle, service).deploy(leaks=True)).current
    what = f"memory_leak of {new.name} on {service}"
    _until(lambda: _serves(handle, service, new), what, DEPLOY_VERIFY_S + (spec.restart_s or 0.0))
    container_id = handle.containers[service].id
    start = host.memory_bytes(container_id)  # now that it serves: its start-up's own growth is over
    if start is None:
        raise SandboxError(f"{what}: its container's memory cannot be read here, so the leak cannot be checked")
    _until(lambda: (host.memory_bytes(container_id) or 0) >= start + LEAK_SEEN_BYTES, what, LEAK_VERIFY_S)


def conn_leak(handle: StackHandle, service: str) -> None:
    """Set off a connection leak in a client's running program: a signal, as the leak is a bug of
    its running code, not a release (a restart, a new process, is rid of it). Only an app or a
    worker that uses a PostgreSQL server takes one; its connections go into its first one
    (``Topology.leaks_at``), which is checked (by a query of ``pg_stat_activity``) to hold more
    connections from it than its pool can (CONN_LEAK_SEEN), or to be full."""
    spec = handle.topology.services[handle.topology.index[service]]
    into = int(handle.topology.leaks_at[handle.topology.index[service]])
    if into < 0:
        article = "an" if spec.kind[0] in "aeiou" else "a"
        why = (f"{article} {spec.kind} that uses no PostgreSQL server" if spec.kind in CLIENT_KINDS else
               f"{article} {spec.kind}, not a client of a database (only an app or a worker that uses a PostgreSQL "
               "server leaks connections into it)")  # fmt: skip
        raise SandboxError(f"conn_leak on {service}: it is {why}")
    db = handle.topology.names[into]
    what = f"conn_leak of {service} into {db}"
    container = handle.containers[service]
    container.reload()
    pid = container.attrs["State"]["Pid"]
    if container.status != "running" or not pid or service not in handle.ips:
        raise SandboxError(f"{what}: {service} is not running")
    client = ipaddress.ip_address(handle.ips[service])  # an address, safe to write into a query
    # Its connections, all the clients', and the slots they may take (psql's own not counted).
    count = (f"SELECT count(*) FILTER (WHERE host(client_addr) = '{client}'), count(*), "
             "current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int "
             "FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")  # fmt: skip
    _connections_of(handle, db, count, what)  # it answers: the leak can be seen there
    try:
        if _in_container(pid, container.id):
            os.kill(pid, CONN_LEAK_SIGNAL)
        else:  # not visible here (from inside a sidecar's container): through the engine
            container.kill(signal=CONN_LEAK_SIGNAL.name)
    except (APIError, ProcessLookupError) as exc:
        raise SandboxError(f"{what}: {exc}") from None

    def leaking() -> bool:
        theirs, used, limit = _connections_of(handle, db, count, what)
        return theirs >= CONN_LEAK_SEEN or used >= limit  # full: the leak has what it could get

    _until(leaking, what, CONN_LEAK_VERIFY_S, every_s=0.05)


def _connections_of(handle: StackHandle, db: str, count: str, what: str) -> tuple[int, ...]:
    """The numbers a query of the PostgreSQL server ``db`` counts, by psql inside its container, as
    the superuser (whose reserved slots let it in when the clients have taken the others)."""
    try:
        code, out = handle.containers[db].exec_run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-Atc", count])
    except APIError as exc:
        raise SandboxError(f"{what}: cannot query {db}: {exc.explanation or exc}") from None
    text = out.decode(errors="replace").strip()
    if code != 0 or not all(part.isdigit() for part in text.split("|")):
        raise SandboxError(f"{what}: cannot query {db}: {text.splitlines()[-1] if text else f'status {code}'}")
    return tuple(int(part) for part in text.split("|"))


def _serves(handle: StackHandle, service: str, release: releases.Release) -> bool:
    """Whether the service's program says it runs ``release`` and is ready."""
    ip = handle.ips.get(service)
    if ip is None:
        return False
    _, stats = stack.http_json(ip, "/info", PROBE_TIMEOUT_S)
    return stats.get("release") == release.name and stats.get("ready") is True


def rollback(handle: StackHandle, service: str) -> None:
    """Go back to the release before the current one (``helm rollback``); nothing when there is none."""
    back = history(handle, service).rollback()
    if back is not None:
        switch(handle, service, back)


def switch(handle: StackHandle, service: str, to: releases.History) -> releases.History:
    """Replace the service's container with one running ``to``'s current release on the same volume,
    as ``docker compose up`` does on a changed service: the old one stopped as a restart stops it
    (SIGTERM, SIGKILL after the grace), the new one checked to run the release. Returns ``to``."""
    spec = handle.topology.services[handle.topology.index[service]]
    image = handle.image or _image_of(handle, service)
    flooded = pause_flood(handle, service)
    old = handle.containers.get(service)
    if old is not None:
        try:
            old.reload()
            _stop(old)
            stack.remove_container(old)
        except NotFound:
            pass  # gone already: nothing to stop
        except (APIError, ProcessLookupError) as exc:
            raise SandboxError(f"deploy of {to.current.name} on {service}: {exc}") from None
    handle.containers[service] = stack.start_service(
        handle.client, handle.name, spec, image, topology=handle.topology, history=to
    )
    handle.releases[service] = to
    handle.deploys[service] = handle.deploys.get(service, 0) + 1
    handle.rewire(service, resume_flood=flooded)
    # Just started, the container's process may still be the runtime's own, before it execs the
    # program: its environment holds no release yet. Wait for the program's.
    container = handle.containers[service]
    what = f"start of {to.current.name} on {service}"
    _until(lambda: running_release(container) is not None, what, DEPLOY_VERIFY_S + (spec.restart_s or 0.0))
    runs = running_release(container)
    if runs != to.current.name:
        raise SandboxError(f"deploy of {to.current.name} on {service}: its process runs {runs or 'no release'}")
    return to


def running_release(container: Container) -> str | None:
    """The release the container's main process was started with: read from the process itself
    where it is visible here (the host's PID namespace), else the engine's record of it."""
    pid = container.attrs["State"]["Pid"]
    if pid and _in_container(pid, container.id):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            env = []
        found = [v for v in env if v.startswith(b"DEEPLOPS_RELEASE=")]
        return found[0].split(b"=", 1)[1].decode(errors="replace") if found else None
    found_s = [v for v in container.attrs["Config"]["Env"] or [] if v.startswith("DEEPLOPS_RELEASE=")]
    return found_s[0].split("=", 1)[1] if found_s else None


def _fails_on(handle: StackHandle, service: str, release: releases.Release) -> bool:
    """Whether the service's program serves ``release`` (its server up, where it runs one) and a
    user request to it fails with an answer, not a refusal."""
    ip = handle.ips.get(service)
    if ip is None:
        return False
    _, stats = stack.http_json(ip, "/info", PROBE_TIMEOUT_S)
    if stats.get("release") != release.name or stats.get("broken") is not release.broken or not stats.get("ready"):
        return False
    status, _ = stack.http_json(ip, "/work", 2 * PROBE_TIMEOUT_S)
    return status >= 400


def finish_restores(handle: StackHandle) -> list[str]:
    """The services whose restore from backup (after a recreate) completed since the last call,
    each checked to have brought all its data back; a SandboxError naming one that did not."""
    finished = []
    for service, size in list(handle.restores.items()):
        spec = handle.topology.services[handle.topology.index[service]]
        if restore.planned_size(handle.name, spec) is not None:
            continue  # still restoring
        del handle.restores[service]
        got = restore.data_size(handle.name, spec)
        if got < size:
            raise SandboxError(f"restore of {service} ended with {got} of its {size} bytes of data")
        finished.append(service)
    return finished


def _image_of(handle: StackHandle, service: str) -> str:
    """The image ID the service's container runs (else a sibling's), checked to be on the engine."""
    ordered = [handle.containers.get(service), *handle.containers.values()]
    found = next((c.attrs.get("Image") for c in ordered if c is not None and c.attrs.get("Image")), None)
    if not found:
        raise SandboxError(f"recreate of {service}: no container of sandbox {handle.name} to take the image from")
    try:
        handle.client.images.get(found)
    except ImageNotFound:
        raise SandboxError(f"recreate of {service}: its image {found[:19]} is gone from the engine") from None
    except APIError as exc:
        raise SandboxError(f"recreate of {service}: cannot inspect its image ({exc.explanation or exc})") from None
    return str(found)


def noop(handle: StackHandle, service: str) -> None:
    """Nothing."""


INJECT: dict[Fault, Callable[[StackHandle, str], None]] = {
    Fault.KILL: kill,
    Fault.PAUSE: pause,
    Fault.CPU_HOG: cpu_hog,
    Fault.DISK_FULL: disk_full,
    Fault.NET_SATURATION: net_saturation,
    Fault.BAD_DEPLOY: bad_deploy,
    Fault.MEMORY_LEAK: memory_leak,
    Fault.CONN_LEAK: conn_leak,
}
REPAIR: dict[Repair, Callable[[StackHandle, str], None]] = {
    Repair.NOOP: noop,
    Repair.RESTART: restart,
    Repair.CLEAN_DISK: clean_disk,
    Repair.RATE_LIMIT: rate_limit,
    Repair.RECREATE: recreate,
    Repair.ROLLBACK: rollback,
}
