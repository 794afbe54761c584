"""The kinds' programs (sandbox/app.py, worker.py, launcher.py) and how the Docker backend starts
each kind, without Docker: configuration, nginx's generated configuration, each kind's command
and environment, and the programs a container's process list names."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from deeplops.dockerbox import image, stack
from deeplops.topology import KINDS, load_topology

SANDBOX = Path(__file__).resolve().parents[1] / "sandbox"


@pytest.fixture
def launcher(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """sandbox/launcher.py as a module (it imports service.py and clients.py beside it)."""
    monkeypatch.syspath_prepend(str(SANDBOX))
    import launcher as module

    yield module
    for name in ("launcher", "clients", "service"):  # top-level names of the image's /app, not of deeplops
        sys.modules.pop(name, None)


def run(program: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a program of sandbox/ with the environment of a service ``api`` plus ``env``."""
    full = {**os.environ, "DEEPLOPS_SERVICE": "api", "DEEPLOPS_PORT": "1", **env}
    return subprocess.run([sys.executable, str(SANDBOX / program), *args], env=full, capture_output=True,
                          text=True, timeout=10)  # fmt: skip


# -- bad configuration: one line, exit 2, before anything starts ----------------------------------


@pytest.mark.parametrize(
    ("program", "variable", "value"),
    [
        ("app.py", "DEEPLOPS_POSTGRES", "db"),
        ("app.py", "DEEPLOPS_REDIS", "cache:0"),
        ("app.py", "DEEPLOPS_DB_WAIT_S", "-1"),
        ("app.py", "DEEPLOPS_TIMEOUT", "soon"),
        ("worker.py", "DEEPLOPS_REDIS", "queue:six"),
        ("worker.py", "DEEPLOPS_POSTGRES", ":5432"),
    ],
)
def test_a_kinds_program_with_bad_configuration_exits_2_with_one_line(program: str, variable: str, value: str) -> None:
    done = run(program, **{variable: value})
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith(f"{program}: bad configuration:")
    assert variable in done.stderr


@pytest.mark.parametrize("args", [(), ("mysql",), ("postgres", "redis")])
def test_the_launcher_refuses_a_kind_it_does_not_run_in_one_line(args: tuple[str, ...]) -> None:
    done = run("launcher.py", *args)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1
    assert "nginx or postgres or redis" in done.stderr


@pytest.mark.parametrize("depends", ["", "app:8080,api2:8080"])
def test_nginx_needs_exactly_one_upstream(depends: str) -> None:
    done = run("launcher.py", "nginx", DEEPLOPS_DEPENDS=depends)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1
    assert "exactly one upstream" in done.stderr


@pytest.mark.parametrize("kind", ["postgres", "redis", "nginx"])
def test_the_launcher_checks_the_services_configuration_too(kind: str) -> None:
    done = run("launcher.py", kind, DEEPLOPS_DEPENDS="app:8080", DEEPLOPS_TIMEOUT="-1")
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1
    assert "DEEPLOPS_TIMEOUT" in done.stderr


def serving_app(**env: str) -> tuple[subprocess.Popen[str], int]:
    """``app.py`` with only HTTP dependencies (none), on a free port, once it has answered a
    ``/work`` (it fails the test if it never does within 5 s); its stderr piped."""
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    environment = {**os.environ, "DEEPLOPS_SERVICE": "api", "DEEPLOPS_HOST": "127.0.0.1", "DEEPLOPS_PORT": str(port),
                   **env}  # fmt: skip
    proc = subprocess.Popen([sys.executable, str(SANDBOX / "app.py")], env=environment, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    deadline = time.monotonic() + 5
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/work", timeout=1) as resp:
                assert resp.status == 200
                return proc, port
        except OSError:
            if time.monotonic() >= deadline:
                proc.kill()
                proc.wait()
                raise AssertionError("the app never answered") from None
            time.sleep(0.05)


def test_an_app_with_only_http_dependencies_serves_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    """No database to wait for: it listens at once (the client libraries are not needed here)."""
    proc, _ = serving_app()
    try:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=3) == 0
    finally:
        proc.kill()
        proc.wait()


# -- nginx's configuration ---------------------------------------------------------------------


