"""The queue consumer of the ``worker`` kind: jobs from Redis, written into PostgreSQL.

Configured as ``app.py`` is (``DEEPLOPS_POSTGRES``, ``DEEPLOPS_REDIS``). In the background, one
thread per Redis server pops jobs off its ``jobs`` list (``BRPOP``, as a real consumer blocks)
and INSERTs each into every PostgreSQL server's ``jobs_done``; a job that could not be written
is pushed back and tried again, so none is lost to a database outage. It keeps the service's
HTTP contract, so it is measured as every kind is:

- ``GET /work``: one unit of its work, now: a job popped off each list if there is one, and a
  row written for it (``(none)`` when the list was empty). 200, or 503 with the reasons.
- ``GET /health``: ``PING`` of each Redis server, ``SELECT 1`` on each PostgreSQL server.
- ``GET /stats``: adds ``jobs``, the jobs its consumers wrote since it started.

It does not crash at start while a dependency is down: a consumer waits for its servers.

Its broken release (``DEEPLOPS_RELEASE_BROKEN=1``) writes each job with a column, ``priority``,
that ``jobs_done`` does not have (a migration never run): PostgreSQL refuses every write, so no job
is done (each is pushed back), ``/work`` fails, and its health check, which checks its schema,
fails too. A worker without PostgreSQL has the generic broken build (``service.py``). ``/info``
adds its pools' connections, the blocking consumers' included, and those a connection leak holds. A
leaking release (``DEEPLOPS_RELEASE_LEAKS=1``) leaks as ``service.py``'s does: the code that leaks is
theirs alike. A connection leak leaks as the app's does (``clients.ConnectionLeak``).
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable, Mapping

import clients
import service

JOB_COLUMNS = ("worker", "job")
NEW_COLUMN = "priority"
"""The column the broken release's writes carry, which its database does not have."""
BLOCK_S = 1.0
"""How long a consumer's BRPOP waits for a job before it asks again."""
RETRY_S = 0.5
"""How long a consumer waits after a failure (a server down) before it tries again."""


class Worker(service.Service):
    """The worker: ``service.Service`` whose work is its queue."""

    PROGRAM = "worker.py"

    def __init__(
        self,
        config: service.Config,
        plan: service.RestorePlan | None,
        postgres: tuple[tuple[str, int], ...],
        redis: tuple[tuple[str, int], ...],
    ) -> None:
        super().__init__(config, plan)
        self.postgres = [clients.Postgres(host, port, config.timeout) for host, port in postgres]
        self.redis = [clients.Redis(host, port, config.timeout) for host, port in redis]
        if self.postgres:  # a connection leak (set off by a signal) would go into its first server
            self.conn_leak = clients.ConnectionLeak(self.postgres[0], config.conn_leak_per_s)
        # Blocking pops get connections of their own, whose reads wait BLOCK_S longer.
        self.queues = [clients.Redis(host, port, config.timeout, size=1, block_s=BLOCK_S) for host, port in redis]
        self.jobs = 0
        self._jobs_lock = threading.Lock()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Worker:
        config = service.load_config(env)
        postgres, redis = clients.stores(env)
        return cls(config, service.load_plan(config.restore_plan if config.data else None), postgres, redis)

    def run(self) -> None:
        self.restore()
        for queue in self.queues:
            threading.Thread(target=self.consume, args=(queue,), daemon=True).start()

    def consume(self, queue: clients.Redis) -> None:
        """Pop jobs off one Redis server's list and write each, until the program ends."""
        while not self.done.is_set():
            popped, failed = queue.attempt("brpop", [clients.JOBS], BLOCK_S)
            if failed:
                self.done.wait(RETRY_S)
                continue
            if popped is None:  # no job within BLOCK_S
                continue
            job = popped[1].decode(errors="replace")
            if self.write(job):
                queue.attempt("rpush", clients.JOBS, job)  # back where it came from: the next one popped
                self.done.wait(RETRY_S)
                continue
            with self._jobs_lock:
                self.jobs += 1

    def write(self, job: str) -> list[str]:
        """Write a job into every PostgreSQL server; the reasons it failed."""
        columns, values = JOB_COLUMNS, (self.config.service, job)
        if self.config.broken:
            columns, values = (*columns, NEW_COLUMN), (*values, 1)
        return service.concurrently([functools.partial(db.insert, "jobs_done", columns, values)
                                     for db in self.postgres])  # fmt: skip

    def defect(self) -> None:
        if not self.postgres:  # with PostgreSQL the bug is in its writes
            super().defect()

    def schema_check(self, db: clients.Postgres) -> str | None:
        """``SELECT 1``; the broken release's checks the column it needs."""
        return db.attempt(f"SELECT {NEW_COLUMN} FROM jobs_done LIMIT 0") if self.config.broken else db.check()

    def connections(self) -> tuple[int, int] | None:
        leaked = [self.conn_leak] if self.conn_leak is not None else []  # held beyond its pools' sizes
        return clients.pooled([*self.postgres, *self.redis, *self.queues, *leaked])

    def dependency_checks(self) -> list[str]:
        checks: list[Callable[[], str | None]] = [functools.partial(self.schema_check, db) for db in self.postgres]
        checks += [queue.check for queue in self.redis]
        checks += [functools.partial(service.call, h, p, "/ping", self.config.timeout) for h, p in self.config.depends]
        return service.concurrently(checks)

    def dependency_work(self) -> list[str]:
        failed = []
        for queue in self.redis:
            popped, why = queue.attempt("rpop", clients.JOBS)
            if why:
                failed.append(why)
                continue
            job = popped.decode(errors="replace") if popped is not None else "(none)"
            written = self.write(job)
            if written and popped is not None:
                queue.attempt("rpush", clients.JOBS, popped)  # not lost: the consumer takes it again
            failed += written
        if not self.redis:
            failed += self.write("(none)")
        return failed

    def stats(self) -> tuple[int, dict[str, object]]:
        status, body = super().stats()
        with self._jobs_lock:
            return status, {**body, "jobs": self.jobs}


if __name__ == "__main__":
    sys.exit(service.main(Worker))
