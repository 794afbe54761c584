"""Webhook notifications of the sidecar's repairs (``--notify URL``).

Each event is POSTed as JSON with a Slack-compatible ``text`` saying what was done, where, why
(the symptoms the sidecar saw) and what came of it, beside the same facts as fields. Each URL has
its own queue and thread: a slow or failing webhook never delays a decision, nor another webhook.
A failed POST is retried with exponential back-off; an event that still fails, or finds its queue
full, is counted (``deeplops_sidecar_notifications_total``) and named on standard error.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter

from deeplops import bounds
from deeplops.errors import ConfigError

ATTEMPTS = 4
"""POSTs of one event before it is given up on: back-off of 1, 2 and 4 s between them."""
FIRST_BACKOFF_S = 1.0
TIMEOUT_S = 5.0
"""Seconds one POST may take: a webhook slower than this counts as failed (and is retried)."""
QUEUE_SIZE = 1000
"""Events waiting per webhook; past this, new ones are dropped (and counted), never waited for."""


def check_url(url: object) -> str:
    """``url`` when it is an http or https URL with a host; otherwise a ConfigError saying so."""
    parsed = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(f"--notify must be an http:// or https:// URL with a host, got {bounds.shown(url)}")
    return str(url)


def symptoms(saw: dict[str, dict[str, Any]], service: str) -> str:
    """What was wrong, in words, from a decision's readings: the target's symptoms first, then
    every other unhealthy service's."""
    parts = [_ill(service, saw.get(service, {})) or f"{service} looked healthy"]
    parts += [ill for name, seen in saw.items() if name != service and (ill := _ill(name, seen))]
    return "; ".join(parts)


def _ill(name: str, seen: dict[str, Any]) -> str | None:
    found = []
    if not seen.get("running", 1):
        found.append("not running")
    elif not seen.get("healthy", 1):
        found.append("failing its health check")
    if seen.get("errors", 0) >= 0.5:
        found.append(f"{seen['errors']:.0%} of requests failing")
    if seen.get("disk", 0) >= 0.9:
        found.append(f"disk {seen['disk']:.0%} full")
    if seen.get("cpu", 0) >= 0.9:
        found.append(f"CPU at {seen['cpu']:.0%}")
    if seen.get("net", 0) >= 0.9:
        found.append(f"network at {seen['net']:.0%} of its link")
    return f"{name} {', '.join(found)}" if found else None


class Notifier:
    """Delivers events to ``urls`` in the background."""

    def __init__(self, urls: tuple[str, ...], project: str, counter: Counter,
                 log: Callable[[str], None], backoff_s: float = FIRST_BACKOFF_S) -> None:  # fmt: skip
        self.project, self.counter, self.log, self.backoff_s = project, counter, log, backoff_s
        self._queues: list[queue.Queue[dict[str, Any] | None]] = []
        self._threads = []
        for url in urls:
            q: queue.Queue[dict[str, Any] | None] = queue.Queue(QUEUE_SIZE)
            thread = threading.Thread(target=self._deliver, args=(check_url(url), q), daemon=True,
                                      name=f"notify {urllib.parse.urlsplit(url).hostname}")  # fmt: skip
            thread.start()
            self._queues.append(q)
            self._threads.append(thread)

    def send(self, event: str, text: str, **fields: Any) -> None:
        """Queue one event for every webhook; returns at once."""
        body = {"text": f"deeplops sidecar on {self.project}: {text}", "event": event, "project": self.project,
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **fields}  # fmt: skip
        for q in self._queues:
            try:
                q.put_nowait(body)
            except queue.Full:
                self.counter.labels("dropped").inc()

    def close(self, within_s: float = 1.0) -> int:
        """Stop, giving the queues up to ``within_s`` to drain; the events left undelivered."""
        for q in self._queues:
            with contextlib.suppress(queue.Full):
                q.put_nowait(None)
        deadline = time.monotonic() + within_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return sum(q.qsize() for q in self._queues)

    def _deliver(self, url: str, q: queue.Queue[dict[str, Any] | None]) -> None:
        while (body := q.get()) is not None:
            data = json.dumps(body).encode()
            for attempt in range(ATTEMPTS):
                try:
                    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
                    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                        response.read()
                    self.counter.labels("sent").inc()
                    break
                except (OSError, ValueError) as exc:  # URLError, HTTPError and timeouts are OSErrors
                    if attempt == ATTEMPTS - 1:
                        self.counter.labels("failed").inc()
                        self.log(f"sidecar: notification to {_host(url)} failed {ATTEMPTS} times ({exc}): "
                                 f"{body['text']}")  # fmt: skip
                    else:
                        time.sleep(self.backoff_s * 2**attempt)


def _host(url: str) -> str:
    """Where a webhook is, without its path (which often holds its secret)."""
    parsed = urllib.parse.urlsplit(url)
    return f"{parsed.scheme}://{parsed.netloc}"
