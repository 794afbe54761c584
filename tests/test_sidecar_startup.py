"""What the sidecar checks and takes before it acts, without Docker: bounds on every option, the
project's name and lock, the audit log's mode, links and rotation, where /metrics listens, and
the rule that holds decisions while readings settle."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest

from deeplops.errors import ConfigError, SandboxError
from deeplops.sidecar.daemon import unsettled
from deeplops.sidecar.lock import LOCK_DIR, ProjectLock, check_project
from deeplops.sidecar.telemetry import Audit, Metrics, Server, check_address, read_audit, rotated

PROJECT = f"dlopts-{os.getpid()}"


# -- options: every bound checked before any work -------------------------------------------

SIDECAR_BOUNDS = [
    (("--interval", "inf"), "--interval", "[0.1, 3600]", "inf"),
    (("--interval", "nan"), "--interval", "[0.1, 3600]", "nan"),
    (("--interval", "0"), "--interval", "[0.1, 3600]", "0.0"),
    (("--interval", "3601"), "--interval", "[0.1, 3600]", "3601.0"),
    (("--verify", "nan"), "--verify", "[0.1, 86400]", "nan"),
    (("--verify", "inf"), "--verify", "[0.1, 86400]", "inf"),
    (("--verify", "-1"), "--verify", "[0.1, 86400]", "-1.0"),
    (("--cooldown", "-1"), "--cooldown", "[0, 86400]", "-1.0"),
    (("--cooldown", "inf"), "--cooldown", "[0, 86400]", "inf"),
    (("--cooldown", "nan"), "--cooldown", "[0, 86400]", "nan"),
    (("--metrics-port", "-1"), "--metrics-port", "[0, 65535]", "-1"),
    (("--metrics-port", "65536"), "--metrics-port", "[0, 65535]", "65536"),
    (("--max-actions-per-minute", "0"), "--max-actions-per-minute", "[1, 600]", "0"),
    (("--max-actions-per-minute", "601"), "--max-actions-per-minute", "[1, 600]", "601"),
    (("--breaker", "0"), "--breaker", "[1, 1000]", "0"),
    (("--breaker", "99999999999999999999"), "--breaker", "[1, 1000]", "99999999999999999999"),
    (("--metrics-address", "localhost"), "--metrics-address", "an IP address", "'localhost'"),
    (("--metrics-address", "1.2.3"), "--metrics-address", "an IP address", "'1.2.3'"),
    (("--audit-max-mb", "0"), "--audit-max-mb", "[0.01, 1e+06]", "0.0"),
    (("--audit-max-mb", "nan"), "--audit-max-mb", "[0.01, 1e+06]", "nan"),
    (("--audit-keep", "0"), "--audit-keep", "[1, 100]", "0"),
]


@pytest.mark.parametrize(("args", "option", "expected", "given"), SIDECAR_BOUNDS)
def test_a_sidecar_option_out_of_bounds_is_one_line_and_exit_2_before_any_work(
    cli, tmp_path, args, option, expected, given
):
    audit = tmp_path / "audit.jsonl"
    result = cli("sidecar", "--policy", "runbook", "--project", PROJECT, "--audit-log", str(audit), *args)
    assert result.code == 2, result
    assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err, result.err
    line = result.err.strip()
    assert line.startswith("deeplops: error: ") and option in line and expected in line, line
    assert line.endswith(f"got {given}"), line
    assert not audit.exists() and not (LOCK_DIR / f"sidecar-{PROJECT}.lock").exists()


@pytest.mark.parametrize("project", ["../etc", ".hidden", "Shop", "", "a" * 64, "a/b", "a b", "-rf", "x\ny"])
def test_a_project_that_is_not_a_safe_file_name_is_refused(cli, tmp_path, project):
    audit = tmp_path / "audit.jsonl"
    result = cli("sidecar", "--policy", "runbook", "--project", project, "--audit-log", str(audit))
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1, result.err
    assert "--project must be 1 to 63 lower-case letters" in result.err and not audit.exists()


def test_safe_project_names_are_accepted():
    for name in ("shop", "dllive-123", "a", "my_stack.v2", "0day", "a" * 63):
        assert check_project(name) == name


def no_containers_of(*names: str) -> bool:
    """No container of sandbox ``names`` exists (trivially true where there is no engine)."""
    try:
        from deeplops.dockerbox import stack

        client = stack.connect()
    except Exception:
        return True
    return not any(
        client.containers.list(all=True, ignore_removed=True, filters={"label": f"deeplops.sandbox={n}"}) for n in names
    )


BENCH_BOUNDS = [
    (("bench", "sidecar", "--policy", "runbook", "--cap", "inf"), "--cap", "(0, 3600]", "inf"),
    (("bench", "sidecar", "--policy", "runbook", "--cap", "nan"), "--cap", "(0, 3600]", "nan"),
    (("bench", "sidecar", "--policy", "runbook", "--cap", "0"), "--cap", "(0, 3600]", "0.0"),
    (("bench", "sidecar", "--policy", "runbook", "--cap", "3601"), "--cap", "(0, 3600]", "3601.0"),
    (("bench", "soak", "--minutes", "nan"), "--minutes", "(0, 1440]", "nan"),
    (("bench", "soak", "--minutes", "inf"), "--minutes", "(0, 1440]", "inf"),
    (("bench", "soak", "--minutes", "0"), "--minutes", "(0, 1440]", "0.0"),
    (("bench", "soak", "--gap", "0,5"), "--gap MIN", "(0, 3600]", "0.0"),
    (("bench", "soak", "--gap", "nan,5"), "--gap MIN", "(0, 3600]", "nan"),
    (("bench", "soak", "--gap", "5,inf"), "--gap MAX", "[5, 3600]", "inf"),
    (("bench", "soak", "--gap", "30,10"), "--gap MAX", "[30, 3600]", "10.0"),
    (("bench", "soak", "--gap", "1,2,3"), "--gap", "MIN,MAX", "'1,2,3'"),
    (("bench", "soak", "--seed", "-1"), "--seed", "[0, 4294967295]", "-1"),
    (("bench", "soak", "--seed", "4294967296"), "--seed", "[0, 4294967295]", "4294967296"),
]


@pytest.mark.parametrize(("args", "option", "expected", "given"), BENCH_BOUNDS)
def test_a_bench_option_out_of_bounds_is_one_line_and_exit_2_before_any_container(cli, args, option, expected, given):
    result = cli(*args)
    assert result.code == 2, result
    line = result.err.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line, result.err
    assert option in line and expected in line and line.endswith(f"got {given}"), line
    assert no_containers_of(f"dlbench-{os.getpid()}", f"dlsoak-{os.getpid()}")


# -- one project, one sidecar --------------------------------------------------------------


def test_a_second_lock_on_a_project_is_refused_naming_the_project_and_its_holder(tmp_path):
    held = ProjectLock("shop", tmp_path)
    try:
        with pytest.raises(SandboxError, match=rf"project 'shop' already has a sidecar \(held by pid {os.getpid()} "):
            ProjectLock("shop", tmp_path)
        ProjectLock("other", tmp_path).release()  # per project
    finally:
        held.release()
    assert not (tmp_path / "sidecar-shop.lock").exists()  # released: gone, and free again
    ProjectLock("shop", tmp_path).release()


def test_the_lock_is_released_when_its_holder_is_killed(tmp_path):
    code = (
        "import sys, time\nfrom pathlib import Path\nfrom deeplops.sidecar.lock import ProjectLock\n"
        f"lock = ProjectLock('shop', Path({str(tmp_path)!r}))\nprint('held', flush=True)\ntime.sleep(600)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(SandboxError, match=f"held by pid {holder.pid} "):
            ProjectLock("shop", tmp_path)
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        ProjectLock("shop", tmp_path).release()  # the kernel let go of it with the process
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_a_lock_file_that_is_a_symlink_is_not_followed(tmp_path):
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    (tmp_path / "sidecar-shop.lock").symlink_to(target)
    with pytest.raises(SandboxError, match="cannot take it"):
        ProjectLock("shop", tmp_path)
    assert target.read_text() == "keep me\n"


# -- the audit log -------------------------------------------------------------------------


def test_the_audit_log_is_created_private_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        audit = Audit(tmp_path / "audit.jsonl")
    finally:
        os.umask(old)
    audit.write({"event": "x"})
    audit.close()
    assert stat.S_IMODE((tmp_path / "audit.jsonl").stat().st_mode) == 0o600


def test_an_older_audit_log_of_ours_is_made_private(tmp_path):
    path = tmp_path / "audit.jsonl"
    path.write_text('{"event": "old"}\n')
    path.chmod(0o644)
    Audit(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == '{"event": "old"}\n'


def test_an_audit_log_that_is_a_symlink_is_refused_and_its_target_untouched(tmp_path):
    target = tmp_path / "shadow"
    target.write_text("root:x:0:0\n")
    (tmp_path / "audit.jsonl").symlink_to(target)
    with pytest.raises(ConfigError, match="symbolic link"):
        Audit(tmp_path / "audit.jsonl")
    assert target.read_text() == "root:x:0:0\n"


def test_an_audit_log_that_is_not_a_regular_file_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "audit.jsonl")  # opening a FIFO to write would wait for a reader
    with pytest.raises(ConfigError, match="regular file"):
        Audit(tmp_path / "audit.jsonl")


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")
def test_an_audit_log_owned_by_another_user_is_refused(tmp_path):
    path = tmp_path / "audit.jsonl"
    path.write_text("")
    os.chown(path, 65534, 65534)
    with pytest.raises(ConfigError, match="owned by uid 65534"):
        Audit(path)


def test_the_audit_log_rotates_between_whole_lines_keeping_a_few_files(tmp_path):
    path = tmp_path / "audit.jsonl"
    audit = Audit(path, max_bytes=1000, keep=3)
    for i in range(100):
        audit.write({"event": "decision", "tick": i + 1, "pad": "x" * 60})
    audit.close()
    files = [path, *(rotated(path, n) for n in (1, 2, 3))]
    assert all(f.exists() for f in files) and not rotated(path, 4).exists()
    for f in files:
        assert f.stat().st_size <= 1000 and stat.S_IMODE(f.stat().st_mode) == 0o600
        assert all(json.loads(line)["event"] == "decision" for line in f.read_text().splitlines())
    ticks = [r["tick"] for r in read_audit(path)]
    assert ticks == list(range(ticks[0], 101)) and ticks[0] > 1  # in order; the oldest dropped
    assert audit.rotations > 3


def test_an_audit_log_that_can_no_longer_be_written_is_a_one_line_error(tmp_path):
    audit = Audit(tmp_path / "audit.jsonl")
    os.close(audit._fd)
    audit._fd = os.open(tmp_path / "audit.jsonl", os.O_RDONLY)  # as if its disk had gone
    with pytest.raises(ConfigError, match=r"--audit-log .*audit.jsonl: cannot write \(Bad file descriptor\)$"):
        audit.write({"event": "decision"})
    audit.close()


def test_read_audit_reads_a_log_that_never_rotated_and_one_not_there(tmp_path):
    path = tmp_path / "audit.jsonl"
    assert read_audit(path) == []
    path.write_text('{"event": "a"}\n{"event": "b"}\n{"event": "c", "cut sh')  # a write cut short by a kill
    assert [r["event"] for r in read_audit(path)] == ["a", "b"]


# -- where /metrics listens ----------------------------------------------------------------


def non_loopback_address() -> str | None:
    import psutil

    for addresses in psutil.net_if_addrs().values():
        for a in addresses:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                return str(a.address)
    return None


def status(address: str, port: int) -> int | str:
    host = f"[{address}]" if ":" in address else address
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=3) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError as exc:
        return type(getattr(exc, "reason", exc)).__name__


def test_metrics_listen_on_loopback_only_unless_told():
    other = non_loopback_address()
    if other is None:
        pytest.skip("this host has no address but loopback")
    alive = threading.Event()
    alive.set()
    server = Server(Metrics(), 0, alive)
    try:
        assert status("127.0.0.1", server.port) == 200
        assert status(other, server.port) == "ConnectionRefusedError"
    finally:
        server.close()
    server = Server(Metrics(), 0, alive, "0.0.0.0")
    try:
        assert status(other, server.port) == 200
    finally:
        server.close()


def test_metrics_may_listen_on_an_ipv6_address():
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    alive = threading.Event()
    try:
        server = Server(Metrics(), 0, alive, "::1")
    except ConfigError:
        pytest.skip("no IPv6 loopback here")
    try:
        assert status("::1", server.port) == 503  # the loop is not running
    finally:
        server.close()


@pytest.mark.parametrize("address", ["localhost", "0.0.0.0:9464", "", "256.1.1.1"])
def test_a_metrics_address_must_be_an_ip_address(address):
    with pytest.raises(ConfigError, match="--metrics-address must be an IP address"):
        check_address(address)


# -- no decision on an unsettled reading ---------------------------------------------------


def test_the_first_reading_since_attaching_is_never_decided_on():
    assert unsettled(None, 1.0) is not None and "first reading" in unsettled(None, 1.0)  # type: ignore[operator]


def test_a_reading_whose_rates_span_a_sliver_of_the_interval_is_not_decided_on():
    assert unsettled(0.02, 1.0) is not None
    assert unsettled(0.5, 1.0) is not None
    assert unsettled(0.5, 0.5) is None


def test_a_reading_over_a_full_interval_is_decided_on_despite_scheduling_jitter():
    assert unsettled(1.0, 1.0) is None
    assert unsettled(0.95, 1.0) is None
    assert unsettled(30.0, 1.0) is None  # a late tick (back-off, a slow engine): rates over more time
