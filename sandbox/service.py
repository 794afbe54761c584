"""The microservice that runs inside every deeplops sandbox container (standard library only).

It is configured by environment variables (``DEEPLOPS_SERVICE``, ``DEEPLOPS_HOST``, ``DEEPLOPS_PORT``,
``DEEPLOPS_DEPENDS``, ``DEEPLOPS_DATA``, ``DEEPLOPS_TIMEOUT``, ``DEEPLOPS_HEALTH_INTERVAL``, and optionally
``DEEPLOPS_START_S``, ``DEEPLOPS_RESTORE_PLAN``, ``DEEPLOPS_RELEASE``, ``DEEPLOPS_RELEASE_BROKEN``,
``DEEPLOPS_RELEASE_LEAKS``, ``DEEPLOPS_LEAK_MB_PER_S`` and ``DEEPLOPS_CONN_LEAK_PER_S``) and answers JSON:

- ``GET /ping``: shallow; 200 if the last cached health result was healthy, else 503. Calls nothing.
- ``GET /health``: checks now and caches the result: a 4 KiB write probe of the data volume, and a
  concurrent ``/ping`` of every direct dependency. 200, or 503 with the reasons in ``failed``.
- ``GET /work``: one user request: ``/work`` on every dependency, plus one ~256-byte record appended
  to ``records.log`` on the data volume (emptied past 256 KiB). 200, or 503 with the reasons.
- ``GET /stats``: counters of ``/work`` since start and the cached health.
- ``GET /info``: the release it runs, whether it is ready (the other kinds: whether their server
  answers), and the connections it holds or serves, ``used`` of ``limit`` (the other kinds).

The release (``DEEPLOPS_RELEASE``, ``r1`` unless set) is what a deploy switched it to. A broken
release (``DEEPLOPS_RELEASE_BROKEN=1``) is a build whose new code reads a setting its deploy did not
bring (``NEW_SETTING``): every ``/work`` and ``/health`` fails with 500, and its cached health with
them, while the process runs. The other kinds' broken releases are their own (their docstrings).
A leaking release (``DEEPLOPS_RELEASE_LEAKS=1``) serves as a good one does, and from the moment it
listens takes ``DEEPLOPS_LEAK_MB_PER_S`` MiB a second that it never frees, until the container's
memory limit has the kernel kill it. The app and the worker leak the same way; the real servers
(``launcher.py``) never do.

A connection leak is a bug of the running code, not of a release: ``CONN_LEAK_SIGNAL`` (SIGUSR2) sets
it off in the running process, and a new process (a restart) is rid of it. The app and the worker
then open ``DEEPLOPS_CONN_LEAK_PER_S`` connections a second to their first PostgreSQL server and
never close them (``clients.ConnectionLeak``); this service, with no database, says so and goes on.

A background thread refreshes the cached health every interval, so a failure climbs the dependency
graph one hop per interval. SIGTERM and SIGINT stop the server promptly and exit 0. Bad configuration
prints one line to stderr and exits 2.

The other kinds' programs (``app.py``, ``worker.py``, ``launcher.py``) are this service with its
checks, its work and what it runs replaced (subclasses of ``Service``, run by ``main``): they keep
its HTTP contract, its slow start and its restore.

A slow service starts as one does: it listens only ``DEEPLOPS_START_S`` seconds after its process
started, so until then every request is refused (a booting JVM, a database replaying its log).
When its data volume holds the restore plan named by ``DEEPLOPS_RESTORE_PLAN`` (written by the host
when a ``recreate`` destroyed the data), it then restores the data from backup into the volume at
the plan's rate, answering 503 to ``/health``, ``/ping`` and ``/work`` meanwhile (as a database in
recovery refuses queries), and deletes the plan when done. A restart part-way resumes where the
restore stopped: the plan stays until the data is back.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import http.client
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PROBE_BYTES = 4096
RECORD_BYTES = 256
LOG_LIMIT = 256 * 1024
LOG_NAME = "records.log"
RESTORE_STEP_S = 0.1
"""A restore writes its data in a slice every this many seconds, so the volume fills steadily."""
PLAN_LIMIT = 4096
"""Largest restore plan read, in bytes."""
NEW_SETTING = "DEEPLOPS_RECORD_SCHEMA"
"""The setting the broken release's code needs and its deploy never sets."""
RELEASE_MAX = 64
"""Longest release name."""
LEAK_STEP_S = 0.1
"""A leaking release takes its memory in a slice every this many seconds, so it grows steadily."""
CONN_LEAK_SIGNAL = signal.SIGUSR2
"""What sets a connection leak off in a running program (``Service.leak_connections``)."""


