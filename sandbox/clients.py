"""Clients of PostgreSQL and Redis for the sandbox's programs, every call bounded by a timeout.

The app, the worker and the launcher's health checks speak to the real servers through these,
with Debian's client libraries (``python3-psycopg2``, ``python3-redis``). Those are imported on
first use, so a program checks its configuration (and is unit-tested) where they are missing.

Each call returns None when it succeeded, else one line saying why not, as ``service.call`` does
for HTTP. What the programs write is capped (``KEPT``), so traffic never fills a disk.

The app and the worker connect to PostgreSQL as ``CLIENT_ROLE``, an ordinary role (schema.sql),
and recycle their pooled connections after ``MAX_AGE_S``; the launcher's own checks connect as
the superuser, for whom PostgreSQL keeps its last slots (``superuser_reserved_connections``).
``ConnectionLeak`` is a client's connection leak (``service.CONN_LEAK_SIGNAL`` sets it off).
"""

from __future__ import annotations

import contextlib
import math
import select
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from service import endpoints

POSTGRES_PORT = 5432
REDIS_PORT = 6379
KEPT = 1000
"""Rows a table keeps and items a list keeps; older ones are deleted as new ones come."""
JOBS = "jobs"
"""The Redis list the app pushes jobs onto and the worker pops them from."""
POOL_SIZE = 4
"""Connections a program holds to each server at most (PostgreSQL allows 30 in all)."""
CLIENT_ROLE = "deeplops"
"""The role the app and the worker (and a leak of theirs) connect to PostgreSQL as: an ordinary one,
granted what they need (schema.sql), so the server's last ``superuser_reserved_connections`` slots
stay for its own checks and counters (``launcher.py``) when its clients have taken all the others."""
SUPERUSER = "postgres"
"""The role the launcher's own checks connect as, as a server's monitoring does."""
MAX_AGE_S = 0.5
"""Longest a client uses one pooled PostgreSQL connection: an older one is closed when it comes back
to the pool, or by the pool's housekeeping while it is idle, and a new one opened when needed, as
every mature pool recycles its connections (HikariCP's ``maxLifetime``, SQLAlchemy's
``pool_recycle``), scaled to the sandbox's one-second tick: half of it, so the connections one
tick's requests open are gone before the next tick's come. So a client needs new connections every
tick, and one whose server refuses them (every slot taken) fails within about a tick, as a real one
does within its lifetime setting. (With a whole tick, the connections came of age just as the next
tick's requests came, and were replaced at once: a connection leak, attempting a third of a second
apart, seldom got their slots, and clients went on being served for up to 8 ticks past a full
server; sandbox/README.md, connection leaks.)"""
HOUSEKEEPING_S = 0.1
"""How often a pool closes its idle connections past their age, as HikariCP's housekeeper does."""

_deadline = threading.local()


def stores(env: Mapping[str, str]) -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, int], ...]]:
    """The PostgreSQL (``DEEPLOPS_POSTGRES``) and Redis (``DEEPLOPS_REDIS``) servers a program
    uses, each a comma-separated list of ``host:port``."""
    return (
        endpoints(env.get("DEEPLOPS_POSTGRES", ""), "DEEPLOPS_POSTGRES"),
        endpoints(env.get("DEEPLOPS_REDIS", ""), "DEEPLOPS_REDIS"),
    )


def pooled(pools: list[Any]) -> tuple[int, int] | None:
    """Connections held by ``pools`` (each a Postgres, Redis or ConnectionLeak here) and their sizes,
    summed; None without any."""
    if not pools:
        return None
    held = [pool.connections() for pool in pools]
    return sum(used for used, _ in held), sum(limit for _, limit in held)


def first_line(exc: BaseException) -> str:
    """An error as one short line (a server's messages run over several)."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else exc.__class__.__name__)[:200]


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Inside: every PostgreSQL wait of this thread ends ``seconds`` from now at the latest."""
    before = getattr(_deadline, "at", math.inf)
    _deadline.at = time.monotonic() + seconds
    try:
        yield
    finally:
        _deadline.at = before


