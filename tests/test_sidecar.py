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
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from engine_proxy import EngineProxy

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


def test_pretrained_names_the_shipped_agent_of_each_role():
    from deeplops.policies import load_policy

    order, chaos = load_policy("pretrained", "order"), load_policy("pretrained", "chaos")
    assert order.role.value == "order" and chaos.role.value == "chaos" and not order.privileged


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("bench", "sidecar", "--policy", "nope"), "unknown order policy 'nope'"),
        (("bench", "sidecar", "--policy", "runbook", "--cap", "0"), "--cap (seconds) must be a number in (0, 3600]"),
        (("bench", "soak", "--gap", "30"), "--gap expects MIN,MAX"),
        (("bench", "soak", "--gap", "30,10"), "--gap MAX (seconds) must be a number in [30, 3600]"),
        (("bench", "soak", "--policy", "nope"), "unknown order policy 'nope'"),
    ],
)
def test_bad_bench_input_is_one_line_and_exit_2_before_any_container(cli, args, says):
    result = cli(*args)
    assert result.code == 2 and says in result.err and len(result.err.strip().splitlines()) == 1, result.err


def decision(t: float, healthy: bool, applied: str | None = None) -> dict:
    """An audit record of one decision, as the sidecar writes it."""
    record = {"event": "decision", "time": t, "slo": healthy, "saw": {"db": {"healthy": float(healthy)}},
              "chose": None, "did": "nothing"}  # fmt: skip
    if applied:
        record.update(chose={"repair": applied, "target": "db"}, did="applied")
    return record


def test_an_incident_is_scored_from_the_audit_records_after_the_injection():
    from deeplops.sidecar.trial import score

    records = [
        decision(101.0, True),  # the fault has not shown yet
        decision(102.0, False),
        {"event": "outcome", "time": 102.5, "repair_id": 1, "target": "db", "healed": False},
        decision(103.0, False, applied="restart"),
        decision(104.0, False),
        decision(105.5, True),  # healthy again: recovered
        decision(107.0, False, applied="restart"),  # a later incident's, not this one's
    ]
    assert score(records, injected=100.0) == (3.0, 5.5, ["restart db"])
    # A repair applied before the fault showed still counts, and so does the recovery after it.
    assert score([decision(100.5, True, applied="clean_disk"), decision(101.5, True)], 100.0) == (
        0.5, 1.5, ["clean_disk db"])  # fmt: skip
    assert score(records[:5], injected=100.0) == (3.0, None, ["restart db"])  # not recovered yet
    assert score([decision(101.0, False), decision(102.0, False)], 100.0) == (None, None, [])


# -- on a live sandbox ---------------------------------------------------------------------

PRETRAINED = str(Path(__file__).parent.parent / "agents" / "pretrained" / "order.zip")


class Running:
    """A sidecar process and its audit log."""

    def __init__(self, project: str, tmp: Path, *args: str, env: dict[str, str] | None = None) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.audit = tmp / "audit.jsonl"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "deeplops", "sidecar", "--project", project, "--interval", "1",
             "--metrics-port", str(self.port), "--audit-log", str(self.audit), *args],
            stdout=subprocess.DEVNULL, stderr=(tmp / "stderr.log").open("w"), env={**os.environ, **(env or {})},
        )  # fmt: skip
        self.stderr = tmp / "stderr.log"
        self.until(lambda: any(r["event"] == "attached" for r in self.records()), 60, "the sidecar to attach")

    def records(self) -> list[dict]:
        from deeplops.sidecar.telemetry import read_audit

        return read_audit(self.audit)

    def until(self, check, timeout_s: float, what: str) -> float:
        start = time.monotonic()
        while not check():
            assert self.proc.poll() is None, f"the sidecar died: {self.stderr.read_text()[-2000:]}"
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


@pytest.mark.docker
@pytest.mark.slow
def test_bench_sidecar_times_the_pretrained_agent_healing_each_fault_with_its_repair(cli, docker_engine, tmp_path):
    result = cli("bench", "sidecar", "--policy", "pretrained", "--json", str(tmp_path / "bench.json"))
    assert result.code == 0, result.err
    found = json.loads((tmp_path / "bench.json").read_text())["incidents"]
    proper = {"kill": "restart", "pause": "restart", "disk_full": "clean_disk", "net_saturation": "rate_limit"}
    assert sorted(i["fault"] for i in found) == sorted(proper)  # one of each, all under the one policy
    for i in found:
        assert i["policy"] == "pretrained" and f"{proper[i['fault']]} {i['target']}" in i["repairs"], i
        assert i["detection_s"] is not None and i["recovery_s"] is not None, i
        assert 0 < i["detection_s"] <= i["recovery_s"], i  # a repair first, then the stack healthy again
        assert f"{i['detection_s']:.1f} / {i['recovery_s']:.1f}" in result.out  # the table