class ConfigError(Exception):
    """The environment does not describe a valid service."""


@dataclass(frozen=True)
class Config:
    """What one service instance is, read once from the environment."""

    service: str
    """Name of the service, e.g. ``api``."""
    host: str
    """Address to listen on."""
    port: int
    """TCP port to listen on."""
    depends: tuple[tuple[str, int], ...]
    """Direct dependencies as ``(host, port)``."""
    data: str | None
    """Data volume directory, or None when the service has none."""
    timeout: float
    """Seconds to wait for a dependency's ``/ping``; ``/work`` calls get twice this."""
    health_interval: float
    """Seconds between background health checks."""
    start_s: float = 0.0
    """Seconds after the process started before it listens (a slow start); 0: at once."""
    restore_plan: str | None = None
    """Path of the restore plan in the data volume; a restore runs at start when the file is there."""
    release: str = "r1"
    """The release it runs."""
    broken: bool = False
    """Whether that release is the broken one: it runs, and fails its requests."""
    leaks: bool = False
    """Whether that release leaks memory: it serves, and grows until the kernel kills it."""
    leak_mb_per_s: float = 0.0
    """How fast a leaking release takes memory, in MiB a second (0: not told)."""
    conn_leak_per_s: float = 0.0
    """How fast a connection leak opens connections, a second (0: not told: it cannot start)."""


@dataclass(frozen=True)
class RestorePlan:
    """What a restore from backup must bring back into the data volume (``DEEPLOPS_RESTORE_PLAN``)."""

    file: str
    """The data file to restore, a name in the data volume."""
    size: int
    """Bytes the file holds once restored."""
    seconds: float
    """Seconds a restore of all of it takes: the backup's throughput."""
    byte: int
    """The data's content: this byte value, repeated (the data set the sandbox seeds volumes with)."""


def _port(text: str, what: str) -> int:
    if not text.strip().isdigit() or not 1 <= int(text) <= 65535:
        raise ConfigError(f"{what} must be a port number 1-65535, got {text!r}")
    return int(text)


def positive(text: str, what: str, unit: str = "seconds") -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value > 0 and math.isfinite(value)):  # also rejects NaN and infinity
        raise ConfigError(f"{what} must be a positive number of {unit}, got {text!r:.80}")
    return value


def non_negative(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value >= 0 and math.isfinite(value)):  # also rejects NaN
        raise ConfigError(f"{what} must be a number of seconds, 0 or more, got {text!r}")
    return value


def release_name(text: str) -> str:
    """A release's name: letters, digits, ``.``, ``-`` or ``_``, 1 to RELEASE_MAX of them."""
    if not (0 < len(text) <= RELEASE_MAX and all(c.isascii() and (c.isalnum() or c in ".-_") for c in text)):
        raise ConfigError(f"DEEPLOPS_RELEASE must be a release name (letters, digits, '.', '-', '_'), got {text!r:.80}")
    return text


def flag(text: str, what: str) -> bool:
    """``1`` or ``0``."""
    if text not in ("0", "1"):
        raise ConfigError(f"{what} must be 0 or 1, got {text!r:.80}")
    return text == "1"


def endpoints(text: str, variable: str = "DEEPLOPS_DEPENDS") -> tuple[tuple[str, int], ...]:
    """A comma-separated list of ``host:port``, as the environment variable ``variable`` gives it."""
    deps = []
    for entry in filter(None, (part.strip() for part in text.split(","))):
        host, sep, port = entry.rpartition(":")
        if not sep or not host:
            raise ConfigError(f"{variable} entries must be host:port, got {entry!r}")
        deps.append((host, _port(port, f"port of {variable} entry {entry!r}")))
    return tuple(deps)


