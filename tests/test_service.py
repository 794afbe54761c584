"""The sandbox microservice, run as real processes on 127.0.0.1 and spoken to over HTTP."""

from __future__ import annotations

import ast
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parents[1] / "sandbox" / "service.py"
INTERVAL = 0.2  # health interval used by every test service: short, so propagation is quick to see
TIMEOUT = 0.3  # dependency timeout used by every test service


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(port: int, path: str, timeout: float = 5.0) -> tuple[int | None, dict]:
    """Status and JSON body of GET path; (None, {}) when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except (urllib.error.URLError, OSError):
        return None, {}


def wait_for(predicate: Callable[[], bool], within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@dataclass
class ServiceProcess:
    """One running service process."""

    proc: subprocess.Popen
    port: int

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a SIGSTOPped process would never act on SIGTERM
            self.proc.terminate()
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


Spawn = Callable[..., ServiceProcess]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start service processes; every one is stopped at teardown, whatever the test did."""
    started: list[ServiceProcess] = []

    def start(
        name: str,
        depends: Sequence[ServiceProcess] = (),
        data: Path | None = None,
        port: int | None = None,
        timeout: float = TIMEOUT,
        extra: dict[str, str] | None = None,
        wait: bool = True,
    ) -> ServiceProcess:
        port = port or free_port()
        env = {
            **os.environ,
            "DEEPLOPS_SERVICE": name,
            "DEEPLOPS_HOST": "127.0.0.1",
            "DEEPLOPS_PORT": str(port),
            "DEEPLOPS_DEPENDS": ",".join(dep.addr for dep in depends),
            "DEEPLOPS_DATA": str(data or ""),
            "DEEPLOPS_TIMEOUT": str(timeout),
            "DEEPLOPS_HEALTH_INTERVAL": str(INTERVAL),
            **(extra or {}),
        }
        svc = ServiceProcess(subprocess.Popen([sys.executable, str(SERVICE)], env=env), port)
        started.append(svc)
        assert not wait or wait_for(lambda: get(port, "/stats")[0] == 200, within=5.0), f"{name} never answered /stats"
        return svc

    yield start
    for svc in started:
        svc.stop()


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, so filling it gives a real ENOSPC; unmounted at teardown."""
    if os.geteuid() != 0:
        pytest.skip("a real ENOSPC needs a tmpfs mount, which needs root")
    mount = tmp_path / "data"
    mount.mkdir()
    command = ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    if subprocess.run(["umount", str(mount)]).returncode != 0:
        subprocess.run(["umount", "-l", str(mount)])


def fill(directory: Path) -> Path:
    """Write junk until ENOSPC; twice, in case the service's 4 KiB probe held some space the first time."""
    junk = directory / "junk"
    for _ in range(2):
        with open(junk, "ab", buffering=0) as f:  # unbuffered: close must not retry a failed write
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        time.sleep(0.05)
    return junk


def test_health_passes_for_a_leaf_with_a_data_dir(spawn: Spawn, tmp_path: Path) -> None:
    leaf = spawn("db", data=tmp_path)
    assert wait_for(lambda: get(leaf.port, "/ping")[0] == 200, within=2.0)
    status, body = get(leaf.port, "/health")
    assert (status, body["ok"]) == (200, True)
    assert list(tmp_path.iterdir()) == []  # the write probe cleans up after itself


def test_dependent_fails_while_its_dependency_is_down_and_recovers(spawn: Spawn) -> None:
    cache = spawn("cache")
    api = spawn("api", depends=[cache])
    assert wait_for(lambda: get(api.port, "/ping")[0] == 200, within=2.0)

    cache.stop()
    assert wait_for(lambda: get(api.port, "/ping")[0] == 503, within=3 * INTERVAL)  # the background check saw it
    status, body = get(api.port, "/health")
    assert status == 503
    assert any(cache.addr in reason and "refused" in reason for reason in body["failed"]), body

    spawn("cache", port=cache.port)
    assert wait_for(lambda: get(api.port, "/ping")[0] == 200, within=1.0)
    assert get(api.port, "/health")[0] == 200


def test_failure_climbs_a_chain_through_cached_pings(spawn: Spawn) -> None:
    c = spawn("c")
    b = spawn("b", depends=[c])
    a = spawn("a", depends=[b])
    assert wait_for(lambda: get(a.port, "/ping")[0] == 200, within=2.0)

    c.stop()
    assert wait_for(lambda: get(b.port, "/health")[0] == 503, within=1.0)
    assert wait_for(lambda: get(a.port, "/ping")[0] == 503, within=1.0)
    status, body = get(a.port, "/health")
    assert status == 503
    assert body["failed"] == [f"{b.addr}/ping: HTTP 503"]  # a sees b's cached failure, never c itself


