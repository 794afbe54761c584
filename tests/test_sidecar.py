"""The remediation sidecar: its guard rails (pure), and on a live sandbox (marked docker) that it
heals real faults, touches nothing in a dry run or outside its project, stops a repair storm,
serves /metrics and /healthz, and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from deeplops.errors import ConfigError
from deeplops.faults import Repair
from deeplops.sidecar.guards import GuardConfig, Guards


def guards(**settings: object) -> Guards:
    return Guards(GuardConfig(**settings))  # type: ignore[arg-type]


def test_recreate_is_not_allowed_unless_asked_for():
    assert guards().verdict("db", Repair.RECREATE, 0.0) == "not_allowed"
    assert guards(allow=(Repair.RECREATE,)).verdict("db", Repair.RECREATE, 0.0) is None


def test_the_rate_limit_counts_repairs_in_any_minute_across_services():
    g = guards(max_per_minute=2, cooldown_s=0.0)
    g.applied("db", 0.0)
    g.applied("cache", 10.0)
    assert g.verdict("queue", Repair.RESTART, 30.0) == "rate_limited"
    assert g.verdict("queue", Repair.RESTART, 60.5) is None  # the first has left the window


def test_a_service_is_left_alone_during_its_cooldown_which_doubles_while_repairs_fail():
    g = guards(cooldown_s=10.0)
    g.applied("db", 0.0)
    assert g.verdict("db", Repair.RESTART, 9.0) == "cooldown"
    assert g.verdict("cache", Repair.RESTART, 9.0) is None  # per service
    assert g.verdict("db", Repair.RESTART, 10.0) is None
    g.outcome("db", False, 10.0)
    g.applied("db", 10.0)
    assert g.verdict("db", Repair.RESTART, 29.0) == "cooldown"  # 20 s now
    assert g.verdict("db", Repair.RESTART, 30.0) is None
    g.outcome("db", True, 30.0)
    g.applied("db", 30.0)
    assert g.verdict("db", Repair.RESTART, 40.0) is None  # a repair that worked resets the back-off


def test_the_breaker_opens_after_failed_repairs_in_a_row_and_half_opens_later():
    g = guards(breaker_failures=2, breaker_reset_s=100.0, cooldown_s=0.0)
    assert g.outcome("db", False, 0.0) is False
    assert g.outcome("cache", False, 1.0) is True  # opens: alert once
    assert g.verdict("queue", Repair.RESTART, 50.0) == "circuit_open"
    assert g.verdict("queue", Repair.RESTART, 101.0) is None  # half-open: may try again
    assert g.outcome("queue", False, 102.0) is True  # and one more failure re-opens it


def test_a_success_resets_the_breakers_count():
    g = guards(breaker_failures=2)
    g.outcome("db", False, 0.0)
    g.outcome("db", True, 1.0)
    assert g.outcome("db", False, 2.0) is False


def test_bad_guard_settings_are_refused():
    with pytest.raises(ConfigError):
        GuardConfig(max_per_minute=0)


def test_the_sidecar_refuses_recreate_without_meaning_it(cli):
    result = cli("sidecar", "--policy", "runbook", "--project", "x", "--allow", "restart,recreate")
    assert result.code == 2 and "--allow-recreate" in result.err


def test_the_sidecar_refuses_the_oracle(cli):
    result = cli("sidecar", "--policy", "oracle", "--project", "x", "--metrics-port", "0")
    assert result.code == 2 and "injected faults" in result.err


# -- on a live sandbox ---------------------------------------------------------------------

PRETRAINED = str(Path(__file__).parent.parent / "agents" / "pretrained" / "order.zip")


class Running:
    """A sidecar process and its audit log."""

    def __init__(self, project: str, tmp: Path, *args: str) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.audit = tmp / "audit.jsonl"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "deeplops.cli", "sidecar", "--project", project, "--interval", "1",
             "--metrics-port", str(self.port), "--audit-log", str(self.audit), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.until(lambda: any(r["event"] == "attached" for r in self.records()), 60, "the sidecar to attach")

    def records(self) -> list[dict]:
        if not self.audit.exists():
            return []
        return [json.loads(line) for line in self.audit.read_text().splitlines() if line.endswith("}")]

    def until(self, check, timeout_s: float, what: str) -> float:
        start = time.monotonic()
        while not check():
            assert self.proc.poll() is None, f"the sidecar died: {self.proc.communicate()[1][-2000:]}"
            assert time.monotonic() - start < timeout_s, f"timed out waiting for {what}"
            time.sleep(0.2)
        return time.monotonic() - start

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, ""

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=10)


def stable(side: Running, seconds: int) -> bool:
    """The sidecar's last ``seconds`` decisions all saw every service healthy and the SLO met."""
    seen = [r for r in side.records() if r["event"] == "decision"][-seconds:]
    return len(seen) == seconds and all(r["slo"] and all(v["healthy"] for v in r["saw"].values()) for r in seen)