def load_config(env: Mapping[str, str]) -> Config:
    """Read and validate the configuration; raises ConfigError naming the bad variable."""
    service = env.get("DEEPLOPS_SERVICE", "").strip()
    if not service:
        raise ConfigError("DEEPLOPS_SERVICE must name the service, got nothing")
    leaks = flag(env.get("DEEPLOPS_RELEASE_LEAKS", "0"), "DEEPLOPS_RELEASE_LEAKS")
    # The rate is the sandbox's to tell (deeplops.system): no default here to drift from it.
    rate = env.get("DEEPLOPS_LEAK_MB_PER_S")
    if leaks and rate is None:
        raise ConfigError("DEEPLOPS_LEAK_MB_PER_S must be set for a leaking release (DEEPLOPS_RELEASE_LEAKS=1)")
    conn_rate = env.get("DEEPLOPS_CONN_LEAK_PER_S")  # the sandbox's to tell too; needed only once set off
    return Config(
        service=service,
        host=env.get("DEEPLOPS_HOST", "0.0.0.0"),
        port=_port(env.get("DEEPLOPS_PORT", "8080"), "DEEPLOPS_PORT"),
        depends=endpoints(env.get("DEEPLOPS_DEPENDS", "")),
        data=env.get("DEEPLOPS_DATA") or None,
        timeout=positive(env.get("DEEPLOPS_TIMEOUT", "0.5"), "DEEPLOPS_TIMEOUT"),
        health_interval=positive(env.get("DEEPLOPS_HEALTH_INTERVAL", "1.0"), "DEEPLOPS_HEALTH_INTERVAL"),
        start_s=non_negative(env.get("DEEPLOPS_START_S", "0"), "DEEPLOPS_START_S"),
        restore_plan=env.get("DEEPLOPS_RESTORE_PLAN") or None,
        release=release_name(env.get("DEEPLOPS_RELEASE", "r1")),
        broken=flag(env.get("DEEPLOPS_RELEASE_BROKEN", "0"), "DEEPLOPS_RELEASE_BROKEN"),
        leaks=leaks,
        leak_mb_per_s=positive(rate, "DEEPLOPS_LEAK_MB_PER_S", "MiB a second") if rate is not None else 0.0,
        conn_leak_per_s=(
            positive(conn_rate, "DEEPLOPS_CONN_LEAK_PER_S", "connections a second") if conn_rate is not None else 0.0
        ),
    )


def load_plan(path: str | None) -> RestorePlan | None:
    """The restore plan at ``path``, or None when there is none; ConfigError when it is unreadable."""
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            text = f.read(PLAN_LIMIT + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"DEEPLOPS_RESTORE_PLAN {path!r} cannot be read: {exc.strerror}") from None
    try:
        doc = json.loads(text) if len(text) <= PLAN_LIMIT else None
    except ValueError:
        doc = None
    fields: dict[str, type | tuple[type, ...]] = {"file": str, "size": int, "seconds": (int, float), "byte": int}
    malformed = ConfigError(f"DEEPLOPS_RESTORE_PLAN {path!r} must be a JSON object of {', '.join(fields)}")
    if not isinstance(doc, dict) or set(doc) != set(fields):
        raise malformed
    if not all(isinstance(doc[k], t) and not isinstance(doc[k], bool) for k, t in fields.items()):
        raise malformed
    plan = RestorePlan(file=doc["file"], size=doc["size"], seconds=float(doc["seconds"]), byte=doc["byte"])
    if "/" in plan.file or plan.file in ("", ".", "..") or plan.size < 0 or not 0 <= plan.byte <= 255:
        raise ConfigError(f"DEEPLOPS_RESTORE_PLAN {path!r}: expected a file name, a size and a byte, got {doc!r:.200}")
    if not (plan.seconds >= 0 and math.isfinite(plan.seconds)):
        raise ConfigError(f"DEEPLOPS_RESTORE_PLAN {path!r}: seconds must be 0 or more, got {doc['seconds']!r}")
    return plan


