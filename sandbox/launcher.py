"""The container's main program for a kind that is real server software: ``launcher.py KIND``.

- ``postgres``: PostgreSQL 15 on port 5432, its cluster in ``DEEPLOPS_DATA/pgdata`` (copied from
  the template the image made at build time when the volume has none), and ``redis``: Redis on
  port 6379, appending every write to a file in ``DEEPLOPS_DATA/redis`` when the service has a
  volume. Each server runs as this program's child, as in the official images: SIGTERM is passed
  on (as SIGINT to PostgreSQL, its fast shutdown: SIGTERM would wait for every client to hang up),
  and the program exits when the server does, with its status. Beside it, the service's HTTP
  contract on 8080 (``service.py``), answered with the server's own client: ``/health`` connects
  and writes (PostgreSQL: ``SELECT 1`` and a write that needs new storage; Redis: ``PING`` and a
  ``SET``); ``/work`` is one real client request (an INSERT; a SET). A restore after a recreate
  (``DEEPLOPS_RESTORE_PLAN``) runs before the server starts, as a restore from backup does.
- ``nginx``: the configuration is written from the environment (``nginx_config``) and nginx
  replaces this program (``daemon off``), so it is the container's main process. It proxies
  ``/work``, ``/ping`` and ``/health`` (as the upstream's ``/ping``, as ``service.py``'s health
  pings its dependencies) to its one dependency in ``DEEPLOPS_DEPENDS``, with timeouts from
  ``DEEPLOPS_TIMEOUT``. It resolves the upstream's name anew every second, so a recreated
  upstream at a new address is found.

Each kind's broken release (``DEEPLOPS_RELEASE_BROKEN=1``) is a bad configuration, as a config
change shipped as a release is: PostgreSQL with ``default_transaction_read_only = on`` (every
write fails; a plain SELECT works), Redis with ``maxmemory 512`` (bytes: its template lost the
``mb``) and ``noeviction`` (every write fails with OOM; PING and reads work), nginx proxying to
its upstream's port plus one (nothing listens there: every request fails). ``/info`` says the release, and for
PostgreSQL and Redis the server's client connections of its limit (``ready`` once it answers):
PostgreSQL's over the slots its clients may take, ``max_connections`` less the
``superuser_reserved_connections`` its own checks connect into (as the superuser, with connections
they hold), so they and the count work when its clients have taken every other slot.

A leaking release (``DEEPLOPS_RELEASE_LEAKS``) is our own code's bug, never a server's: the sandbox
gives it to none of these kinds, and they would ignore it (``service.Service.OWN_CODE``). So is a
connection leak: its signal only has the launcher say it has no database to leak into.

Bad configuration prints one line to stderr and exits 2; SIGTERM exits 0.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping

import clients
import service

PG_BIN = "/usr/lib/postgresql/15/bin"
PG_TEMPLATE = "/opt/deeplops/pgtemplate"
"""The cluster made when the image was built (initdb and schema.sql): copied, never run again."""
NGINX_CONF = "/etc/nginx/deeplops.conf"
REDIS_MAX_CLIENTS = 64
"""Redis's client limit: small as PostgreSQL's 30, the scale of a sandbox (its default, 10,000,
would make every count read 0)."""
BROKEN_PG = ["-c", "default_transaction_read_only=on"]
BROKEN_REDIS = ["--maxmemory", "512", "--maxmemory-policy", "noeviction"]
"""The broken releases' configurations (``-c`` and ``--`` options: the server's own settings)."""
NO_VOLUME = "/var/lib/deeplops"
"""Where a server keeps its files when the service has no volume: the container's own layer."""