def test_nginx_proxies_work_ping_and_health_to_its_upstream_with_the_timeouts_given(launcher: ModuleType) -> None:
    text = launcher.nginx_config("gateway", 8080, ("app", 8080), 0.5, "127.0.0.11")
    assert "daemon off;" in text and "listen 8080" in text
    assert "set $upstream app:8080;" in text
    routes = dict(re.findall(r"location = (/\w+) \{ proxy_pass http://\$upstream(/\w+);", text))
    assert routes == {"/work": "/work", "/ping": "/ping", "/health": "/ping"}  # health: the upstream's ping
    assert "proxy_connect_timeout 500ms;" in text and "proxy_read_timeout 500ms;" in text
    assert "proxy_read_timeout 1000ms;" in text  # /work: twice, as service.py gives a chain below it
    assert "resolver 127.0.0.11 valid=1s" in text  # a recreated upstream's new address is found


def test_nginx_answers_its_own_failures_as_json(launcher: ModuleType) -> None:
    import json

    text = launcher.nginx_config("edge", 9000, ("api", 8080), 0.25, "10.0.0.2")
    assert "error_page 502 503 504 @failed;" in text
    body = re.search(r"location @failed \{ return 503 '(.*)'; \}", text)
    assert body is not None
    assert json.loads(body.group(1)) == {"ok": False, "service": "edge", "failed": ["upstream api:8080: no answer"]}
    assert "proxy_connect_timeout 250ms;" in text and "listen 9000" in text


def test_nginx_resolves_through_the_containers_name_server(launcher: ModuleType, tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("# Docker\nsearch x\nnameserver 127.0.0.11\nnameserver 8.8.8.8\n")
    assert launcher.resolver(str(conf)) == "127.0.0.11"
    assert launcher.resolver(str(tmp_path / "missing")) == "127.0.0.11"


# -- how the Docker backend starts each kind ---------------------------------------------------------


def test_every_kind_has_a_program_the_image_carries() -> None:
    assert set(stack.PROGRAMS) == set(KINDS)
    for command in stack.PROGRAMS.values():
        scripts = [word.removeprefix("/app/") for word in command if word.startswith("/app/")]
        assert scripts and all(script in image.PROGRAMS for script in scripts)
    assert all((SANDBOX / name).is_file() for name in image.PROGRAMS)


def test_the_service_image_is_rebuilt_when_any_program_it_carries_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    before = image.service_tag()
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: real(self) + (b"#" if self.name == "worker.py" else b""))
    assert image.service_tag() != before


def test_the_base_is_tagged_by_what_it_holds() -> None:
    assert re.fullmatch(r"deeplops/base:bookworm-[0-9a-f]{12}", image.BASE_IMAGE)
    assert {"postgresql-15", "redis-server", "nginx-light", "python3-psycopg2", "python3-redis"} <= set(image.PACKAGES)


def environments(env: str) -> dict[str, dict[str, str]]:
    topology = load_topology(env)
    kinds = dict(zip(topology.names, topology.kinds, strict=True))
    return {s.name: stack.environment(s, kinds) for s in topology.services}


def test_the_app_and_the_worker_reach_postgres_and_redis_with_their_own_clients() -> None:
    env = environments("store")
    assert (env["app"]["DEEPLOPS_POSTGRES"], env["app"]["DEEPLOPS_REDIS"]) == ("db:5432", "cache:6379,queue:6379")
    assert env["app"]["DEEPLOPS_DEPENDS"] == ""
    assert (env["worker"]["DEEPLOPS_POSTGRES"], env["worker"]["DEEPLOPS_REDIS"]) == ("db:5432", "queue:6379")
    assert env["gateway"]["DEEPLOPS_DEPENDS"] == "app:8080"
    assert env["db"]["DEEPLOPS_DATA"] == "/data" and "DEEPLOPS_RESTORE_PLAN" in env["db"]
    assert env["cache"]["DEEPLOPS_DATA"] == "" and "DEEPLOPS_RESTORE_PLAN" not in env["cache"]


def test_a_generic_service_calls_every_dependency_over_http_whatever_its_kind() -> None:
    env = environments("payments")
    assert env["fraud"]["DEEPLOPS_DEPENDS"] == "sessions:8080"
    assert "DEEPLOPS_REDIS" not in env["fraud"]
    assert env["api"]["DEEPLOPS_DEPENDS"] == "fraud:8080"
    assert env["api"]["DEEPLOPS_POSTGRES"] == "ledger:5432"