def _wait(conn: Any) -> None:
    """psycopg2's wait callback: libpq would block (connecting, or waiting for a result); wait for
    the socket until the thread's deadline, as libpq's own ``connect_timeout`` (whole seconds, 2 at
    least) and a frozen server (which never answers a query) would not."""
    import psycopg2.extensions as ext

    while True:
        state = conn.poll()
        if state == ext.POLL_OK:
            return
        left = getattr(_deadline, "at", math.inf) - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        timeout = None if left == math.inf else left
        if state == ext.POLL_READ:
            select.select([conn.fileno()], [], [], timeout)
        elif state == ext.POLL_WRITE:
            select.select([], [conn.fileno()], [], timeout)
        else:
            raise OSError(f"unexpected poll state {state}")


_installed = threading.Lock()


def _psycopg2() -> Any:
    """The library, with the deadline-bound wait installed (once, for every connection)."""
    import psycopg2
    import psycopg2.extensions

    with _installed:
        if psycopg2.extensions.get_wait_callback() is None:
            psycopg2.extensions.set_wait_callback(_wait)
    return psycopg2


class Postgres:
    """A small pool of autocommit connections to one PostgreSQL server, to database ``postgres`` as
    ``user``; each connection is used for ``max_age_s`` at most (None: kept while it works)."""

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float,
        size: int = POOL_SIZE,
        user: str = CLIENT_ROLE,
        max_age_s: float | None = MAX_AGE_S,
    ) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.name = f"postgres {host}:{port}"
        self.size = size
        self.user = user
        self.max_age_s = max_age_s
        self.open = 0
        """Connections it holds now, idle or busy (each takes one of the server's slots)."""
        self._idle: list[tuple[Any, float]] = []
        """Idle connections, each with when it was opened (``time.monotonic``)."""
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._housekeeper: threading.Thread | None = None

    def connect(self) -> Any:
        """A new autocommit connection, within the thread's deadline (``deadline``); raises on failure."""
        conn = _psycopg2().connect(host=self.host, port=self.port, user=self.user, dbname="postgres")
        conn.autocommit = True
        return conn

    def query(self, sql: str, args: tuple[object, ...] = (), timeout: float | None = None) -> list[tuple[Any, ...]]:
        """Run one statement (or several, in one transaction) and return its rows; raises on any
        failure, a timeout included, and drops the connection it used."""
        timeout = self.timeout if timeout is None else timeout
        if not self._slots.acquire(timeout=timeout):
            raise TimeoutError(f"all {self.size} connections busy")
        try:
            with deadline(timeout):
                taken = self._take()
                if taken is None:
                    conn, opened = self.connect(), time.monotonic()
                    with self._lock:
                        self.open += 1
                    self._keep_house()
                else:
                    conn, opened = taken
                try:
                    with conn.cursor() as cur:
                        cur.execute(sql, args)
                        rows = cur.fetchall() if cur.description else []
                except BaseException:
                    self._retire(conn)  # its state is unknown (a timeout mid-query): never reused
                    raise
            if self._expired(opened):
                self._retire(conn)
            else:
                with self._lock:
                    self._idle.append((conn, opened))
            return rows
        finally:
            self._slots.release()

    def _expired(self, opened: float) -> bool:
        return self.max_age_s is not None and time.monotonic() - opened >= self.max_age_s

    def _take(self) -> tuple[Any, float] | None:
        """The newest idle connection young enough to use, if any; the expired ones are closed."""
        self._sweep()
        with self._lock:
            return self._idle.pop() if self._idle else None

    def _sweep(self) -> None:
        """Close the idle connections past their age (a pool's housekeeping)."""
        with self._lock:
            expired = [conn for conn, opened in self._idle if self._expired(opened)]
            self._idle = [(conn, opened) for conn, opened in self._idle if not self._expired(opened)]
        for conn in expired:
            self._retire(conn)

    def _keep_house(self) -> None:
        """Start the housekeeper (once, with its first connection, where connections age)."""
        with self._lock:
            if self._housekeeper is not None or self.max_age_s is None:
                return
            self._housekeeper = threading.Thread(target=self._housekeeping, daemon=True)
        self._housekeeper.start()

    def _housekeeping(self) -> None:
        while True:
            time.sleep(HOUSEKEEPING_S)
            self._sweep()

    def _retire(self, conn: Any) -> None:
        """Close one of its connections for good."""
        with contextlib.suppress(Exception):  # a broken one may fail to say goodbye
            conn.close()
        with self._lock:
            self.open -= 1

    def attempt(self, sql: str, args: tuple[object, ...] = (), timeout: float | None = None) -> str | None:
        """``query``, as None or why it failed."""
        try:
            self.query(sql, args, timeout)
        except Exception as exc:  # the library's errors, a timeout, a refused or reset connection
            return f"{self.name}: {first_line(exc)}"
        return None

    def check(self) -> str | None:
        """Whether it answers a query now (``pg_isready`` and a little more)."""
        return self.attempt("SELECT 1")

    def connections(self) -> tuple[int, int]:
        """Connections the pool holds (the expired idle ones closed first), and its size."""
        self._sweep()
        return self.open, self.size

    def server_connections(self) -> tuple[int, int] | None:
        """The server's client connections in use (idle ones hold their slot too, the superuser's
        included) and the slots its clients may take: ``max_connections`` less the
        ``superuser_reserved_connections`` kept for the superuser; by one query, None when it does
        not answer. Full, it reads that limit (or a few over it: the superuser's own)."""
        sql = ("SELECT count(*) FILTER (WHERE backend_type = 'client backend'), "
               "current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int "
               "FROM pg_stat_activity")  # fmt: skip
        try:
            ((used, limit),) = self.query(sql)
        except Exception:  # down, frozen, refusing: no counters
            return None
        return int(used), int(limit)

    def insert(self, table: str, columns: tuple[str, ...], values: tuple[object, ...]) -> str | None:
        """Insert a row into ``table`` (one of schema.sql's, whose ``id`` counts rows), keeping
        its last KEPT rows: every hundredth insert deletes the older ones."""
        marks = ", ".join(["%s"] * len(values))
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) RETURNING id"
        try:
            (row_id,), *_ = self.query(sql, values)
            if row_id % 100 == 0:
                self.query(f"DELETE FROM {table} WHERE id <= %s", (row_id - KEPT,))
        except Exception as exc:
            return f"{self.name}: {first_line(exc)}"
        return None