class Daemon(service.Service):
    """A real server as this program's child, behind the service's HTTP contract."""

    PROGRAM = "launcher.py"
    OWN_CODE = False  # server software is not ours to release: a leaking release is never given to it
    NAME = ""
    """The server, as its messages name it."""
    USER = "root"
    """The user it runs as."""
    DIR = ""
    """Its folder in the volume."""
    STOP_SIGNAL = signal.SIGTERM
    """What SIGTERM is passed on as."""

    def __init__(self, config: service.Config, plan: service.RestorePlan | None = None) -> None:
        super().__init__(config, plan)
        self.child: subprocess.Popen[bytes] | None = None
        self._started = threading.Lock()
        self.home = os.path.join(config.data or NO_VOLUME, self.DIR)

    def command(self) -> list[str]:
        """The server's command line."""
        raise NotImplementedError

    def setup(self) -> None:
        """Make the server's folder ready (owned by its user)."""
        os.makedirs(self.home, exist_ok=True)
        user = pwd.getpwnam(self.USER)
        os.chown(self.home, user.pw_uid, user.pw_gid)

    def run(self) -> None:
        self.restore()  # the data comes back before the server starts, as from a backup
        with self._started:
            if self.done.is_set():
                return
            try:
                self.setup()
                self.child = subprocess.Popen(self.command(), user=self.USER, group=self.USER, extra_groups=[])
            except (OSError, subprocess.CalledProcessError) as exc:  # a full disk: no room for the cluster
                print(f"{self.PROGRAM}: cannot start {self.NAME} in {self.home}: {exc}", file=sys.stderr)
                self.end(1)
                return
        threading.Thread(target=self.watch, daemon=True).start()

    def watch(self) -> None:
        """The program ends when its server does, as a container ends with its main process."""
        assert self.child is not None
        code = self.child.wait()
        if not self.done.is_set():
            print(f"{self.PROGRAM}: {self.NAME} exited with status {code}", file=sys.stderr)
        self.end(code if code >= 0 else 128 - code)  # killed by a signal: as a shell reports it

    def stop(self) -> None:
        with self._started:  # no server starts once this has run
            self.done.set()
            if self.child is not None and self.child.poll() is None:
                self.child.send_signal(self.STOP_SIGNAL)
                self.child.wait()

    def own_checks(self) -> list[str]:
        if self.child is None:
            return [f"{self.NAME} not started"]
        if self.child.poll() is not None:
            return [f"{self.NAME} exited with status {self.child.returncode}"]
        reason = self.check_server()
        return [reason] if reason else []

    def check_server(self) -> str | None:
        """The server's own health check."""
        raise NotImplementedError

    def own_work(self) -> list[str]:
        if self.child is None or self.child.poll() is not None:
            return [f"{self.NAME} not running"]
        reason = self.request()
        return [reason] if reason else []

    def request(self) -> str | None:
        """One real client request."""
        raise NotImplementedError

    def info(self) -> tuple[int, dict[str, object]]:
        status, body = super().info()
        return status, {**body, "ready": "connections" in body}  # its server answered

    def connections(self) -> tuple[int, int] | None:
        if self.child is None or self.child.poll() is not None:
            return None
        return self.server_connections()

    def server_connections(self) -> tuple[int, int] | None:
        """The server's client connections and their limit, as it counts them; None when it does not answer."""
        raise NotImplementedError


class Postgres(Daemon):
    """PostgreSQL 15: its fast shutdown on SIGTERM, its cluster copied from the template."""

    NAME = USER = "postgres"
    DIR = "pgdata"
    STOP_SIGNAL = signal.SIGINT  # its fast shutdown

    def __init__(self, config: service.Config, plan: service.RestorePlan | None = None) -> None:
        super().__init__(config, plan)
        # Its checks and counters connect as the superuser, for whom the server keeps its last
        # slots, and hold their connections: they work while the clients have taken every other slot.
        self.db = clients.Postgres("127.0.0.1", clients.POSTGRES_PORT, config.timeout, user=clients.SUPERUSER,
                                   max_age_s=None)  # fmt: skip

    def command(self) -> list[str]:
        return [f"{PG_BIN}/postgres", "-D", self.home, *(BROKEN_PG if self.config.broken else [])]

    def setup(self) -> None:
        if not os.path.exists(os.path.join(self.home, "PG_VERSION")):
            # Copied under another name and renamed, so a copy cut short is never taken for a cluster.
            copy = self.home + ".copy"
            shutil.rmtree(copy, ignore_errors=True)
            shutil.rmtree(self.home, ignore_errors=True)
            os.makedirs(os.path.dirname(copy), exist_ok=True)
            subprocess.run(["cp", "-a", PG_TEMPLATE, copy], check=True, capture_output=True)
            os.rename(copy, self.home)
        # This container is new, or restarted, so no postmaster of it can be running: a lock file
        # left by one that was killed names a PID that may now be this program's, or a thread's,
        # which PostgreSQL would take for a live postmaster and refuse to start.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.home, "postmaster.pid"))

    def check_server(self) -> str | None:
        # A write that needs new storage: a table emptied (a new, empty file) and written to, so
        # a full disk fails it now, not when a growing table next needs a page.
        canary = "TRUNCATE deeplops_health; INSERT INTO deeplops_health DEFAULT VALUES"
        return self.db.check() or self.db.attempt(canary)

    def request(self) -> str | None:
        return self.db.insert("deeplops_work", ("service",), (self.config.service,))

    def server_connections(self) -> tuple[int, int] | None:
        return self.db.server_connections()


class Redis(Daemon):
    """Redis, appending every write to its file when the service has a volume."""

    NAME = "redis-server"
    USER = DIR = "redis"

    def __init__(self, config: service.Config, plan: service.RestorePlan | None = None) -> None:
        super().__init__(config, plan)
        self.cache = clients.Redis("127.0.0.1", clients.REDIS_PORT, config.timeout)
        self._ids = itertools.count()  # next() on a count is atomic

    def command(self) -> list[str]:
        durable = bool(self.config.data)
        # The append-only file is rewritten (compacted) whenever it doubles past 1 MB: Redis's
        # default waits for 64 MB, more than a small volume holds.
        return ["redis-server", "--bind", "0.0.0.0", "--port", str(clients.REDIS_PORT), "--protected-mode", "no",
                "--dir", self.home, "--save", "", "--appendonly", "yes" if durable else "no",
                "--appendfsync", "everysec", "--auto-aof-rewrite-min-size", "1mb", "--loglevel", "warning",
                "--maxclients", str(REDIS_MAX_CLIENTS), *(BROKEN_REDIS if self.config.broken else [])]  # fmt: skip

    def check_server(self) -> str | None:
        return self.cache.check() or self.cache.attempt("set", "deeplops:health", "ok")[1]

    def request(self) -> str | None:
        return self.cache.attempt("set", f"deeplops:work:{next(self._ids) % clients.KEPT}", self.config.service)[1]

    def server_connections(self) -> tuple[int, int] | None:
        return self.cache.server_connections()