def test_full_disk_fails_health_and_work_until_cleaned(spawn: Spawn, tiny_disk: Path) -> None:
    db = spawn("db", data=tiny_disk)
    junk = fill(tiny_disk)

    assert wait_for(lambda: get(db.port, "/ping")[0] == 503, within=3 * INTERVAL)  # the background check saw it
    status, body = get(db.port, "/health")
    assert status == 503
    assert any("disk" in reason and "No space left" in reason for reason in body["failed"]), body
    assert get(db.port, "/work")[0] == 503

    junk.unlink()
    assert wait_for(lambda: get(db.port, "/ping")[0] == 200, within=3 * INTERVAL)
    assert get(db.port, "/health")[0] == 200
    assert get(db.port, "/work")[0] == 200


def test_frozen_dependency_fails_health_by_timeout_until_thawed(spawn: Spawn) -> None:
    db = spawn("db")
    api = spawn("api", depends=[db])
    assert wait_for(lambda: get(api.port, "/ping")[0] == 200, within=2.0)

    db.proc.send_signal(signal.SIGSTOP)
    start = time.monotonic()
    status, body = get(api.port, "/health")
    took = time.monotonic() - start
    assert status == 503
    assert any(db.addr in reason and "timed out" in reason for reason in body["failed"]), body
    assert TIMEOUT <= took < TIMEOUT + 1.0  # it waited for the timeout, and no longer than about that

    db.proc.send_signal(signal.SIGCONT)
    assert wait_for(lambda: get(api.port, "/health")[0] == 200, within=2.0)


def test_work_goes_through_a_chain_and_stats_count_requests_and_failures(spawn: Spawn, tmp_path: Path) -> None:
    c = spawn("c", data=tmp_path)
    b = spawn("b", depends=[c])
    a = spawn("a", depends=[b])
    for _ in range(3):
        assert get(a.port, "/work") == (200, {"ok": True, "service": "a"})
    assert len((tmp_path / "records.log").read_bytes().splitlines()) == 3  # each request reached the leaf

    c.stop()
    status, body = get(a.port, "/work")
    assert status == 503
    assert body["failed"] == [f"{b.addr}/work: HTTP 503"]
    for svc, name in [(a, "a"), (b, "b")]:  # every request through a reached b, and failed there too
        status, stats = get(svc.port, "/stats")
        assert status == 200
        assert isinstance(stats.pop("healthy"), bool)  # its value is racing the health loop here
        assert stats == {"service": name, "requests": 4, "failures": 1}


def test_work_rotates_records_log_so_traffic_never_fills_the_disk(spawn: Spawn, tmp_path: Path) -> None:
    db = spawn("db", data=tmp_path)
    log = tmp_path / "records.log"
    assert get(db.port, "/work")[0] == 200
    record_size = log.stat().st_size
    assert 200 <= record_size <= 300  # one ~256-byte record

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda _: get(db.port, "/work")[0], range(1200)))
    assert statuses == [200] * 1200
    assert log.stat().st_size <= 256 * 1024 + record_size  # 1201 records would be ~300 KiB without rotation
    assert all(len(line) == record_size - 1 for line in log.read_bytes().splitlines())  # no torn records


def test_sigterm_exits_zero_promptly(spawn: Spawn) -> None:
    svc = spawn("api")
    svc.proc.send_signal(signal.SIGTERM)
    assert svc.proc.wait(timeout=1.0) == 0


def test_sigterm_exits_promptly_with_a_request_stuck_on_a_frozen_dependency(spawn: Spawn) -> None:
    db = spawn("db")
    api = spawn("api", depends=[db], timeout=2.0)  # /work would wait 4 s on the frozen db
    db.proc.send_signal(signal.SIGSTOP)
    with ThreadPoolExecutor(max_workers=1) as pool:
        stuck = pool.submit(get, api.port, "/work")
        time.sleep(0.1)  # let the request reach the handler that now waits on db
        api.proc.send_signal(signal.SIGTERM)
        assert api.proc.wait(timeout=1.0) == 0
        assert stuck.result()[0] != 200


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DEEPLOPS_PORT", "abc"),
        ("DEEPLOPS_DEPENDS", "cache"),
        ("DEEPLOPS_TIMEOUT", "-1"),
        ("DEEPLOPS_START_S", "-1"),
        ("DEEPLOPS_START_S", "nan"),
    ],
)
def test_bad_configuration_exits_2_with_one_line(variable: str, value: str) -> None:
    env = {**os.environ, "DEEPLOPS_SERVICE": "api", "DEEPLOPS_PORT": str(free_port()), variable: value}
    done = subprocess.run([sys.executable, str(SERVICE)], env=env, capture_output=True, text=True, timeout=5)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1
    assert variable in done.stderr and repr(value) in done.stderr


def test_service_imports_only_the_standard_library() -> None:
    tree = ast.parse(SERVICE.read_text())
    modules = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    modules |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert {m.split(".")[0] for m in modules} <= sys.stdlib_module_names | {"__future__"}


# -- a slow start (restart_s) ---------------------------------------------------------------------


