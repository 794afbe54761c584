"""The sidecar's webhook notifications (deeplops.sidecar.notify) against a local receiver: what a
message says, retries with back-off, and a slow or dead webhook never holding the caller."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from deeplops.errors import ConfigError
from deeplops.sidecar.daemon import SidecarConfig
from deeplops.sidecar.notify import ATTEMPTS, Notifier, check_url, symptoms


class Receiver:
    """A webhook on loopback: records each JSON body; answers ``fail_first`` requests with 500 and,
    while ``hold`` is clear, holds every request open."""

    def __init__(self, fail_first: int = 0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.attempts = 0
        self.hold = threading.Event()
        self.hold.set()
        self.got = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.hold.wait(30)
                with receiver.got:
                    receiver.attempts += 1
                    failing = receiver.attempts <= fail_first
                    if not failing:
                        receiver.bodies.append(body)
                    receiver.got.notify_all()
                self.send_response(500 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hooks/secret-token"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def wait_for(self, attempts: int, timeout_s: float = 20) -> None:
        with self.got:
            assert self.got.wait_for(lambda: self.attempts >= attempts, timeout_s), self.attempts

    def close(self) -> None:
        self.hold.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def counter() -> Counter:
    return Counter("n", "notifications", ["outcome"], registry=CollectorRegistry())


def count(c: Counter, outcome: str) -> float:
    [metric] = c.collect()
    return sum(s.value for s in metric.samples if s.name == "n_total" and s.labels["outcome"] == outcome)


SAW = {
    "db": {"healthy": 0.0, "running": 0.0, "errors": 1.0, "disk": 0.2, "cpu": 0.0, "net": 0.0, "latency": 0.0},
    "api": {"healthy": 0.0, "running": 1.0, "errors": 0.75, "disk": 0.1, "cpu": 0.1, "net": 0.0, "latency": 1.0},
    "cache": {"healthy": 1.0, "running": 1.0, "errors": 0.0, "disk": 0.95, "cpu": 0.0, "net": 0.0, "latency": 0.0},
}


def test_symptoms_name_the_targets_first_then_every_other_unhealthy_service():
    assert symptoms(SAW, "db") == (
        "db not running, 100% of requests failing; api failing its health check, 75% of requests failing; "
        "cache disk 95% full"
    )
    healthy = {"db": {"healthy": 1.0, "running": 1.0, "errors": 0.0, "disk": 0.1, "cpu": 0.2, "net": 0.0}}
    assert symptoms(healthy, "db") == "db looked healthy"


def test_an_event_arrives_as_json_with_a_slack_text_saying_what_where_and_why(receiver):
    c = counter()
    notifier = Notifier((receiver.url,), "shop", c, log=lambda line: None)
    notifier.send("applied", "restart db: applied (repair 3)", service="db", repair="restart", repair_id=3)
    receiver.wait_for(1)
    assert notifier.close() == 0
    [body] = receiver.bodies
    assert body["text"] == "deeplops sidecar on shop: restart db: applied (repair 3)"
    assert {k: body[k] for k in ("event", "project", "service", "repair", "repair_id")} == {
        "event": "applied", "project": "shop", "service": "db", "repair": "restart", "repair_id": 3}  # fmt: skip
    assert count(c, "sent") == 1


def test_a_failing_webhook_is_retried_with_back_off_until_it_answers():
    receiver = Receiver(fail_first=ATTEMPTS - 1)
    try:
        c = counter()
        notifier = Notifier((receiver.url,), "shop", c, log=lambda line: None, backoff_s=0.01)
        notifier.send("healed", "repair 3 healed it")
        receiver.wait_for(ATTEMPTS)
        notifier.close()
        assert receiver.attempts == ATTEMPTS and [b["event"] for b in receiver.bodies] == ["healed"]
        assert count(c, "sent") == 1 and count(c, "failed") == 0
    finally:
        receiver.close()


def test_a_webhook_that_never_answers_well_is_given_up_counted_and_logged_without_its_secret_path():
    receiver = Receiver(fail_first=100)
    try:
        c, lines = counter(), []
        notifier = Notifier((receiver.url,), "shop", c, log=lines.append, backoff_s=0.01)
        notifier.send("failed", "restart db: failed")
        receiver.wait_for(ATTEMPTS)
        notifier.close(within_s=5)
        assert receiver.attempts == ATTEMPTS and count(c, "failed") == 1
        [line] = lines
        assert f"failed {ATTEMPTS} times" in line and "restart db: failed" in line
        assert "secret-token" not in line and receiver.url.split("/hooks")[0] in line
    finally:
        receiver.close()


def test_a_held_webhook_never_holds_the_sender_nor_another_webhook(receiver):
    slow = Receiver()
    slow.hold.clear()  # holds every request open until released
    try:
        c = counter()
        notifier = Notifier((slow.url, receiver.url), "shop", c, log=lambda line: None)
        for n in range(20):
            notifier.send("applied", f"repair {n}")  # returns while the slow webhook holds its first POST
        receiver.wait_for(20)
        assert [b["text"][-9:].strip() for b in receiver.bodies][:2] == ["repair 0", "repair 1"]
        assert slow.attempts == 0 and not slow.bodies  # still holding the first one
        slow.hold.set()
        slow.wait_for(20)
        notifier.close()
        assert len(slow.bodies) == 20 and count(c, "sent") == 40
    finally:
        slow.close()


@pytest.mark.parametrize("url", ["slack.example/hook", "ftp://x/y", "http://", "", "file:///etc/passwd"])
def test_a_notify_url_that_is_not_http_is_refused(url):
    with pytest.raises(ConfigError, match="--notify must be an http:// or https:// URL with a host, got"):
        check_url(url)
    with pytest.raises(ConfigError):
        SidecarConfig("shop", notify=(url,))


def test_a_bad_notify_url_on_the_command_line_exits_2_in_one_line(cli):
    result = cli("sidecar", "--policy", "runbook", "--project", "shop", "--notify", "ftp://x/y")
    assert result.code == 2
    assert result.err.strip() == (
        "deeplops: error: --notify must be an http:// or https:// URL with a host, got 'ftp://x/y'"
    )


@pytest.mark.docker
@pytest.mark.slow
def test_a_running_sidecar_tells_the_webhook_what_it_did_why_and_what_came_of_it(live, receiver, tmp_path):
    from test_sidecar import Running

    from deeplops.chaostoolkit import actions
    from deeplops.sidecar.telemetry import read_audit

    side = Running(live, tmp_path, "--policy", "runbook", "--notify", receiver.url)
    try:
        actions.inject_fault("kill", "db", live)
        receiver.wait_for(2, timeout_s=60)  # applied, then the outcome
    finally:
        assert side.stop() == 0
    applied, healed = receiver.bodies[:2]
    assert applied["event"] == "applied" and (applied["service"], applied["repair"]) == ("db", "restart")
    assert applied["text"].startswith(f"deeplops sidecar on {live}: restart db: applied (repair ")
    assert "It saw: db not running" in applied["text"]
    assert healed["event"] == "healed" and healed["repair_id"] == applied["repair_id"]
    assert f"repair {applied['repair_id']} healed it in " in healed["text"]
    records = read_audit(tmp_path / "audit.jsonl")
    [outcome] = [r for r in records if r["event"] == "outcome"]
    assert outcome["healed"] is True and outcome["repair_id"] == applied["repair_id"]
    assert records[-1]["event"] == "stopped" and records[-1]["notifications_undelivered"] == 0
    assert records[-1]["counted"]["notifications"] == len(receiver.bodies)