def heal(live: str, side: Running, drills: list[tuple[str, str, str]]) -> None:
    """Inject each fault once the stack has settled, and check the sidecar applied the repair that
    fits and the stack is healthy again."""
    from deeplops.chaostoolkit import actions

    for fault, target, repair in drills:
        # One incident at a time: healthy for 5 s running, in the sidecar's eyes too.
        side.until(lambda: stable(side, 5), 30, "the stack to settle")
        before = len(side.records())
        actions.inject_fault(fault, target, live)
        # Health as the sidecar sees it: probing from here too would load the services with traffic
        # no deployment has (and that the agent never saw in training).
        side.until(lambda: not stable(side, 1), 10, f"{fault} to show")
        side.until(lambda: stable(side, 2), 45, f"the sidecar to heal {fault} on {target}")
        applied = [r["chose"] for r in side.records()[before:] if r.get("did") == "applied"]
        assert {"repair": repair, "target": target} in applied, applied


@pytest.mark.docker
@pytest.mark.slow
def test_the_pretrained_agent_heals_killed_paused_full_and_flooded_services(live, tmp_path):
    side = Running(live, tmp_path, "--policy", PRETRAINED)
    try:
        drills = [("kill", "db", "restart"), ("pause", "cache", "restart"), ("disk_full", "queue", "clean_disk"),
                  ("net_saturation", "gateway", "rate_limit")]  # fmt: skip
        heal(live, side, drills)
        code, text = side.get("/metrics")
        assert code == 200 and 'deeplops_sidecar_repairs_total{outcome="healed",repair="restart",service="db"}' in text
        assert side.get("/healthz")[0] == 200
    finally:
        assert side.stop() == 0
    decisions = [r for r in side.records() if r["event"] == "decision"]
    assert decisions and all({"saw", "chose", "did", "slo"} <= set(r) for r in decisions)


@pytest.mark.docker
@pytest.mark.slow
def test_a_dry_run_decides_but_touches_nothing(live, tmp_path):
    from deeplops.chaostoolkit import actions
    from deeplops.dockerbox import stack

    actions.inject_fault("kill", "db", live)
    side = Running(live, tmp_path, "--policy", "runbook", "--dry-run")
    try:
        side.until(lambda: any(r.get("reason") == "dry_run" for r in side.records()), 20, "a decision")
        time.sleep(3)
    finally:
        assert side.stop() == 0
    assert stack.containers(stack.connect(), live)["db"].status == "exited"
    assert not any(r.get("did") == "applied" for r in side.records())
    assert {"repair": "restart", "target": "db"} in [r["chose"] for r in side.records() if r.get("reason") == "dry_run"]