DAEMONS: dict[str, type[Daemon]] = {"postgres": Postgres, "redis": Redis}


def nginx_config(
    name: str,
    port: int,
    upstream: tuple[str, int],
    timeout: float,
    resolver: str,
    release: str = "r1",
    broken: bool = False,
) -> str:
    """nginx's whole configuration for a gateway ``name`` listening on ``port`` in front of ``upstream``,
    as release ``release``; the broken release's proxies to the upstream's port plus one."""
    host, upstream_port = upstream
    upstream_port += broken  # the broken release's mistake: nothing listens there
    ms = max(1, round(timeout * 1000))
    failed = f'{{"ok": false, "service": "{name}", "failed": ["upstream {host}:{upstream_port}: no answer"]}}'
    info = json.dumps({"service": name, "upstream": f"{host}:{upstream_port}", "release": release,
                        "broken": broken, "ready": True})  # fmt: skip
    return f"""# Written by launcher.py from the environment at start.
daemon off;
user www-data;
worker_processes 1;
pid /run/nginx.pid;
error_log stderr error;
events {{ worker_connections 256; }}
http {{
    access_log off;
    default_type application/json;
    # The upstream's name is looked up again every second: a recreated upstream has a new address.
    resolver {resolver} valid=1s ipv6=off;
    resolver_timeout {ms}ms;
    proxy_connect_timeout {ms}ms;
    proxy_send_timeout {ms}ms;
    proxy_read_timeout {ms}ms;
    proxy_next_upstream off;
    server {{
        listen {port} backlog=64;
        set $upstream {host}:{upstream_port};
        # A user request: the chain below the upstream is unknown, so twice the timeout, as service.py.
        location = /work {{ proxy_pass http://$upstream/work; proxy_read_timeout {2 * ms}ms; }}
        location = /ping {{ proxy_pass http://$upstream/ping; }}
        location = /health {{ proxy_pass http://$upstream/ping; }}
        location = /stats {{ return 200 '{{"service": "{name}", "upstream": "{host}:{upstream_port}"}}'; }}
        location = /info {{ return 200 '{info}'; }}
        location / {{ return 404 '{{"error": "no such path"}}'; }}
        # nginx's own failures (the upstream refused, timed out, or has no address) as JSON.
        error_page 502 503 504 @failed;
        location @failed {{ return 503 '{failed}'; }}
    }}
}}
"""


def resolver(path: str = "/etc/resolv.conf") -> str:
    """The first name server of ``path`` (Docker's own, 127.0.0.11, on a sandbox network)."""
    try:
        with open(path) as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 2 and fields[0] == "nameserver":
                    return fields[1]
    except OSError:
        pass
    return "127.0.0.11"


def nginx(env: Mapping[str, str]) -> int:
    """Write the configuration, wait out a slow start, and become nginx."""
    try:
        config = service.load_config(env)
        if len(config.depends) != 1:
            raise service.ConfigError(f"DEEPLOPS_DEPENDS must name exactly one upstream, got {len(config.depends)}")
    except service.ConfigError as exc:
        print(f"launcher.py: bad configuration: {exc}", file=sys.stderr)
        return 2
    text = nginx_config(config.service, config.port, config.depends[0], config.timeout, resolver(), config.release,
                        config.broken)  # fmt: skip
    with open(env.get("DEEPLOPS_NGINX_CONF", NGINX_CONF), "w") as f:
        f.write(text)
    stopped = threading.Event()
    # From a thread, as service.main does: the handler may interrupt the event's own lock.
    signal.signal(signal.SIGTERM, lambda signum, frame: threading.Thread(target=stopped.set, daemon=True).start())
    if stopped.wait(max(0.0, config.start_s - service.process_age())):
        return 0
    os.execv("/usr/sbin/nginx", ["nginx", "-c", f.name])


def main(argv: list[str]) -> int:
    kind = argv[1] if len(argv) == 2 else ""
    if kind == "nginx":
        return nginx(os.environ)
    if kind not in DAEMONS:
        print(f"launcher.py: bad configuration: expected one argument, nginx or {' or '.join(DAEMONS)}, "
              f"got {' '.join(argv[1:])!r}", file=sys.stderr)  # fmt: skip
        return 2
    return service.main(DAEMONS[kind])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