class ConnectionLeak:
    """A client's connection leak, a bug of its running code (a path that opens a connection and
    never closes it): once started, it opens a new connection to ``db``'s server ``per_s`` times a
    second, as ``db``'s own user, and holds every one. An attempt that fails (the server full, or
    down) is just made again at the same rate. Connections the server has closed (it restarted)
    are noticed and dropped. It ends with the process: a restart of the client ends it."""

    def __init__(self, db: Postgres, per_s: float) -> None:
        self.db = db
        self.per_s = per_s
        """Connections it tries to open a second (0: not told, it cannot start)."""
        self.held: list[Any] = []
        """The connections it opened and holds, the server's still as far as it knows."""
        self.failed = 0
        """Attempts that failed."""
        self.why: str | None = None
        """Why the last failed one did."""
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self, done: threading.Event) -> bool:
        """Start leaking, until ``done`` is set; whether it started now (it runs at most once, and
        never without a rate)."""
        with self._lock:
            if self._thread is not None or not self.per_s > 0:
                return False
            self._thread = threading.Thread(target=self.run, args=(done,), daemon=True)
        self._thread.start()
        return True

    def set_off(self, done: threading.Event, program: str) -> None:
        """``start``, or one line on stderr saying why it cannot (no rate told)."""
        if not self.per_s > 0:
            print(f"{program}: cannot leak connections: DEEPLOPS_CONN_LEAK_PER_S is not set", file=sys.stderr)
            return
        self.start(done)

    def run(self, done: threading.Event) -> None:
        """An attempt every ``1 / per_s`` seconds, the dropped connections counted out before each.
        One late (a slow attempt, the CPU cap) is not made up for beyond the step it missed."""
        step = 1.0 / self.per_s
        due = time.monotonic()
        while not done.is_set():
            self.drop_closed()
            self.attempt()
            due = max(due + step, time.monotonic() - step)
            done.wait(max(0.0, due - time.monotonic()))

    def attempt(self) -> str | None:
        """Open one more connection and keep it; None, or why it failed."""
        try:
            with deadline(self.db.timeout):
                conn = self.db.connect()
        except Exception as exc:  # the server full, down, frozen: the next attempt comes all the same
            self.failed += 1
            self.why = f"{self.db.name}: {first_line(exc)}"
            return self.why
        with self._lock:
            self.held.append(conn)
        return None

    def drop_closed(self) -> int:
        """Close and forget the held connections the server has closed (a restart of it ends every
        one); how many. A connection nobody uses receives nothing, so one whose socket reads is
        the server's goodbye (its FATAL message, then the end of the stream): libpq reads it
        (``poll``), and fails once the stream has ended."""
        with self._lock:
            held = list(self.held)
        gone = [conn for conn in held if conn.closed]
        live = [conn for conn in held if not conn.closed]
        readable = select.select(live, [], [], 0)[0] if live else []
        for conn in readable:
            try:
                conn.poll()
            except Exception:  # the server has closed it (psycopg2's OperationalError)
                gone.append(conn)
                continue
            if conn.closed:
                gone.append(conn)
        for conn in gone:
            with contextlib.suppress(Exception):
                conn.close()
        with self._lock:
            self.held = [conn for conn in self.held if conn not in gone]
        return len(gone)

    def connections(self) -> tuple[int, int]:
        """The connections it holds, and no limit of its own (``pooled`` adds them to its program's)."""
        with self._lock:
            return len(self.held), 0