def test_a_slow_start_refuses_every_request_until_its_start_time_has_passed(spawn: Spawn) -> None:
    started = time.monotonic()
    svc = spawn("db", extra={"DEEPLOPS_START_S": "1.5"}, wait=False)
    assert get(svc.port, "/health") == (None, {})  # nothing listens yet: refused, as a booting service is
    assert get(svc.port, "/work") == (None, {})
    assert wait_for(lambda: get(svc.port, "/health")[0] == 200, within=5.0)
    assert time.monotonic() - started >= 1.3  # and not before its start time


def test_sigterm_during_a_slow_start_exits_zero_promptly(spawn: Spawn) -> None:
    svc = spawn("db", extra={"DEEPLOPS_START_S": "30"}, wait=False)
    time.sleep(0.5)
    svc.proc.send_signal(signal.SIGTERM)
    assert svc.proc.wait(timeout=1.0) == 0


# -- a restore from backup after a recreate --------------------------------------------------------

PLAN = ".restore-plan.json"


def write_plan(data: Path, size: int, seconds: float, file: str = "data.bin") -> Path:
    plan = data / PLAN
    plan.write_text(json.dumps({"file": file, "size": size, "seconds": seconds, "byte": 1}))
    return plan


def restoring(spawn: Spawn, data: Path) -> ServiceProcess:
    return spawn("db", data=data, extra={"DEEPLOPS_RESTORE_PLAN": str(data / PLAN)})


def test_a_restore_fails_health_pings_and_users_until_the_data_is_back(spawn: Spawn, tmp_path: Path) -> None:
    plan = write_plan(tmp_path, size=300_000, seconds=1.5)
    started = time.monotonic()
    db = restoring(spawn, tmp_path)
    status, body = get(db.port, "/health")
    assert status == 503 and any("restoring data.bin from backup" in reason for reason in body["failed"]), body
    assert get(db.port, "/work")[0] == 503
    assert get(db.port, "/ping")[0] == 503
    assert wait_for(lambda: get(db.port, "/health")[0] == 200, within=5.0)
    assert time.monotonic() - started >= 1.2  # at the plan's rate, not at once
    assert (tmp_path / "data.bin").read_bytes() == b"\1" * 300_000
    assert not plan.exists()  # done: a restart restores nothing more
    assert get(db.port, "/work")[0] == 200
    assert wait_for(lambda: get(db.port, "/ping")[0] == 200, within=3 * INTERVAL)


def test_a_restore_cut_short_resumes_from_what_was_restored(spawn: Spawn, tmp_path: Path) -> None:
    (tmp_path / "data.bin").write_bytes(b"\1" * 900_000)
    write_plan(tmp_path, size=1_000_000, seconds=20.0)  # 1 s for the 100 kB left, not 20 s for all
    db = restoring(spawn, tmp_path)
    assert get(db.port, "/health")[0] == 503
    assert wait_for(lambda: get(db.port, "/health")[0] == 200, within=5.0)
    assert (tmp_path / "data.bin").stat().st_size == 1_000_000


def test_a_restore_stalls_on_a_full_disk_and_finishes_once_it_is_cleaned(spawn: Spawn, tiny_disk: Path) -> None:
    plan = write_plan(tiny_disk, size=400_000, seconds=0.5)
    junk = fill(tiny_disk)
    db = restoring(spawn, tiny_disk)
    time.sleep(1.0)  # twice the restore's time
    status, body = get(db.port, "/health")
    assert status == 503 and any("stalled" in reason for reason in body["failed"]), body
    junk.unlink()
    assert wait_for(lambda: get(db.port, "/health")[0] == 200, within=5.0)
    assert (tiny_disk / "data.bin").stat().st_size == 400_000 and not plan.exists()


def test_no_restore_plan_in_the_volume_means_no_restore(spawn: Spawn, tmp_path: Path) -> None:
    db = restoring(spawn, tmp_path)
    assert wait_for(lambda: get(db.port, "/health")[0] == 200, within=2.0)
    assert not (tmp_path / "data.bin").exists()


@pytest.mark.parametrize(
    "plan",
    ["not json", '{"file": "data.bin"}', '{"file": "../x", "size": 1, "seconds": 1, "byte": 1}',
     '{"file": "data.bin", "size": -1, "seconds": 1, "byte": 1}',
     '{"file": "data.bin", "size": 1, "seconds": 1, "byte": 256}'],
)  # fmt: skip
def test_a_bad_restore_plan_exits_2_with_one_line(tmp_path: Path, plan: str) -> None:
    (tmp_path / PLAN).write_text(plan)
    env = {**os.environ, "DEEPLOPS_SERVICE": "db", "DEEPLOPS_PORT": str(free_port()), "DEEPLOPS_DATA": str(tmp_path),
           "DEEPLOPS_RESTORE_PLAN": str(tmp_path / PLAN)}  # fmt: skip
    done = subprocess.run([sys.executable, str(SERVICE)], env=env, capture_output=True, text=True, timeout=5)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1 and "DEEPLOPS_RESTORE_PLAN" in done.stderr
