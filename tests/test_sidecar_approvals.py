"""Repairs that wait for a human (deeplops.sidecar.approvals): the book of requests, its HTTP
endpoint and token, 'deeplops sidecar approve', and on real containers a held repair applied
once approved, with every step in the audit log and at a local webhook."""

from __future__ import annotations

import json
import os
import stat
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from deeplops.faults import Repair
from deeplops.sidecar import lock
from deeplops.sidecar.approvals import Approvals, read_token, token_path, write_token
from deeplops.sidecar.telemetry import Metrics, Server


def test_a_request_waits_then_is_applied_once_when_approved():
    book = Approvals((Repair.RESTART,), timeout_s=60, token="t")
    verdict, request = book.gate("db", Repair.RESTART, "db not running", now=0)
    assert verdict == "requested" and request.state == "pending"
    assert book.gate("db", Repair.RESTART, "db not running", now=1) == ("pending", request)
    assert book.answer(request.id, approve=True, now=2).state == "approved"
    assert book.gate("db", Repair.RESTART, "db not running", now=3) == ("apply", request)
    again, fresh = book.gate("db", Repair.RESTART, "db not running", now=4)  # used up: a new request
    assert again == "requested" and fresh.id != request.id


def test_a_denied_repair_is_held_back_until_the_denial_lapses():
    book = Approvals((Repair.RESTART,), timeout_s=60, token="t")
    _, request = book.gate("db", Repair.RESTART, "", now=0)
    book.answer(request.id, approve=False, now=10)
    assert book.gate("db", Repair.RESTART, "", now=69)[0] == "denied"
    assert book.lapse(now=70) == []  # a denial just ends
    assert book.gate("db", Repair.RESTART, "", now=71)[0] == "requested"


def test_an_unanswered_request_lapses_and_cannot_be_answered_after():
    book = Approvals((Repair.RESTART,), timeout_s=60, token="t")
    _, request = book.gate("db", Repair.RESTART, "", now=0)
    _, other = book.gate("api", Repair.RESTART, "", now=30)
    assert book.lapse(now=59) == []
    assert book.lapse(now=60) == [request]
    with pytest.raises(KeyError):
        book.answer(request.id, approve=True, now=61)
    book.answer(other.id, approve=True, now=61)
    with pytest.raises(ValueError, match="approved"):
        book.answer(other.id, approve=False, now=62)
    assert [r["id"] for r in book.listed(now=62)] == [other.id]


def test_a_request_lapsed_while_someone_looked_is_still_reported_to_the_loop():
    book = Approvals((Repair.RESTART,), timeout_s=60, token="t")
    _, request = book.gate("db", Repair.RESTART, "", now=0)
    assert book.listed(now=61) == []
    with pytest.raises(KeyError):
        book.answer(request.id, approve=True, now=62)
    assert book.lapse(now=63) == [request]  # the loop still audits its lapse


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer wrong", "Basic dDpzZWNyZXQ=", "secret"])
def test_only_the_bearer_of_the_token_is_authorized(header):
    assert not Approvals((), 60, "secret").authorized(header)
    assert Approvals((), 60, "secret").authorized("Bearer secret")