@pytest.mark.docker
@pytest.mark.slow
def test_a_container_outside_the_project_is_never_touched(live, tmp_path):
    from deeplops.dockerbox import image, stack

    client = stack.connect()
    stranger = client.containers.run(image.ensure_image(client), ["sleep", "600"], detach=True,
                                     name=f"dlstranger-{os.getpid()}")  # fmt: skip
    try:
        stranger.kill()
        side = Running(live, tmp_path, "--policy", "autoheal")
        try:
            time.sleep(8)
        finally:
            assert side.stop() == 0
        stranger.reload()
        assert stranger.status == "exited"
        assert stranger.name not in (tmp_path / "audit.jsonl").read_text()
    finally:
        stranger.remove(force=True)


@pytest.mark.docker
@pytest.mark.slow
def test_the_breaker_stops_a_repair_storm(live, tmp_path):
    from deeplops.chaostoolkit import actions

    # Restarts never end a full disk: autoheal would restart db (and its dependents) forever.
    actions.inject_fault("disk_full", "db", live)
    side = Running(live, tmp_path, "--policy", "autoheal", "--verify", "4", "--cooldown", "2", "--breaker", "3")
    try:
        side.until(lambda: any(r["event"] == "circuit_open" for r in side.records()), 60, "the breaker to open")
        opened = len(side.records())
        time.sleep(10)
    finally:
        assert side.stop() == 0
    records = side.records()
    assert not any(r.get("did") == "applied" for r in records[opened:])  # nothing after the breaker opened
    assert any(r.get("reason") == "circuit_open" for r in records[opened:])
    assert "ALERT: circuit breaker open" in side.proc.communicate()[1]


@pytest.fixture
def compose_project(docker_engine) -> Iterator[str]:
    """Two containers as Docker Compose labels them (web depends on db), with HEALTHCHECKs; the
    project's name. Made with the Docker API directly: the labels are what the sidecar reads."""
    from deeplops.dockerbox import image, stack

    client = stack.connect()
    project = f"dlcompose-{os.getpid()}"
    network = client.networks.create(project, driver="bridge")
    probe = "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/ping', timeout=1)"
    check = {"test": ["CMD", "python3", "-c", probe],
             "interval": 1_000_000_000, "timeout": 1_000_000_000, "retries": 1}  # fmt: skip
    made = []
    try:
        for service, depends in (("db", ""), ("web", "db:8080")):
            made.append(client.containers.run(
                image.ensure_image(client), detach=True, name=f"{project}-{service}-1", network=project,
                networking_config={project: client.api.create_endpoint_config(aliases=[service])},
                environment={"DEEPLOPS_SERVICE": service, "DEEPLOPS_DEPENDS": depends, "DEEPLOPS_DATA": ""},
                labels={"com.docker.compose.project": project, "com.docker.compose.service": service,
                        "com.docker.compose.depends_on": "db:service_started:false" if depends else ""},
                healthcheck=check,
            ))  # fmt: skip
        yield project
    finally:
        for c in made:
            c.remove(force=True)
        network.remove()


@pytest.mark.docker
@pytest.mark.slow
def test_a_compose_project_is_read_from_its_labels_and_healed_by_restart(compose_project, tmp_path):
    from deeplops.dockerbox import stack

    client = stack.connect()
    db = client.containers.get(f"{compose_project}-db-1")
    side = Running(compose_project, tmp_path, "--policy", "runbook")
    try:
        attached = next(r for r in side.records() if r["event"] == "attached")
        assert attached["services"] == ["db", "web"]  # dependencies first: web depends on db
        side.until(lambda: all(r["saw"]["db"]["healthy"] for r in side.records()[-1:] if r["event"] == "decision"),
                   30, "the HEALTHCHECKs to pass")  # fmt: skip
        db.kill()
        side.until(lambda: any(r.get("chose") == {"repair": "restart", "target": "db"} and r["did"] == "applied"
                               for r in side.records()), 30, "the sidecar to restart db")  # fmt: skip
        side.until(lambda: (db.reload() or db.status) == "running", 10, "db to run again")
    finally:
        assert side.stop() == 0
