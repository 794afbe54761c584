"""What the sidecar tells: a JSON Lines audit log of every decision, and Prometheus metrics with
``/healthz`` on one HTTP port."""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from deeplops.errors import ConfigError


class Audit:
    """One JSON object per line, flushed at once: nothing is lost when the sidecar is killed."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        try:
            self._out: IO[str] = path.open("a") if path is not None else sys.stdout
        except OSError as exc:
            raise ConfigError(f"--audit-log {path}: cannot write ({exc.strerror})") from None

    def write(self, record: dict[str, Any]) -> None:
        self._out.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")
        self._out.flush()

    def close(self) -> None:
        if self.path is not None:
            self._out.close()


class Metrics:
    """The sidecar's Prometheus metrics, in their own registry."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.repairs = Counter("deeplops_sidecar_repairs", "Repairs applied", ["repair", "service", "outcome"],
                               registry=r)  # fmt: skip
        self.suppressed = Counter("deeplops_sidecar_suppressed", "Repairs the guards or --dry-run held back",
                                  ["repair", "service", "reason"], registry=r)  # fmt: skip
        self.decisions = Counter("deeplops_sidecar_decisions", "Decisions taken (one per interval)", registry=r)
        self.errors = Counter("deeplops_sidecar_errors", "Failed ticks (Docker API errors), retried", registry=r)
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


class Server:
    """``/metrics`` (Prometheus text) and ``/healthz`` (200 while the loop runs) on ``port``."""

    def __init__(self, metrics: Metrics, port: int, alive: threading.Event) -> None:
        registry = metrics.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    body, ctype, code = generate_latest(registry), CONTENT_TYPE_LATEST, 200
                elif self.path == "/healthz":
                    ok = alive.is_set()
                    body, ctype, code = (b"ok\n" if ok else b"stopped\n"), "text/plain", 200 if ok else 503
                else:
                    body, ctype, code = b"not found: try /metrics or /healthz\n", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the audit log is the record."""

        try:
            self.httpd = ThreadingHTTPServer(("0.0.0.0", port), Handler)
        except OSError as exc:
            raise ConfigError(f"--metrics-port {port}: cannot listen ({exc.strerror})") from None
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
