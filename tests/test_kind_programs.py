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


def test_an_app_with_only_http_dependencies_serves_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    """No database to wait for: it listens at once (the client libraries are not needed here)."""
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "DEEPLOPS_SERVICE": "api", "DEEPLOPS_HOST": "127.0.0.1", "DEEPLOPS_PORT": str(port)}
    proc = subprocess.Popen([sys.executable, str(SANDBOX / "app.py")], env=env)
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/work", timeout=1) as resp:
                    assert resp.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "the app never answered"
                time.sleep(0.05)
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