def process_age() -> float:
    """Seconds since this process started, as the kernel counts them (0 where it does not say), so
    a slow start includes the interpreter's own start-up instead of adding it on top."""
    try:
        with open("/proc/self/stat") as f:
            started = int(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0


def call(host: str, port: int, path: str, timeout: float) -> str | None:
    """GET ``path`` on a dependency; None if it answered 200, else why not."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        status = conn.getresponse().status
    except ConnectionRefusedError:
        return f"{host}:{port}{path}: connection refused"
    except TimeoutError:  # a frozen process still completes the TCP handshake, then never answers
        return f"{host}:{port}{path}: timed out after {timeout:g} s"
    except (OSError, http.client.HTTPException) as exc:
        return f"{host}:{port}{path}: {exc!r}"
    finally:
        conn.close()
    return None if status == 200 else f"{host}:{port}{path}: HTTP {status}"


def call_all(deps: tuple[tuple[str, int], ...], path: str, timeout: float) -> list[str]:
    """Call every dependency at once (one thread each) so a slow one costs one timeout, not a sum."""
    return concurrently([functools.partial(call, host, port, path, timeout) for host, port in deps])


def concurrently(tasks: Sequence[Callable[[], str | None]]) -> list[str]:
    """Run every task at once (one thread each); the reasons those that failed give, in order."""
    results: list[str | None] = [None] * len(tasks)

    def one(i: int) -> None:
        results[i] = tasks[i]()

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(len(tasks))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [reason for reason in results if reason]


def write_synced(path: str, data: bytes, append: bool = False) -> int:
    """Write ``data`` in full and fsync it, so a full disk (ENOSPC) fails now; return the file's size."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC), 0o644)
    try:
        if os.write(fd, data) < len(data):
            raise OSError(errno.ENOSPC, "short write", path)
        os.fsync(fd)
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def write_probe(data: str) -> None:
    """Write, fsync and delete 4 KiB in the data volume; raises OSError when the disk is full."""
    path = os.path.join(data, f".health-probe-{threading.get_ident()}")  # /health and the loop may overlap
    try:
        write_synced(path, b"\0" * PROBE_BYTES)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


class Service:
    """The state of one service: its cached health, its ``/work`` counters, and a restore under way.

    Another kind replaces what it checks (``own_checks``, ``dependency_checks``), what a user
    request does (``own_work``, ``dependency_work``), and what it runs (``prepare``, ``run``,
    ``stop``), and keeps the rest.
    """

    PROGRAM = "service.py"
    """The program's name, as its one-line errors start."""
    OWN_CODE = True
    """Whether it is our own code, which a leaking release makes leak; a real server is not."""

    def __init__(self, config: Config, plan: RestorePlan | None = None) -> None:
        self.config = config
        self.plan = plan
        self.healthy: bool | None = None  # None until the first check completes: /ping answers 503
        self.requests = 0
        self.failures = 0
        self.restoring: str | None = "restoring its data from backup" if plan else None
        """Why it cannot serve while a restore runs; None when there is none."""
        self.done = threading.Event()
        """Set when the program is to exit: on SIGTERM or SIGINT, or once what it runs has exited."""
        self.exit_code = 0
        self._lock = threading.Lock()
        self._log_lock = threading.Lock()  # appends and rotation one at a time, so no record is lost or torn
        self.leaked: list[bytes] = []
        """What a leaking release took and holds: never freed."""
        self.conn_leak: Any = None
        """The connection leak its running code would start (``clients.ConnectionLeak``, which the
        app and the worker set, into their first PostgreSQL server); None without a database."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Service:
        """The service the environment describes, with the restore plan its volume holds."""
        config = load_config(env)
        return cls(config, load_plan(config.restore_plan if config.data else None))

    def prepare(self) -> bool:
        """Before it listens: what must hold for it to start at all (nothing here). False: it cannot,
        and the program exits 1, having said why."""
        return True

    def run(self) -> None:
        """Once it listens: restore the data owed, then start what it runs (nothing more here)."""
        self.restore()

    def stop(self) -> None:
        """On the way out: stop what it runs, and wait for it (nothing here)."""

    def end(self, code: int = 0) -> None:
        """Make the program exit with ``code`` (the first call decides it)."""
        if not self.done.is_set():
            self.exit_code = code
            self.done.set()

    def restore(self) -> None:
        """Write the plan's data back into the volume at its rate, then delete the plan.

        A slice every RESTORE_STEP_S; a slice that fails (the disk is full) is tried again later
        and delays the rest, as a stalled restore does. It resumes from what an earlier start of
        the service restored: the file's size.
        """
        plan, data = self.plan, self.config.data
        if plan is None or data is None:
            return
        slice_bytes = math.ceil(plan.size * RESTORE_STEP_S / plan.seconds) if plan.seconds > 0 else plan.size
        fd = os.open(os.path.join(data, plan.file), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            done, total = min(os.fstat(fd).st_size, plan.size), plan.size / 2**20
            self.restoring = f"restoring {plan.file} from backup: {done / 2**20:.1f} of {total:.1f} MiB"
            due = time.monotonic()
            while done < plan.size:
                due += RESTORE_STEP_S
                time.sleep(max(0.0, due - time.monotonic()))
                try:
                    done += os.pwrite(fd, bytes([plan.byte]) * min(slice_bytes, plan.size - done), done)
                except OSError as exc:
                    self.restoring = f"restoring {plan.file} from backup: stalled at {done / 2**20:.1f} MiB: {exc}"
                    due = time.monotonic()  # a stall delays the rest: it is not made up for
                    continue
                self.restoring = f"restoring {plan.file} from backup: {done / 2**20:.1f} of {total:.1f} MiB"
            os.fsync(fd)
        finally:
            os.close(fd)
        assert self.config.restore_plan is not None  # a plan was read from it
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.config.restore_plan)
        self.restoring = None

    def leak(self) -> None:
        """A leaking release's bug: ``leak_mb_per_s`` MiB a second taken and held, a slice every
        LEAK_STEP_S, until the kernel kills the process. Each slice is written, not merely
        allocated: pages never touched are not resident, and would never count against the
        container's memory. A slice late (the CPU cap) is made up, so the rate is per second of
        wall time, as the sandbox's ticks are."""
        step = max(1, round(self.config.leak_mb_per_s * 2**20 * LEAK_STEP_S))
        due = time.monotonic()
        while not self.done.is_set():
            self.leaked.append(b"\x01" * step)
            due += LEAK_STEP_S
            self.done.wait(max(0.0, due - time.monotonic()))

    def leak_connections(self) -> None:
        """The connection leak's bug, set off by CONN_LEAK_SIGNAL (``conn_leak``); with no database
        to leak connections to, one line saying so."""
        if self.conn_leak is None:
            why = "no PostgreSQL server to leak connections to"
            print(f"{self.PROGRAM}: {CONN_LEAK_SIGNAL.name}: {why}", file=sys.stderr)
        else:
            self.conn_leak.set_off(self.done, self.PROGRAM)

    def check_health(self) -> list[str]:
        """Run the dependency-aware check now, cache its result and return the reasons it failed."""
        restoring = self.restoring
        failed = [restoring] if restoring else []
        failed += self.own_checks()
        failed += self.dependency_checks()
        self.healthy = not failed
        return failed

    def defect(self) -> None:
        """The broken release's bug, run by its every request and check: its new code reads a
        setting the deploy did not bring, and the KeyError is a 500 (``Handler``)."""
        os.environ[NEW_SETTING]  # the lookup is the bug

    def own_checks(self) -> list[str]:
        """Its own part of the health check: a write probe of its data volume."""
        if self.config.broken:
            self.defect()
        if self.config.data:
            try:
                write_probe(self.config.data)
            except OSError as exc:
                return [f"disk {self.config.data}: write probe failed: {exc}"]
        return []

    def dependency_checks(self) -> list[str]:
        """Its dependencies' part: the cached health (``/ping``) of each."""
        return call_all(self.config.depends, "/ping", self.config.timeout)

    def health_loop(self) -> None:
        while True:
            try:
                self.check_health()
            except Exception:  # a broken release's bug: unhealthy, and the loop goes on
                self.healthy = False
            time.sleep(self.config.health_interval)

    def ping(self) -> tuple[int, dict[str, object]]:
        return (200 if self.healthy else 503), {"ok": bool(self.healthy)}

    def health(self) -> tuple[int, dict[str, object]]:
        failed = self.check_health()
        if failed:
            return 503, {"ok": False, "service": self.config.service, "failed": failed}
        deps = [f"{host}:{port}" for host, port in self.config.depends]
        return 200, {"ok": True, "service": self.config.service, "disk": bool(self.config.data), "depends": deps}

    def work(self) -> tuple[int, dict[str, object]]:
        restoring = self.restoring
        if restoring:  # refused at once, as a database in recovery refuses queries
            with self._lock:
                self.requests += 1
                self.failures += 1
            return 503, {"ok": False, "service": self.config.service, "failed": [restoring]}
        failed = self.dependency_work() + self.own_work()
        with self._lock:
            self.requests += 1
            self.failures += bool(failed)
        if failed:
            return 503, {"ok": False, "service": self.config.service, "failed": failed}
        return 200, {"ok": True, "service": self.config.service}

    def dependency_work(self) -> list[str]:
        """Its dependencies' part of a user request: ``/work`` on each."""
        # A caller's timeout cannot know how deep the chain below it is, so be generous.
        return call_all(self.config.depends, "/work", 2 * self.config.timeout)

    def own_work(self) -> list[str]:
        """Its own part of a user request: a record appended to its data volume."""
        if self.config.broken:
            self.defect()
        if not self.config.data:
            return []
        record = json.dumps({"service": self.config.service, "time": time.time()}).ljust(RECORD_BYTES - 1)
        log = os.path.join(self.config.data, LOG_NAME)
        try:
            # A fresh page first, as a store's write-ahead log takes one: an append into a
            # page already allocated would still succeed on a full disk.
            write_probe(self.config.data)
            with self._log_lock:
                if write_synced(log, record.encode() + b"\n", append=True) > LOG_LIMIT:
                    os.truncate(log, 0)  # rotate, so normal traffic never fills the disk
        except OSError as exc:
            return [f"disk {self.config.data}: record write failed: {exc}"]
        return []

    def stats(self) -> tuple[int, dict[str, object]]:
        with self._lock:
            counts = {"requests": self.requests, "failures": self.failures}
        return 200, {"service": self.config.service, **counts, "healthy": bool(self.healthy)}

    def info(self) -> tuple[int, dict[str, object]]:
        """The release it runs, whether it is ready, and its connections: read every tick."""
        body: dict[str, object] = {"service": self.config.service, "release": self.config.release,
                                   "broken": self.config.broken, "ready": True}  # fmt: skip
        connections = self.connections()
        if connections is not None:
            body["connections"] = {"used": connections[0], "limit": connections[1]}
        return 200, body

    def connections(self) -> tuple[int, int] | None:
        """Connections it holds or serves, and their limit; None when it has none (here)."""
        return None


ROUTES = {"/ping": "ping", "/health": "health", "/work": "work", "/stats": "stats", "/info": "info"}
"""Each path's method of the Service (looked up on the instance: another kind may replace it)."""


class Server(ThreadingHTTPServer):
    """Serves one Service; handler threads are daemons, never joined, so a stuck request cannot delay exit."""

    request_queue_size = 64  # a burst of /work must not overflow the backlog: a dropped SYN costs a 1 s retransmit

    def __init__(self, service: Service) -> None:
        super().__init__((service.config.host, service.config.port), Handler)
        self.service = service


class Handler(BaseHTTPRequestHandler):
    server: Server

    def do_GET(self) -> None:
        route = ROUTES.get(self.path.split("?", 1)[0])
        answer: Callable[[], tuple[int, dict[str, object]]] | None = getattr(self.server.service, route or "", None)
        try:
            status, body = answer() if answer else (404, {"error": f"no such path {self.path}"})
        except Exception as exc:  # a bug (a broken release's): a 500, as a web framework answers it
            print(f"{self.server.service.PROGRAM}: {self.path}: {exc!r}", file=sys.stderr)
            status, body = 500, {"ok": False, "error": f"{exc.__class__.__name__}: {exc}"}
        payload = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the caller gave up (its timeout): nothing to tell it

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Stay quiet per request; errors still go to stderr through log_error."""


def main(kind: type[Service] = Service) -> int:
    """Run a service of ``kind`` until SIGTERM or SIGINT (exit 0), or until what it runs exits."""
    try:
        service = kind.from_env(os.environ)
    except ConfigError as exc:
        print(f"{kind.PROGRAM}: bad configuration: {exc}", file=sys.stderr)
        return 2

    def stop(signum: int, frame: object) -> None:
        # From a thread: the handler runs in the main thread, which may hold the event's own lock.
        threading.Thread(target=service.end, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # A runtime bug set off in the running process (from a thread, as stop is).
    signal.signal(CONN_LEAK_SIGNAL, lambda signum, frame: threading.Thread(target=service.leak_connections,
                                                                           daemon=True).start())  # fmt: skip
    # A slow start: nothing listens yet, so every request is refused until it is over.
    if service.done.wait(max(0.0, service.config.start_s - process_age())):
        return 0
    if not service.prepare():
        return 0 if service.done.is_set() else 1
    try:
        server = Server(service)
    except OSError as exc:
        print(f"{kind.PROGRAM}: cannot listen on {service.config.host}:{service.config.port}: {exc}", file=sys.stderr)
        service.stop()
        return 1
    threading.Thread(target=service.run, daemon=True).start()
    threading.Thread(target=service.health_loop, daemon=True).start()
    if service.config.leaks and kind.OWN_CODE:  # from the moment it serves: the leak is in its running code
        threading.Thread(target=service.leak, daemon=True).start()
    # The poll interval bounds how long a shutdown takes.
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    service.done.wait()
    service.stop()  # first: a server it runs is told at once, and gets all of a restart's grace
    server.shutdown()
    server.server_close()
    return service.exit_code


if __name__ == "__main__":
    sys.exit(main())