@pytest.mark.parametrize(
    ("command", "name"),
    [
        ("python3 -u /app/launcher.py postgres", "launcher.py"),
        ("/usr/lib/postgresql/15/bin/postgres -D /data/pgdata", "postgres"),
        ("postgres: checkpointer", "postgres"),
        ("postgres: postgres postgres 172.18.0.5(53178) idle", "postgres"),
        ("redis-server 0.0.0.0:6379", "redis-server"),
        ("nginx: master process nginx -c /etc/nginx/deeplops.conf", "nginx"),
        ("nginx: worker process", "nginx"),
        ("python3 -c import os", "python3"),
        ("", "?"),
    ],
)
def test_a_process_is_named_by_the_program_it_runs(command: str, name: str) -> None:
    assert stack.program_name(command) == name


def test_a_containers_programs_are_named_once_each_in_order() -> None:
    class Listing:
        def top(self) -> dict[str, object]:
            rows = ["python3 -u /app/launcher.py postgres", "/usr/lib/postgresql/15/bin/postgres -D /data/pgdata",
                    "postgres: checkpointer", "postgres: walwriter"]  # fmt: skip
            return {"Titles": ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"],
                    "Processes": [["root", "1", "0", "0", "07:00", "?", "0:00", row] for row in rows]}  # fmt: skip

    assert stack.processes(Listing()) == ("launcher.py", "postgres")  # type: ignore[arg-type]


def test_each_service_is_started_with_its_kinds_program_and_its_dependencies_kinds() -> None:
    from types import SimpleNamespace
    from typing import Any

    asked: dict[str, dict[str, Any]] = {}

    def run(image: str, **kwargs: Any) -> None:
        asked[kwargs["name"]] = kwargs

    client = SimpleNamespace(containers=SimpleNamespace(run=run),
                             api=SimpleNamespace(create_endpoint_config=lambda **kwargs: kwargs))  # fmt: skip
    topology = load_topology("store")
    for service in topology.services:
        if not service.disk_mb:  # a volume would be mounted on the host: not here
            stack.start_service(client, "box", service, "image", topology=topology)  # type: ignore[arg-type]
    assert asked["box-gateway"]["command"] == ["python3", "-u", "/app/launcher.py", "nginx"]
    assert asked["box-cache"]["command"][-1] == "redis"
    assert asked["box-app"]["command"][-1] == "/app/app.py"
    assert asked["box-worker"]["environment"]["DEEPLOPS_REDIS"] == "queue:6379"


# -- connection pools and a client's connection leak (sandbox/clients.py), with fake connections ----------


@pytest.fixture
def clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """sandbox/clients.py as a module (it imports service.py beside it)."""
    monkeypatch.syspath_prepend(str(SANDBOX))
    import clients as module

    yield module
    for name in ("clients", "service"):  # top-level names of the image's /app, not of deeplops
        sys.modules.pop(name, None)


class FakeConnection:
    """A psycopg2 connection as far as the pool and the leak use one: its server end is a socket of
    a pair, which the "server" closes (``hang_up``) as PostgreSQL ends its connections when it stops."""

    def __init__(self) -> None:
        import socket

        self.mine, self.servers = socket.socketpair()
        self.closed = 0
        self.autocommit = False
        self.ran: list[str] = []

    def fileno(self) -> int:
        return self.mine.fileno()

    def cursor(self) -> FakeConnection:
        return self

    def __enter__(self) -> FakeConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def execute(self, sql: str, args: tuple[object, ...]) -> None:
        self.ran.append(sql)

    description = None

    def poll(self) -> int:
        """What libpq does with a readable idle connection: reads what came, and fails at the end."""
        import socket

        if self.mine.recv(1024, socket.MSG_DONTWAIT) == b"":
            self.closed = 2
            raise OSError("server closed the connection unexpectedly")
        return 0

    def close(self) -> None:
        self.closed = 1
        self.mine.close()

    def hang_up(self, goodbye: bytes = b"") -> None:
        if goodbye:
            self.servers.sendall(goodbye)
        self.servers.close()


def fake_server(db: object, refuse: list[bool] | None = None) -> list[FakeConnection]:
    """Make ``db`` (a clients.Postgres) connect to a fake server; the connections it made, in order.
    While ``refuse[0]`` is true, connecting fails as a full PostgreSQL refuses."""
    made: list[FakeConnection] = []

    def connect() -> FakeConnection:
        if refuse and refuse[0]:
            raise OSError("FATAL:  remaining connection slots are reserved for non-replication superuser connections")
        made.append(FakeConnection())
        return made[-1]

    db.connect = connect  # type: ignore[attr-defined]
    return made


