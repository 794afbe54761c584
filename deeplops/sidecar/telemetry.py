"""What the sidecar tells: a JSON Lines audit log of every decision, and Prometheus metrics with
``/healthz`` on one HTTP port."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import os
import re
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from deeplops import bounds
from deeplops.errors import ConfigError
from deeplops.sidecar.approvals import Approvals, Request
from deeplops.sidecar.approvals import now as approval_clock

AUDIT_MAX_BYTES = 100 * 2**20
"""Size past which the audit log is rotated (``--audit-max-mb``)."""
AUDIT_KEEP = 5
"""Rotated audit files kept (``--audit-keep``)."""
METRICS_ADDRESS = "127.0.0.1"
"""Where /metrics and /healthz listen unless told: this host only (``--metrics-address``)."""


class Audit:
    """One JSON object per line, flushed at once: nothing is lost when the sidecar is killed.

    A file is created mode 0600 (it tells the stack's state and every repair: root's to read; a
    log shipper that is not root reads standard output instead, with no --audit-log), never
    through a symlink (``O_NOFOLLOW``: a root process appending wherever a link in a shared
    folder points is how files get clobbered), and only a regular file owned by this user is
    appended to. Past ``max_bytes`` it is rotated between two lines: ``PATH`` becomes
    ``PATH.1``, ``PATH.1`` becomes ``PATH.2`` and so on, ``keep`` old files at most, each whole
    JSON lines (``read_audit`` reads them all back in order).
    """

    def __init__(self, path: Path | None, max_bytes: int = AUDIT_MAX_BYTES, keep: int = AUDIT_KEEP) -> None:
        self.path, self.max_bytes, self.keep = path, max_bytes, keep
        self.rotations = 0
        """Times the file was rotated; more than ``keep`` means the oldest records were dropped."""
        self._size = 0
        self._lock = threading.Lock()  # the loop and the approval endpoint both write
        self._fd = -1 if path is None else self._open(path)

    def _open(self, path: Path) -> int:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            fd = os.open(path, flags, 0o600)
        except OSError as exc:
            # ENXIO: a FIFO with no reader (O_NONBLOCK: refused at once rather than waited on).
            why = {errno.ELOOP: "it is a symbolic link", errno.ENXIO: "expected a regular file"}.get(
                exc.errno or 0, exc.strerror
            )
            raise ConfigError(f"--audit-log {path}: cannot write ({why})") from None
        st = os.fstat(fd)
        problem = None
        if not stat.S_ISREG(st.st_mode):
            problem = "expected a regular file"
        elif st.st_uid != os.geteuid():
            problem = f"owned by uid {st.st_uid}, expected uid {os.geteuid()}: others could read or forge it"
        if problem is not None:
            os.close(fd)
            raise ConfigError(f"--audit-log {path}: {problem}")
        if st.st_mode & 0o077:
            os.fchmod(fd, 0o600)  # an older log of ours, made before logs were private
        self._size = st.st_size
        return fd

    def write(self, record: dict[str, Any]) -> None:
        """Append one record; a ConfigError when it cannot be written: a sidecar that cannot record
        what it does stops (it is not retried like a failed tick)."""
        line = json.dumps({"time": round(time.time(), 3), **record}) + "\n"
        with self._lock:
            self._write(line)

    def _write(self, line: str) -> None:
        try:
            if self.path is None:
                sys.stdout.write(line)
                sys.stdout.flush()
                return
            data = line.encode()
            if self._size and self._size + len(data) > self.max_bytes:
                self._rotate(self.path)
            os.write(self._fd, data)
            self._size += len(data)
        except OSError as exc:
            raise ConfigError(f"--audit-log {self.path or 'standard output'}: cannot write ({exc.strerror})") from None

    def _rotate(self, path: Path) -> None:
        os.close(self._fd)
        self._fd = -1
        # rename() replaces a link at the target rather than following it.
        for n in range(self.keep, 0, -1):
            older = rotated(path, n)
            if n == self.keep:
                older.unlink(missing_ok=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    older.rename(rotated(path, n + 1))
        path.rename(rotated(path, 1))
        self.rotations += 1
        self._fd = self._open(path)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def rotated(path: Path, n: int) -> Path:
    """The ``n``-th newest rotated file of the audit log at ``path``."""
    return path.with_name(f"{path.name}.{n}")


def read_audit(path: Path) -> list[dict[str, Any]]:
    """Every whole record of the audit log at ``path``, its rotated files first, oldest first."""
    files = []
    n = 1
    while rotated(path, n).exists():
        files.append(rotated(path, n))
        n += 1
    records: list[dict[str, Any]] = []
    for file in [*reversed(files), path]:
        with contextlib.suppress(FileNotFoundError):  # rotated while we read: the next read sees it
            records += [json.loads(line) for line in file.read_text().splitlines() if line.endswith("}")]
    return records


class Metrics:
    """The sidecar's Prometheus metrics, in their own registry."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.repairs = Counter("deeplops_sidecar_repairs", "Repairs applied", ["repair", "service", "outcome"],
                               registry=r)  # fmt: skip
        self.suppressed = Counter("deeplops_sidecar_suppressed", "Repairs the guards or --dry-run held back",
                                  ["repair", "service", "reason"], registry=r)  # fmt: skip
        self.decisions = Counter("deeplops_sidecar_decisions", "Decisions taken (one per interval)", registry=r)
        self.held = Counter("deeplops_sidecar_held", "Decisions held back before asking the policy", ["reason"],
                            registry=r)  # fmt: skip
        self.errors = Counter("deeplops_sidecar_errors", "Failed ticks (Docker API errors), retried", registry=r)
        self.notifications = Counter("deeplops_sidecar_notifications", "Webhook notifications (--notify) by outcome",
                                     ["outcome"], registry=r)  # fmt: skip
        self.slo = Gauge("deeplops_sidecar_slo_ok", "1 when the stack's users are served", registry=r)
        self.unhealthy = Gauge("deeplops_sidecar_unhealthy_services", "Services failing their health check",
                               registry=r)  # fmt: skip
        self.breaker = Gauge("deeplops_sidecar_circuit_open", "1 while the circuit breaker holds repairs back",
                             registry=r)  # fmt: skip
        buckets = (1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144)
        self.detection = Histogram("deeplops_sidecar_detection_seconds",
                                   "From a service turning unhealthy to the sidecar's first repair of it",
                                   buckets=buckets, registry=r)  # fmt: skip
        self.recovery = Histogram("deeplops_sidecar_recovery_seconds",
                                  "From a service turning unhealthy to healthy again", buckets=buckets,
                                  registry=r)  # fmt: skip

    def totals(self) -> dict[str, int]:
        """Each counter's total over its labels, by short name (``decisions``, ``repairs``, ...)."""
        found: dict[str, int] = {}
        for metric in self.registry.collect():
            if metric.type == "counter":
                name = metric.name.removeprefix("deeplops_sidecar_")
                found[name] = int(sum(s.value for s in metric.samples if s.name.endswith("_total")))
        return found