class Redis:
    """A pool of connections to one Redis server; ``block_s`` more per call for blocking pops."""

    def __init__(self, host: str, port: int, timeout: float, size: int = POOL_SIZE, block_s: float = 0.0) -> None:
        import redis

        self.name = f"redis {host}:{port}"
        self.errors = (redis.RedisError, OSError)
        pool = redis.BlockingConnectionPool(
            host=host, port=port, max_connections=size, timeout=timeout,
            socket_timeout=timeout + block_s, socket_connect_timeout=timeout,
        )  # fmt: skip
        self.client = redis.Redis(connection_pool=pool)
        self.size = size

    def connections(self) -> tuple[int, int]:
        """Connections the pool holds (connected now), and its size."""
        made = list(self.client.connection_pool._connections)  # redis-py keeps every one it made
        return sum(1 for conn in made if getattr(conn, "_sock", None) is not None), self.size

    def attempt(self, what: str, *args: object) -> tuple[Any, str | None]:
        """Run the command ``what`` (a method of redis-py's client); its result, and why it failed or None."""
        try:
            return getattr(self.client, what)(*args), None
        except self.errors as exc:
            return None, f"{self.name}: {what}: {first_line(exc)}"

    def check(self) -> str | None:
        """A PING."""
        return self.attempt("ping")[1]

    def pipeline(self, commands: list[tuple[str, tuple[object, ...]]]) -> tuple[list[Any], str | None]:
        """Several commands in one round trip (no transaction); their results, and why any failed."""
        try:
            pipe = self.client.pipeline(transaction=False)
            for what, args in commands:
                getattr(pipe, what)(*args)
            return pipe.execute(), None
        except self.errors as exc:
            return [], f"{self.name}: {first_line(exc)}"

    def server_connections(self) -> tuple[int, int] | None:
        """The server's clients and its ``maxclients``, in one round trip; None when it does not answer."""
        results, failed = self.pipeline([("info", ("clients",)), ("config_get", ("maxclients",))])
        if failed:
            return None
        info, limit = results
        return int(info["connected_clients"]), int(limit["maxclients"])

    def push_job(self, job: str) -> str | None:
        """Push a job onto the JOBS list, keeping its KEPT newest."""
        return self.pipeline([("lpush", (JOBS, job)), ("ltrim", (JOBS, 0, KEPT - 1))])[1]