@pytest.mark.docker
@pytest.mark.slow
def test_a_short_soak_keeps_the_sidecar_up_and_every_decision_in_its_audit_log(cli, docker_engine, tmp_path):
    out = tmp_path / "soak.json"
    result = cli("bench", "soak", "--policy", "pretrained", "--minutes", "0.75", "--gap", "4,8", "--json", str(out))
    assert result.code == 0, result.err
    soak = json.loads(out.read_text())
    assert soak["alive"] and soak["exit_code"] == 0
    assert soak["faults_injected"] >= 5 and soak["audit"]["decisions"] > 0
    # Ticks are numbered by the sidecar: as many distinct ones in the log as it took decisions.
    assert soak["audit"]["ticks"] == soak["audit"]["decisions"] == soak["counted"]["decisions"]
    assert soak["audit"] == soak["counted"] and soak["every_decision_audited"]
    assert soak["rss_mb_start"] > 0 and len(soak["rss_mb"]) >= 5  # sampled every 10 s and at the end


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
    assert "ALERT: circuit breaker open" in side.stderr.read_text()


def compose_service(project: str, service: str, depends: str = ""):
    """One container as Docker Compose labels it, with a HEALTHCHECK, on the project's network.
    Made with the Docker API directly: the labels are what the sidecar reads."""
    from deeplops.dockerbox import image, stack

    client = stack.connect()
    probe = "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/ping', timeout=1)"
    check = {"test": ["CMD", "python3", "-c", probe],
             "interval": 1_000_000_000, "timeout": 1_000_000_000, "retries": 1}  # fmt: skip
    return client.containers.run(
        image.ensure_image(client), detach=True, name=f"{project}-{service}-1", network=project,
        networking_config={project: client.api.create_endpoint_config(aliases=[service])},
        environment={"DEEPLOPS_SERVICE": service, "DEEPLOPS_DEPENDS": f"{depends}:8080" if depends else "",
                     "DEEPLOPS_DATA": ""},
        labels={"com.docker.compose.project": project, "com.docker.compose.service": service,
                "com.docker.compose.depends_on": f"{depends}:service_started:false" if depends else ""},
        healthcheck=check,
    )  # fmt: skip


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


def attached(side: Running) -> list[list[str]]:
    return [r["services"] for r in side.records() if r["event"] == "attached"]


def decided_since(side: Running, n: int) -> bool:
    """The sidecar has taken ``n`` more decisions (it is still deciding)."""
    return len([r for r in side.records() if r["event"] == "decision"]) >= n


@pytest.mark.docker
@pytest.mark.slow
def test_containers_added_to_and_removed_from_the_project_are_taken_in(compose_project, tmp_path):
    from deeplops.dockerbox import stack

    client = stack.connect()
    side = Running(compose_project, tmp_path, "--policy", "runbook")
    try:
        cache = compose_service(compose_project, "cache")
        side.until(lambda: ["cache", "db", "web"] in attached(side), 20, "the sidecar to take in cache")
        cache.kill()
        side.until(lambda: any(r.get("chose") == {"repair": "restart", "target": "cache"} and r["did"] == "applied"
                               for r in side.records()), 30, "the sidecar to restart the new service")  # fmt: skip
        cache.remove(force=True)
        side.until(lambda: attached(side)[-1] == ["db", "web"], 20, "the sidecar to let cache go")
        n = len(side.records())
        side.until(lambda: decided_since(side, n + 3), 20, "decisions after the change")
        assert not any(r["event"] == "error" for r in side.records())  # a change, not a failure
        assert all(set(r["saw"]) == {"db", "web"} for r in side.records()[n:] if r["event"] == "decision")
    finally:
        assert side.stop() == 0
    assert client.containers.get(f"{compose_project}-db-1").status == "running"


