"""The web app of the ``app`` kind: the service's HTTP contract, on real PostgreSQL and Redis.

Configured as ``service.py`` is, plus ``DEEPLOPS_POSTGRES`` and ``DEEPLOPS_REDIS`` (the servers
it uses, ``host:port``, comma-separated; ``DEEPLOPS_DEPENDS`` names only its HTTP dependencies)
and ``DEEPLOPS_DB_WAIT_S`` (10 by default):

- ``GET /work``: one user request: an order INSERTed into each PostgreSQL server's ``orders``;
  on each Redis server a GET and a SET of a session and a job pushed onto its ``jobs`` list (for
  the worker); ``/work`` on each HTTP dependency; all at once. 200, or 503 with the reasons.
- ``GET /health``: each dependency checked now with its own client: ``SELECT 1``, ``PING``,
  ``/ping``. ``/ping`` and ``/stats`` as in ``service.py``.

Its broken release (``DEEPLOPS_RELEASE_BROKEN=1``) is a build whose orders carry a column,
``customer``, that a migration it needs was to add and never did: PostgreSQL refuses each
INSERT (``column "customer" of relation "orders" does not exist``), and its health check, which
checks its schema, fails too. An app without PostgreSQL has the generic broken build
(``service.py``). ``/info`` adds its pools' connections, and those a connection leak holds. A leaking release
(``DEEPLOPS_RELEASE_LEAKS=1``) leaks as ``service.py``'s does: the code that leaks is its own alike.
A connection leak (``service.CONN_LEAK_SIGNAL``) opens ``DEEPLOPS_CONN_LEAK_PER_S`` connections a
second to its first PostgreSQL server and never closes them (``clients.ConnectionLeak``). It
connects as ``clients.CLIENT_ROLE`` and recycles its pooled connections (``clients.MAX_AGE_S``).

It crashes at start while its database is down, as an app that migrates or fills its
connection pool at start does: it listens only once every PostgreSQL server answers, waiting
at most ``DEEPLOPS_DB_WAIT_S`` seconds, and else exits 1 with a line saying why. Once up, it
rides out a database outage, failing the requests that need it.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Mapping

import clients
import service

ORDER_COLUMNS = ("service", "request")
NEW_COLUMN = "customer"
"""The column the broken release's orders carry, which its database does not have."""


class App(service.Service):
    """The app: ``service.Service`` with real clients of its databases."""

    PROGRAM = "app.py"

    def __init__(
        self,
        config: service.Config,
        plan: service.RestorePlan | None,
        postgres: tuple[tuple[str, int], ...],
        redis: tuple[tuple[str, int], ...],
        db_wait_s: float,
    ) -> None:
        super().__init__(config, plan)
        self.postgres = [clients.Postgres(host, port, config.timeout) for host, port in postgres]
        self.redis = [clients.Redis(host, port, config.timeout) for host, port in redis]
        if self.postgres:  # a connection leak (set off by a signal) would go into its first server
            self.conn_leak = clients.ConnectionLeak(self.postgres[0], config.conn_leak_per_s)
        self.db_wait_s = db_wait_s
        self._ids = itertools.count(1)  # next() on a count is atomic: ids stay unique across threads
        self._run = os.urandom(3).hex()  # and across restarts: in a container this process is always PID 1

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> App:
        config = service.load_config(env)
        postgres, redis = clients.stores(env)
        db_wait_s = service.non_negative(env.get("DEEPLOPS_DB_WAIT_S", "10"), "DEEPLOPS_DB_WAIT_S")
        return cls(config, service.load_plan(config.restore_plan if config.data else None), postgres, redis, db_wait_s)

    def prepare(self) -> bool:
        """Wait for every PostgreSQL server to answer; False (a crash at start) if one never did."""
        deadline = time.monotonic() + self.db_wait_s
        while not self.done.is_set():
            failed = service.concurrently([db.check for db in self.postgres])
            if not failed:
                return True
            if time.monotonic() >= deadline:
                print(f"{self.PROGRAM}: cannot start after {self.db_wait_s:g} s: {failed[0]}", file=sys.stderr)
                return False
            self.done.wait(0.2)
        return False

    def defect(self) -> None:
        if not self.postgres:  # with PostgreSQL the bug is in its queries
            super().defect()

    def schema_check(self, db: clients.Postgres) -> str | None:
        """``SELECT 1``; the broken release's checks the column it needs."""
        return db.attempt(f"SELECT {NEW_COLUMN} FROM orders LIMIT 0") if self.config.broken else db.check()

    def connections(self) -> tuple[int, int] | None:
        leaked = [self.conn_leak] if self.conn_leak is not None else []  # held beyond its pools' sizes
        return clients.pooled([*self.postgres, *self.redis, *leaked])

    def dependency_checks(self) -> list[str]:
        checks: list[Callable[[], str | None]] = [functools.partial(self.schema_check, db) for db in self.postgres]
        checks += [cache.check for cache in self.redis]
        checks += [functools.partial(service.call, h, p, "/ping", self.config.timeout) for h, p in self.config.depends]
        return service.concurrently(checks)

    def dependency_work(self) -> list[str]:
        request = f"{self.config.service}-{self._run}-{next(self._ids)}"
        job = json.dumps({"request": request, "from": self.config.service, "at": time.time()})
        columns, values = ORDER_COLUMNS, (self.config.service, request)
        if self.config.broken:
            columns, values = (*columns, NEW_COLUMN), (*values, f"customer-{hash(request) % clients.KEPT}")
        tasks: list[Callable[[], str | None]] = [
            functools.partial(db.insert, "orders", columns, values) for db in self.postgres
        ]
        tasks += [functools.partial(self.session_and_job, cache, request, job) for cache in self.redis]
        timeout = 2 * self.config.timeout  # as service.py: the chain below an HTTP dependency is unknown
        tasks += [functools.partial(service.call, h, p, "/work", timeout) for h, p in self.config.depends]
        return service.concurrently(tasks)

    @staticmethod
    def session_and_job(cache: clients.Redis, request: str, job: str) -> str | None:
        """A session read and written, and a job queued for the worker, in one round trip."""
        session = f"session:{hash(request) % clients.KEPT}"  # a bounded key space
        commands = [("get", (session,)), ("set", (session, request)), ("lpush", (clients.JOBS, job)),
                    ("ltrim", (clients.JOBS, 0, clients.KEPT - 1))]  # fmt: skip
        return cache.pipeline(commands)[1]


if __name__ == "__main__":
    sys.exit(service.main(App))