def test_a_clients_pool_recycles_a_connection_past_its_age_and_the_launchers_keeps_its_own(
    clients: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    now = [100.0]
    # The module's clock only; the housekeeper sleeps long, so what is swept here is swept by hand.
    monkeypatch.setattr(clients, "time", SimpleNamespace(monotonic=lambda: now[0], sleep=lambda s: time.sleep(3600)))
    db = clients.Postgres("db", 5432, 0.5)
    made = fake_server(db)
    assert (db.user, db.max_age_s) == (clients.CLIENT_ROLE, clients.MAX_AGE_S) and clients.CLIENT_ROLE != "postgres"
    db.query("SELECT 1")
    now[0] += clients.MAX_AGE_S / 2
    db.query("SELECT 1")  # young enough: the same connection again
    assert len(made) == 1 and made[0].ran == ["SELECT 1", "SELECT 1"] and db.connections() == (1, 4)
    now[0] += clients.MAX_AGE_S / 2
    db.query("SELECT 1")  # past its age: closed, and a new one opened
    assert len(made) == 2 and made[0].closed and not made[1].closed and db.connections() == (1, 4)
    now[0] += clients.MAX_AGE_S
    assert db.connections() == (0, 4) and made[1].closed  # idle past its age: closed by the housekeeping

    # One taken young and handed back past its age (a long query) is closed as it comes back.
    def run_long(sql: str, args: tuple[object, ...]) -> None:
        now[0] += clients.MAX_AGE_S

    slow = FakeConnection()
    slow.execute = run_long  # type: ignore[method-assign]
    db.connect = lambda: slow  # type: ignore[method-assign]
    db.query("SELECT pg_sleep(1)")
    assert slow.closed and db.connections() == (0, 4)

    # The launcher's checks and counters keep their connections (and connect as the superuser).
    monitor = clients.Postgres("127.0.0.1", 5432, 0.5, user=clients.SUPERUSER, max_age_s=None)
    held = fake_server(monitor)
    for _ in range(3):
        monitor.query("SELECT 1")
        now[0] += 10 * clients.MAX_AGE_S
    assert len(held) == 1 and not held[0].closed and monitor.connections() == (1, 4)


def test_a_pools_housekeeper_closes_idle_connections_past_their_age(clients: ModuleType) -> None:
    db = clients.Postgres("db", 5432, 0.5, max_age_s=0.2)
    made = fake_server(db)
    db.query("SELECT 1")
    assert db.connections() == (1, 4)
    deadline = time.monotonic() + 2.0
    # The housekeeper closes the connection, then counts it: wait for both (a busy host can hold it between).
    while not (made[0].closed and db.open == 0) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert made[0].closed and db.open == 0  # nobody used the pool meanwhile


def test_a_failed_query_drops_its_connection(clients: ModuleType) -> None:
    db = clients.Postgres("db", 5432, 0.5)
    made = fake_server(db)

    def fail(sql: str, args: tuple[object, ...]) -> None:
        raise OSError("server closed the connection unexpectedly")

    db.query("SELECT 1")
    made[0].execute = fail  # type: ignore[method-assign]
    assert db.attempt("SELECT 1") == "postgres db:5432: server closed the connection unexpectedly"
    assert made[0].closed and db.connections() == (0, 4)


def test_a_connection_leak_holds_every_connection_it_opens_at_its_rate(clients: ModuleType) -> None:
    import threading

    db = clients.Postgres("db", 5432, 0.5)
    made = fake_server(db)
    leak = clients.ConnectionLeak(db, per_s=20.0)
    done = threading.Event()
    start = time.monotonic()
    assert leak.start(done) and not leak.start(done)  # once: a second signal changes nothing
    time.sleep(0.5)
    held, elapsed = leak.connections()[0], time.monotonic() - start
    assert 6 <= held <= 20 * elapsed + 1 and leak.connections()[1] == 0  # its rate, and no limit of its own
    assert all(not conn.closed for conn in made)  # never closed
    done.set()
    time.sleep(0.1)
    assert leak.connections()[0] == len(made)
    # The program counts them with its pools: beyond their sizes.
    assert clients.pooled([db, leak]) == (len(made), 4)


def test_a_connection_leak_retries_at_its_rate_while_refused_and_drops_what_the_server_closed(
    clients: ModuleType,
) -> None:
    db = clients.Postgres("db", 5432, 0.5)
    refuse = [False]
    made = fake_server(db, refuse)
    leak = clients.ConnectionLeak(db, per_s=10.0)
    for _ in range(4):
        assert leak.attempt() is None
    refuse[0] = True  # the server is full: nothing more is held, every attempt counted
    assert "remaining connection slots are reserved" in (leak.attempt() or "")
    assert leak.connections()[0] == 4 and leak.failed == 1
    # The server restarts: it says goodbye on one, and just closes another; the rest stay idle.
    made[0].hang_up(b"E FATAL: terminating connection due to administrator command")
    made[1].hang_up()
    dropped = leak.drop_closed()
    dropped += leak.drop_closed()  # the goodbye is read first, then the end of the stream
    assert dropped == 2 and leak.connections()[0] == 2 and made[0].closed and made[1].closed
    assert leak.drop_closed() == 0 and leak.connections()[0] == 2


def test_a_connection_leak_without_a_rate_does_not_start_and_says_why(
    clients: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    import threading

    leak = clients.ConnectionLeak(clients.Postgres("db", 5432, 0.5), per_s=0.0)
    leak.set_off(threading.Event(), "app.py")
    assert not leak.started
    assert capsys.readouterr().err == "app.py: cannot leak connections: DEEPLOPS_CONN_LEAK_PER_S is not set\n"


def test_a_program_reads_the_connection_leaks_rate_and_refuses_a_bad_one_in_one_line(clients: ModuleType) -> None:
    import service

    load = service.load_config
    assert load({"DEEPLOPS_SERVICE": "a"}).conn_leak_per_s == 0.0
    assert load({"DEEPLOPS_SERVICE": "a", "DEEPLOPS_CONN_LEAK_PER_S": "3.0"}).conn_leak_per_s == 3.0
    for value in ("0", "-3", "inf", "nan", "x", ""):
        with pytest.raises(service.ConfigError, match="DEEPLOPS_CONN_LEAK_PER_S must be a positive number") as err:
            load({"DEEPLOPS_SERVICE": "a", "DEEPLOPS_CONN_LEAK_PER_S": value})
        assert "\n" not in str(err.value)


def test_every_service_is_told_the_connection_leaks_rate_and_its_postgres_servers_in_slot_order() -> None:
    from deeplops.system import CONN_LEAK_PER_TICK, TICK_S
    from deeplops.topology import topology_from_dict

    for env in environments("store").values():
        assert float(env["DEEPLOPS_CONN_LEAK_PER_S"]) == CONN_LEAK_PER_TICK / TICK_S
    doc = {"name": "two-dbs", "services": {
        "api": {"kind": "app", "depends_on": ["cache", "orders", "ledger"], "entry": True},
        "ledger": {"kind": "postgres", "disk_mb": 64}, "orders": {"kind": "postgres", "disk_mb": 64},
        "cache": {"kind": "redis"}}}  # fmt: skip
    topology = topology_from_dict(doc)
    kinds = dict(zip(topology.names, topology.kinds, strict=True))
    told = stack.environment(topology.services[topology.index["api"]], kinds)
    first = told["DEEPLOPS_POSTGRES"].split(",")[0].split(":")[0]
    assert topology.index[first] == topology.leaks_at[topology.index["api"]]
    assert sorted(told["DEEPLOPS_POSTGRES"].split(",")) == ["ledger:5432", "orders:5432"]


def test_the_connection_leaks_signal_is_the_one_the_sandbox_sends_and_leaves_a_program_without_a_database_serving(
    tmp_path: Path,
) -> None:
    import urllib.request

    from deeplops.dockerbox import mechanisms

    sys.path.insert(0, str(SANDBOX))
    try:
        import clients as program_clients
        import service
    finally:
        sys.path.remove(str(SANDBOX))
        for name in ("clients", "service"):
            sys.modules.pop(name, None)
    assert service.CONN_LEAK_SIGNAL == mechanisms.CONN_LEAK_SIGNAL
    assert program_clients.POOL_SIZE == mechanisms.CLIENT_POOL_SIZE
    proc, port = serving_app(DEEPLOPS_CONN_LEAK_PER_S="3.0")
    try:
        proc.send_signal(mechanisms.CONN_LEAK_SIGNAL)  # handled: not the signal's default, an exit
        time.sleep(0.3)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/work", timeout=1) as resp:
            assert resp.status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=3) == 0
        assert proc.stderr is not None
        assert proc.stderr.read() == "app.py: SIGUSR2: no PostgreSQL server to leak connections to\n"
    finally:
        proc.kill()
        proc.wait()