@pytest.mark.docker
@pytest.mark.slow
def test_an_engine_that_goes_away_is_retried_with_back_off_and_healing_resumes(live, tmp_path):
    from deeplops.chaostoolkit import actions

    engine = EngineProxy(tmp_path / "docker.sock")
    side = Running(live, tmp_path, "--policy", "runbook", env={"DOCKER_HOST": f"unix://{engine.path}"})
    try:
        side.until(lambda: stable(side, 3), 30, "the stack to settle")
        engine.cut()
        side.until(lambda: len([r for r in side.records() if r["event"] == "error"]) >= 3, 30, "retries")
        errors = [r for r in side.records() if r["event"] == "error"]
        assert [r["retry_in_s"] for r in errors[:3]] == [1.0, 2.0, 4.0]  # back-off doubles
        assert side.get("/healthz")[0] == 200  # the process lives on
        engine.restore()
        side.until(lambda: side.records()[-1]["event"] == "decision", 30, "decisions to resume")
        actions.inject_fault("kill", "db", live)
        side.until(lambda: any(r.get("chose") == {"repair": "restart", "target": "db"} and r["did"] == "applied"
                               for r in side.records()), 30, "the sidecar to restart db")  # fmt: skip
        side.until(lambda: stable(side, 2), 30, "the stack to heal")
    finally:
        engine.cut()
        assert side.stop() == 0


COMPOSE_EXAMPLE = Path(__file__).parent.parent / "sandbox" / "compose" / "docker-compose.yml"


@pytest.fixture
def compose_example(docker_engine, tmp_path) -> Iterator[tuple[str, int, Callable[..., str]]]:
    """sandbox/compose brought up with docker-compose under a project of its own: (project,
    metrics port, a docker-compose runner). Taken down with its volumes afterwards."""
    from compose_up import compose_up

    project = f"dlcx{os.getpid()}"
    with compose_up(COMPOSE_EXAMPLE, project) as (port, compose):
        yield project, port, compose


@pytest.mark.docker
@pytest.mark.slow
def test_the_compose_example_heals_the_shop_with_the_sidecar_in_a_container(compose_example, cli, tmp_path):
    from deeplops.dockerbox import stack

    project, port, compose = compose_example
    client = stack.connect()
    sidecar = client.containers.get(f"{project}_sidecar_1")

    def audit() -> list[dict]:
        lines = sidecar.logs(stdout=True, stderr=False).decode().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def until(check, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not check():
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {sidecar.logs()[-1500:]!r}"
            time.sleep(0.5)

    until(lambda: any(r["event"] == "attached" for r in audit()), 60, "the sidecar to attach")
    # Its lock is the host's: a second sidecar on the project, here on the host, is refused.
    second = cli("sidecar", "--policy", "runbook", "--project", project, "--metrics-port", "0",
                 "--audit-log", str(tmp_path / "second.jsonl"))  # fmt: skip
    assert second.code == 2 and f"on host {sidecar.id[:12]}; lock /run/deeplops/sidecar-{project}.lock" in second.err
    # Its own container is not a service of the stack it heals (deeplops.ignore).
    assert next(r for r in audit() if r["event"] == "attached")["services"] == [
        "cache", "db", "queue", "api", "gateway", "worker"]  # fmt: skip
    until(lambda: [r["slo"] for r in audit() if r["event"] == "decision"][-3:] == [True] * 3, 60, "a healthy stack")
    db = client.containers.get(f"{project}_db_1")
    db.kill()  # SIGKILL
    until(lambda: any(r.get("chose") == {"repair": "restart", "target": "db"} and r["did"] == "applied"
                      for r in audit()), 30, "the sidecar to restart db")  # fmt: skip
    until(lambda: (db.reload() or db.attrs["State"].get("Health", {}).get("Status")) == "healthy", 30, "db healthy")

    def healed_in_metrics() -> bool:  # the sidecar judges the repair at its next decision
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return 'deeplops_sidecar_repairs_total{outcome="healed",repair="restart",service="db"}' in r.read().decode()

    until(healed_in_metrics, 30, "the healed restart in /metrics")
    compose("stop", "-t", "5", "sidecar")
    sidecar.reload()
    assert sidecar.attrs["State"]["ExitCode"] == 0  # stopped by its SIGTERM handling, not killed after the grace
    assert audit()[-1]["event"] == "stopped"