def check_address(address: object) -> str:
    """``address`` when it is an IP address to listen on; otherwise a ConfigError saying so."""
    try:
        return str(ipaddress.ip_address(address))  # type: ignore[arg-type]
    except ValueError:
        raise ConfigError(
            f"--metrics-address must be an IP address (127.0.0.1, 0.0.0.0, ::1, ...), got {bounds.shown(address)}"
        ) from None


_ANSWER = re.compile(r"/approvals/([0-9a-f]{1,16})/(approve|deny)")


class _Server6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class Server:
    """``/metrics`` (Prometheus text) and ``/healthz`` (200 while the loop runs) on ``address:port``;
    with ``approvals``, also ``GET /approvals`` and ``POST /approvals/ID/approve`` or ``/deny``,
    for a bearer of the approval token (``on_answer`` is told of each answer and who gave it).

    Loopback unless told otherwise: the metrics name every service and repair of the stack, and
    a sidecar runs as root, so reaching it from elsewhere is a choice to make, not a default.
    """

    def __init__(self, metrics: Metrics, port: int, alive: threading.Event, address: str = METRICS_ADDRESS,
                 approvals: Approvals | None = None,
                 on_answer: Callable[[Request, str], None] = lambda request, by: None) -> None:  # fmt: skip
        registry = metrics.registry
        address = check_address(address)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif self.path == "/healthz":
                    ok = alive.is_set()
                    self._send(200 if ok else 503, b"ok\n" if ok else b"stopped\n")
                elif self.path == "/approvals" and approvals is not None:
                    if self._authorized(approvals):
                        self._json(200, approvals.listed(approval_clock()))
                else:
                    self._send(404, b"not found: try /metrics or /healthz\n")

            def do_POST(self) -> None:
                self.rfile.read(min(int(self.headers.get("Content-Length") or 0), 65536))
                found = _ANSWER.fullmatch(self.path)
                if approvals is None or found is None:
                    self._send(404, b"not found: POST /approvals/ID/approve or /approvals/ID/deny\n")
                    return
                if not self._authorized(approvals):
                    return
                request_id, verb = found.groups()
                try:
                    request = approvals.answer(request_id, verb == "approve", approval_clock())
                except KeyError:
                    self._json(404, {"error": f"no approval request {request_id} (it lapsed, or never was)"})
                    return
                except ValueError as exc:
                    self._json(409, {"error": f"approval request {request_id} is {exc} already"})
                    return
                on_answer(request, self.client_address[0])
                self._json(200, request.shown(approval_clock()))

            def _authorized(self, approvals: Approvals) -> bool:
                if approvals.authorized(self.headers.get("Authorization")):
                    return True
                self._json(401, {"error": "expected 'Authorization: Bearer TOKEN' with the project's approval token"})
                return False

            def _json(self, code: int, value: Any) -> None:
                self._send(code, json.dumps(value).encode() + b"\n", "application/json")

            def _send(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the audit log is the record."""

        kind = _Server6 if ipaddress.ip_address(address).version == 6 else ThreadingHTTPServer
        try:
            self.httpd = kind((address, port), Handler)
        except OSError as exc:
            raise ConfigError(f"--metrics-port {port} on {address}: cannot listen ({exc.strerror})") from None
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
