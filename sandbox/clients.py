"""Clients of PostgreSQL and Redis for the sandbox's programs, every call bounded by a timeout.

The app, the worker and the launcher's health checks speak to the real servers through these,
with Debian's client libraries (``python3-psycopg2``, ``python3-redis``). Those are imported on
first use, so a program checks its configuration (and is unit-tested) where they are missing.

Each call returns None when it succeeded, else one line saying why not, as ``service.call`` does
for HTTP. What the programs write is capped (``KEPT``), so traffic never fills a disk.
"""

from __future__ import annotations

import contextlib
import math
import select
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

_deadline = threading.local()


def stores(env: Mapping[str, str]) -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, int], ...]]:
    """The PostgreSQL (``DEEPLOPS_POSTGRES``) and Redis (``DEEPLOPS_REDIS``) servers a program
    uses, each a comma-separated list of ``host:port``."""
    return (
        endpoints(env.get("DEEPLOPS_POSTGRES", ""), "DEEPLOPS_POSTGRES"),
        endpoints(env.get("DEEPLOPS_REDIS", ""), "DEEPLOPS_REDIS"),
    )


def pooled(pools: list[Any]) -> tuple[int, int] | None:
    """Connections held by ``pools`` (each a Postgres or Redis here) and their sizes, summed; None
    without any."""
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
    """A small pool of autocommit connections to one PostgreSQL server, as user and database ``postgres``."""

    def __init__(self, host: str, port: int, timeout: float, size: int = POOL_SIZE) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.name = f"postgres {host}:{port}"
        self.size = size
        self.open = 0
        """Connections it holds now, idle or busy (each takes one of the server's slots)."""
        self._idle: list[Any] = []
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()

    def query(self, sql: str, args: tuple[object, ...] = (), timeout: float | None = None) -> list[tuple[Any, ...]]:
        """Run one statement (or several, in one transaction) and return its rows; raises on any
        failure, a timeout included, and drops the connection it used."""
        psycopg2 = _psycopg2()
        timeout = self.timeout if timeout is None else timeout
        if not self._slots.acquire(timeout=timeout):
            raise TimeoutError(f"all {POOL_SIZE} connections busy")
        try:
            with deadline(timeout):
                with self._lock:
                    conn = self._idle.pop() if self._idle else None
                if conn is None:
                    conn = psycopg2.connect(host=self.host, port=self.port, user="postgres", dbname="postgres")
                    with self._lock:
                        self.open += 1
                    conn.autocommit = True
                try:
                    with conn.cursor() as cur:
                        cur.execute(sql, args)
                        rows = cur.fetchall() if cur.description else []
                except BaseException:
                    conn.close()  # its state is unknown (a timeout mid-query): never reused
                    with self._lock:
                        self.open -= 1
                    raise
            with self._lock:
                self._idle.append(conn)
            return rows
        finally:
            self._slots.release()

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
        """Connections the pool holds, and its size."""
        return self.open, self.size

    def server_connections(self) -> tuple[int, int] | None:
        """The server's client connections in use (idle ones hold their slot too) and its
        ``max_connections``, by one query; None when it does not answer."""
        sql = ("SELECT count(*) FILTER (WHERE backend_type = 'client backend'), "
               "current_setting('max_connections')::int FROM pg_stat_activity")  # fmt: skip
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