class Endpoint:
    """A sidecar's HTTP server with an approval book, as the daemon wires them."""

    def __init__(self, token: str = "secret") -> None:
        self.book = Approvals((Repair.RESTART,), timeout_s=300, token=token)
        self.answers: list[tuple[str, str, str]] = []
        alive = threading.Event()
        alive.set()
        self.server = Server(Metrics(), 0, alive, approvals=self.book,
                             on_answer=lambda r, by: self.answers.append((r.id, r.state, by)))  # fmt: skip

    def call(self, method: str, path: str, token: str | None = "secret") -> tuple[int, Any]:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        url = f"http://127.0.0.1:{self.server.port}{path}"
        request = urllib.request.Request(url, b"" if method == "POST" else None, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    e = Endpoint()
    yield e
    e.server.close()


def test_the_endpoint_lists_and_answers_requests_for_the_tokens_bearer_only(endpoint):
    from deeplops.sidecar.approvals import now

    _, request = endpoint.book.gate("db", Repair.RESTART, "db not running", now())
    for token in (None, "wrong"):
        assert endpoint.call("GET", "/approvals", token)[0] == 401
        assert endpoint.call("POST", f"/approvals/{request.id}/approve", token)[0] == 401
    code, listed = endpoint.call("GET", "/approvals")
    assert code == 200 and [(r["id"], r["target"], r["repair"], r["state"]) for r in listed] == [
        (request.id, "db", "restart", "pending")]  # fmt: skip
    assert endpoint.call("POST", "/approvals/0badc0de/approve") == (
        404, {"error": "no approval request 0badc0de (it lapsed, or never was)"})  # fmt: skip
    assert endpoint.answers == []
    code, answer = endpoint.call("POST", f"/approvals/{request.id}/approve")
    assert code == 200 and answer["state"] == "approved"
    assert endpoint.answers == [(request.id, "approved", "127.0.0.1")]
    assert endpoint.call("POST", f"/approvals/{request.id}/deny") == (
        409, {"error": f"approval request {request.id} is approved already"})  # fmt: skip


def test_approve_on_the_command_line_reads_the_projects_token_and_answers(cli, tmp_path, monkeypatch):
    from deeplops.sidecar.approvals import now

    monkeypatch.setattr(lock, "LOCK_DIR", tmp_path)
    e = Endpoint(token=write_token("shop"))
    try:
        _, request = e.book.gate("db", Repair.RESTART, "", now())
        result = cli("sidecar", "approve", request.id, "--project", "shop", "--metrics-port", str(e.server.port))
        assert result.code == 0, result.err
        assert result.out.strip() == f"approved: restart db (request {request.id})"
        again = cli("sidecar", "approve", request.id, "--project", "shop", "--deny",
                    "--metrics-port", str(e.server.port))  # fmt: skip
        assert again.code == 2
        assert again.err.strip() == f"deeplops: error: approval request {request.id}: approval request " \
                                    f"{request.id} is approved already"  # fmt: skip
    finally:
        e.server.close()
    gone = cli("sidecar", "approve", "abc", "--project", "other", "--metrics-port", str(e.server.port))
    assert gone.code == 2 and gone.err.strip() == (
        f"deeplops: error: no sidecar with --approve runs on project 'other' here (no token at "
        f"{tmp_path / 'sidecar-other.token'})")  # fmt: skip
    bad = cli("sidecar", "approve", "../x", "--project", "shop")
    assert bad.code == 2 and "ID must be the request's id" in bad.err


def test_the_token_file_is_private_and_replaces_a_planted_link(tmp_path, monkeypatch):
    monkeypatch.setattr(lock, "LOCK_DIR", tmp_path)
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    token_path("shop").symlink_to(target)
    token = write_token("shop")
    assert target.read_text() == "keep"
    st = os.lstat(token_path("shop"))
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert read_token("shop") == token and len(token) >= 32


def test_approve_without_the_http_port_is_refused(cli):
    result = cli("sidecar", "--policy", "runbook", "--project", "shop", "--approve", "restart", "--metrics-port", "0")
    assert result.code == 2
    assert result.err.strip() == (
        "deeplops: error: --approve takes its answers on the HTTP port: give a --metrics-port other than 0"
    )
    noop = cli("sidecar", "--policy", "runbook", "--project", "shop", "--approve", "noop")
    assert noop.code == 2 and "--approve lists repairs" in noop.err


# -- on real containers -------------------------------------------------------------------


@pytest.mark.docker
@pytest.mark.slow
def test_a_repair_held_for_approval_is_applied_once_approved_every_step_logged_and_notified(live, tmp_path, cli):
    from test_sidecar import Running
    from test_sidecar_notify import Receiver

    from deeplops.chaostoolkit import actions
    from deeplops.dockerbox import stack

    receiver = Receiver()
    side = Running(live, tmp_path, "--policy", "runbook", "--approve", "restart", "--notify", receiver.url)
    try:
        actions.inject_fault("kill", "db", live)
        receiver.wait_for(1, timeout_s=30)
        asked = receiver.bodies[0]  # db's, first: the runbook repairs what failed before what depends on it
        assert asked["event"] == "awaiting_approval" and (asked["service"], asked["repair"]) == ("db", "restart")
        assert f"deeplops sidecar approve {asked['approval_id']} --project {live}" in asked["text"]
        # Held: several decisions later db is still down, and the request is asked once.
        side.until(lambda: sum(r.get("reason") == "awaiting_approval" for r in side.records()) >= 3, 20, "holds")
        assert stack.containers(stack.connect(), live)["db"].status == "exited"
        result = cli("sidecar", "approve", asked["approval_id"], "--project", live, "--metrics-port", str(side.port))
        assert result.code == 0, result.err
        side.until(lambda: any(b["event"] == "healed" for b in receiver.bodies), 30, "db healed")
    finally:
        assert side.stop() == 0
        receiver.close()
    told = [b["event"] for b in receiver.bodies if b["service"] == "db"]
    assert told == ["awaiting_approval", "approved", "applied", "healed"]
    records = side.records()
    steps = [r["event"] for r in records if r["event"].startswith("approval_") and r["target"] == "db"]
    assert steps == ["approval_requested", "approval_granted"]
    [applied] = [r for r in records if r.get("did") == "applied"]
    assert applied["chose"] == {"repair": "restart", "target": "db"}
    assert applied["approval_id"] == asked["approval_id"]
    [outcome] = [r for r in records if r["event"] == "outcome"]
    assert outcome["healed"] is True
    assert not token_path(live).exists()  # removed with the sidecar
