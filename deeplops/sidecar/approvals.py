"""Repairs that wait for a human (``--approve REPAIRS``).

When the policy chooses such a repair and the guards allow it, the sidecar does not apply it: it
opens a request (logged, notified, served on its HTTP port), and holds the repair back until a
human approves it (``deeplops sidecar approve ID``, or ``POST /approvals/ID/approve`` with the
project's token). An approved repair is applied the next time the policy still chooses it; a
denied one is held back, and a request nobody answered lapses, after ``--approval-timeout``.
The loop and the HTTP server's threads share the book, under one lock.

The token is a random secret the sidecar writes, mode 0600, beside the project's lock
(``sidecar-PROJECT.token``), where ``deeplops sidecar approve`` on the same host reads it; it
lives as long as the sidecar.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deeplops.errors import ConfigError
from deeplops.faults import Repair
from deeplops.sidecar import lock

APPROVAL_TIMEOUT_S = 300.0
"""How long a request waits for a human, and how long an answer holds (``--approval-timeout``)."""

PENDING, APPROVED, DENIED = "pending", "approved", "denied"


@dataclass
class Request:
    """One repair awaiting, or given, a human's answer."""

    id: str
    service: str
    repair: Repair
    why: str
    expires: float
    """On the monotonic clock: past it the request lapses, answered or not."""
    state: str = PENDING

    def shown(self, now: float) -> dict[str, Any]:
        return {"id": self.id, "target": self.service, "repair": self.repair.label, "state": self.state,
                "why": self.why, "expires_in_s": round(max(0.0, self.expires - now), 1)}  # fmt: skip


class Approvals:
    """The book of requests: at most one live request per service and repair."""

    def __init__(self, repairs: tuple[Repair, ...], timeout_s: float, token: str) -> None:
        self.repairs = frozenset(repairs)
        self.timeout_s = timeout_s
        self._token = token
        self._live: dict[tuple[str, Repair], Request] = {}
        self._lock = threading.Lock()

    def gate(self, service: str, repair: Repair, why: str, now: float) -> tuple[str, Request]:
        """What to do with ``repair`` of ``service`` now the policy chose it and the guards allow it:
        ``apply`` (approved: the request is used up), ``requested`` (a new request), ``pending`` or
        ``denied`` (held back)."""
        with self._lock:
            request = self._live.get((service, repair))
            if request is None:
                request = Request(secrets.token_hex(4), service, repair, why, now + self.timeout_s)
                self._live[(service, repair)] = request
                return "requested", request
            if request.state == APPROVED:
                del self._live[(service, repair)]
                return "apply", request
            return request.state, request

    def answer(self, request_id: str, approve: bool, now: float) -> Request:
        """Approve or deny a pending request: KeyError when there is no such live request,
        ValueError (saying its state) when it was answered already."""
        with self._lock:
            request = next((r for r in self._live.values() if r.id == request_id and now < r.expires), None)
            if request is None:
                raise KeyError(request_id)
            if request.state != PENDING:
                raise ValueError(request.state)
            request.state = APPROVED if approve else DENIED
            request.expires = now + self.timeout_s  # an answer holds for a timeout of its own
            return request

    def lapse(self, now: float) -> list[Request]:
        """Drop the requests past their time; those pending or approved (a denial just ends). Only
        the loop drops them, so each lapse it reports is audited, whoever looked at the book since."""
        with self._lock:
            gone = [key for key, r in self._live.items() if now >= r.expires]
            return [r for r in (self._live.pop(key) for key in gone) if r.state != DENIED]

    def listed(self, now: float) -> list[dict[str, Any]]:
        with self._lock:
            return [r.shown(now) for r in self._live.values() if now < r.expires]

    def authorized(self, header: str | None) -> bool:
        """Whether an Authorization header carries the token (compared in constant time)."""
        scheme, _, given = (header or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self._token.encode())


def token_path(project: str) -> Path:
    return lock.LOCK_DIR / f"sidecar-{project}.token"


def write_token(project: str) -> str:
    """A fresh token for ``project``'s sidecar, in its file (mode 0600, never through a link)."""
    token = secrets.token_urlsafe(24)
    path = token_path(project)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # ours from a sidecar killed before it could remove it: we hold the lock now
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise ConfigError(f"--approve: cannot write the approval token {path} ({exc.strerror})") from None
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def read_token(project: str) -> str:
    """The token of ``project``'s running sidecar; a ConfigError when none was written here."""
    path = token_path(project)
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise ConfigError(f"no sidecar with --approve runs on project {project!r} here (no token at {path})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the approval token {path} ({exc.strerror})") from None


def remove_token(project: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        token_path(project).unlink()


def now() -> float:
    """The clock requests are timed on (the loop's: monotonic)."""
    return time.monotonic()
