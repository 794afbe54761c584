"""The sidecar's loop: every interval, measure the stack, ask the policy, guard, repair, record.

Starting takes, in this order, everything that can fail: the project's lock, the stack, the
metrics port, the audit log. A sidecar that cannot start has written nothing and holds nothing.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deeplops import bounds
from deeplops.actions import N_ORDER_ACTIONS, Policy, decode_order, order_action, padded_adjacency
from deeplops.errors import ConfigError, SandboxError
from deeplops.faults import Repair
from deeplops.observation import Feature
from deeplops.sidecar import live as live_mod
from deeplops.sidecar.approvals import APPROVAL_TIMEOUT_S, Approvals, Request, remove_token, write_token
from deeplops.sidecar.guards import GuardConfig, Guards
from deeplops.sidecar.lock import ProjectLock, check_project
from deeplops.sidecar.notify import Notifier, check_url, symptoms
from deeplops.sidecar.telemetry import AUDIT_KEEP, METRICS_ADDRESS, Audit, Metrics, Server, check_address

TRANSIENT = (SandboxError, OSError)
"""Errors a tick may meet while the engine restarts or containers come and go: retried. The engine's
arrive as EngineError (a SandboxError, translated at the Docker backend's edge); an OSError is the
host's (a volume or interface gone with its container, a full disk under the audit log)."""
MAX_BACKOFF_S = 30.0
MIN_INTERVAL_S, MAX_INTERVAL_S = 0.1, 3600.0
"""Bounds of ``--interval``: faster than 10 decisions a second outruns one measurement of a stack."""
MAX_AUDIT_MB = 1e6
"""Largest ``--audit-max-mb`` (a TB): a bound, not advice."""
SETTLED_FRACTION = 0.9
"""A reading's counter rates (CPU, network) must span this much of an interval to be decided on."""


def unsettled(span_s: float | None, interval_s: float) -> str | None:
    """Why no decision may be taken on a reading whose counter rates span ``span_s`` seconds (None:
    the first reading since attaching), or None when one may.

    Rates over a sliver of time are noise: right after attaching, the first reading's CPU came
    out at a full core for a healthy service on 3 starts in 5, from the attach's own probes
    divided by a few milliseconds, and a symptom policy restarted it.
    """
    if span_s is None:
        return "first reading since attaching: CPU and network rates need a full interval of history"
    if span_s < SETTLED_FRACTION * interval_s:
        return f"CPU and network rates span {span_s:.2f} s, expected a full interval ({interval_s:g} s)"
    return None


@dataclass(frozen=True)
class SidecarConfig:
    """How the sidecar runs."""

    project: str
    """The sandbox or Compose project to watch (its label value); also the name of its lock."""
    interval_s: float = 1.0
    """Seconds between decisions: trained agents know one tick as one second (since-repair, restarts)."""
    dry_run: bool = False
    """Decide and log, touch nothing."""
    guards: GuardConfig = field(default_factory=GuardConfig)
    """Allowlist, rate limit, cooldown and circuit breaker."""
    verify_s: float = 15.0
    """A repair whose service is not healthy again within this long did not work (for the breaker)."""
    metrics_port: int | None = 9464
    """Port of /metrics and /healthz; None for none, 0 for any free one."""
    metrics_address: str = METRICS_ADDRESS
    """Address /metrics and /healthz listen on: loopback unless told otherwise."""
    audit_log: Path | None = None
    """Where the JSON audit log goes; None for standard output."""
    audit_max_mb: float = 100.0
    """Size in MiB past which the audit log is rotated."""
    audit_keep: int = AUDIT_KEEP
    """Rotated audit files kept (``PATH.1`` newest)."""
    notify: tuple[str, ...] = ()
    """Webhook URLs every applied, failed, or breaker-held repair and its outcome is POSTed to."""
    approve: tuple[Repair, ...] = ()
    """Repairs that wait for a human's approval (``deeplops.sidecar.approvals``)."""
    approval_timeout_s: float = APPROVAL_TIMEOUT_S
    """Seconds a request waits for an answer, and an answer holds."""

    def __post_init__(self) -> None:
        check_project(self.project)
        bounds.number(self.interval_s, "--interval (seconds)", MIN_INTERVAL_S, MAX_INTERVAL_S)
        bounds.number(self.verify_s, "--verify (seconds)", MIN_INTERVAL_S, bounds.MAX_SECONDS)
        if self.metrics_port is not None:
            bounds.whole(self.metrics_port, "--metrics-port", 0, bounds.MAX_PORT)
        check_address(self.metrics_address)
        bounds.number(self.audit_max_mb, "--audit-max-mb", 0.01, MAX_AUDIT_MB)
        bounds.whole(self.audit_keep, "--audit-keep", 1, 100)
        for url in self.notify:
            check_url(url)
        bounds.number(self.approval_timeout_s, "--approval-timeout (seconds)", 1.0, bounds.MAX_SECONDS)
        if self.approve and self.metrics_port is None:
            raise ConfigError("--approve takes its answers on the HTTP port: give a --metrics-port other than 0")


@dataclass
class _Pending:
    """A repair applied and not yet judged."""

    id: int
    repair: Repair
    at: float


class Sidecar:
    """A policy healing one live stack behind guard rails (see ``deeplops.sidecar``)."""

    def __init__(self, policy: Policy, config: SidecarConfig,
                 log: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> None:  # fmt: skip
        if policy.privileged:
            raise ConfigError(f"policy {policy.name!r} reads the injected faults, which a live system does not "
                              "tell: expected a policy that acts on symptoms")  # fmt: skip
        self.policy, self.config, self.log = policy, config, log
        self.guards = Guards(config.guards)
        self.metrics = Metrics()
        self.alive = threading.Event()
        self.stack: live_mod.LiveStack | None = None
        self._mask_now = np.zeros((1, N_ORDER_ACTIONS), np.bool_)
        """The action mask of the stack attached to (set by ``_use``)."""
        self._fingerprint: frozenset[str] = frozenset()
        self._measured_at: float | None = None
        self._pending: dict[str, _Pending] = {}
        self._down_since: dict[str, float] = {}
        self._detected: set[str] = set()
        self._ids = itertools.count(1)
        self.ticks = 0
        self._closed = False
        self._saw_now: dict[str, dict[str, Any]] = {}
        self._breaker_told: set[tuple[str, Repair]] = set()
        self.notifier: Notifier | None = None
        self.approvals: Approvals | None = None
        # Whatever can fail, before anything is written: a second sidecar, a stack it cannot
        # watch, a port in use, a log it may not write. Each is undone if a later one fails.
        self.lock = ProjectLock(config.project)
        stack: live_mod.LiveStack | None = None
        server: Server | None = None
        audit: Audit | None = None
        try:
            stack = live_mod.attach(config.project)
            fingerprint = stack.built_from
            if config.approve:
                token = write_token(config.project)
                self.approvals = Approvals(config.approve, config.approval_timeout_s, token)
            if config.metrics_port is not None:
                server = Server(self.metrics, config.metrics_port, self.alive, config.metrics_address,
                                self.approvals, self._answered)  # fmt: skip
            self.server = server
            self.audit = audit = Audit(config.audit_log, int(config.audit_max_mb * 2**20), config.audit_keep)
            self._use(stack, fingerprint)
            if config.notify:
                self.notifier = Notifier(config.notify, config.project, self.metrics.notifications, log)
        except BaseException:
            for opened in (audit, server, stack):
                if opened is not None:
                    opened.close()
            if self.approvals is not None:
                remove_token(config.project)
            self.lock.release()
            raise

    # -- the loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Decide every interval until ``stop`` is set; transient errors are retried with back-off."""
        self.alive.set()
        failures = 0
        try:
            while not stop.is_set():
                start = time.monotonic()
                try:
                    self.step(start)
                    failures = 0
                    wait = self.config.interval_s - (time.monotonic() - start)
                except TRANSIENT as exc:
                    failures += 1
                    wait = min(MAX_BACKOFF_S, self.config.interval_s * 2 ** (failures - 1))
                    self.metrics.errors.inc()
                    self.audit.write({"event": "error", "error": f"{exc.__class__.__name__}: {str(exc)[:200]}",
                                      "retry_in_s": round(wait, 1)})  # fmt: skip
                    self._drop_stack()  # re-attach from scratch next time
                stop.wait(max(0.0, wait))
        finally:
            self.alive.clear()

    def close(self) -> None:
        """Stop serving metrics, release the stack (its containers stay) and the project's lock; the
        audit log ends with the counters /metrics served, so a reader can check no record is
        missing (``audit_rotations`` more than ``--audit-keep``: the oldest files were dropped)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._drop_stack()
            # The webhooks' queues drained first: a notification sent while they drain is counted.
            undelivered = self.notifier.close() if self.notifier is not None else None
            stopped = {"event": "stopped", "ticks": self.ticks, "counted": self.metrics.totals(),
                       "audit_rotations": self.audit.rotations}  # fmt: skip
            if undelivered is not None:
                stopped["notifications_undelivered"] = undelivered
            self.audit.write(stopped)
        finally:
            if self.server is not None:
                self.server.close()
            if self.approvals is not None:
                remove_token(self.config.project)
            self.audit.close()
            self.lock.release()

    def step(self, now: float) -> dict[str, Any]:
        """One decision: measure, judge past repairs, choose, guard, act; returns its audit record."""
        stack = self._ensure_stack()
        measured = time.monotonic()
        stack.measure()
        span = None if self._measured_at is None else measured - self._measured_at
        self._measured_at = measured
        self.ticks += 1
        names = stack.topology.names
        health = {s: bool(h) for s, h in zip(names, stack.health[0], strict=True)}
        self._saw_now = self._saw(stack)
        self._track(health, now)
        self._judge(health, now)
        if self.approvals is not None:
            for request in self.approvals.lapse(now):
                self.audit.write({"event": "approval_lapsed", **request.shown(now)})
                self._notify("lapsed", request.service, request.repair, f"approval request {request.id} lapsed "
                             f"({request.state})", approval_id=request.id)  # fmt: skip
        record: dict[str, Any] = {"event": "decision", "tick": self.ticks, "slo": bool(stack.slo[0]),
                                  "saw": self._saw_now, "chose": None, "did": "nothing"}  # fmt: skip
        self.metrics.decisions.inc()
        self.metrics.slo.set(float(stack.slo[0]))
        self.metrics.unhealthy.set(sum(not h for h in health.values()))
        breaker_open = self.guards.breaker_open(now)
        self.metrics.breaker.set(float(breaker_open))
        if not breaker_open:
            self._breaker_told.clear()
        why = unsettled(span, self.config.interval_s)
        if why is not None:  # the policy is not asked: it would answer the noise
            self.metrics.held.labels("settling").inc()
            record.update(did="held", reason="settling", why=why)
            self.audit.write(record)
            return record
        slot, repair = decode_order(int(self.policy.act(self._observation(stack), self._mask_now)[0]))
        if repair is not Repair.NOOP and slot < len(names):
            service = names[slot]
            record["chose"] = {"repair": repair.label, "target": service}
            record.update(self._act(stack, service, repair, now))
        self.audit.write(record)
        return record

    # -- pieces -----------------------------------------------------------------------------

    def _act(self, stack: live_mod.LiveStack, service: str, repair: Repair, now: float) -> dict[str, Any]:
        if stack.stopped_by_owner(service):  # a deploy replacing it, or a person: theirs to start
            reason: str | None = "stopped_by_owner"
        else:
            reason = "dry_run" if self.config.dry_run else self.guards.verdict(service, repair, now)
        if reason is None and repair not in stack.repairs_of(service):
            reason = "unsupported"
        approval: dict[str, Any] = {}
        if reason is None and self.approvals is not None and repair in self.approvals.repairs:
            reason, approval = self._ask(service, repair, now)
        if reason is not None:
            self.metrics.suppressed.labels(repair.label, service, reason).inc()
            if reason == "circuit_open" and (service, repair) not in self._breaker_told:
                self._breaker_told.add((service, repair))  # once per opening: the policy asks every tick
                self._notify("suppressed", service, repair, "held back by the open circuit breaker")
            return {"did": "suppressed", "reason": reason, **approval}
        if service in self._down_since and service not in self._detected:
            self._detected.add(service)
            self.metrics.detection.observe(now - self._down_since[service])
        self.guards.applied(service, now)
        try:
            stack.apply(service, repair)
        except TRANSIENT as exc:
            self.metrics.repairs.labels(repair.label, service, "failed").inc()
            failed = {"did": "failed", "error": f"{exc.__class__.__name__}: {str(exc)[:200]}"}
            self._notify("failed", service, repair, f"failed ({failed['error']})")
            if self._changed(stack):
                # Not the repair's failure but the stack's change (a container removed under it):
                # no strike for the breaker, and the next decision attaches to the stack as it is.
                self.audit.write({"event": "stack_changed", "during": f"{repair.label} {service}"})
                self._drop_stack()
                return {**failed, "stack_changed": True}
            self._fail(service, now)
            return failed
        pending = _Pending(next(self._ids), repair, now)
        self._pending[service] = pending
        self._notify("applied", service, repair, f"applied (repair {pending.id}); checking it heals within "
                     f"{self.config.verify_s:g} s", repair_id=pending.id, **approval)  # fmt: skip
        return {"did": "applied", "repair_id": pending.id, **approval}

    def _judge(self, health: dict[str, bool], now: float) -> None:
        """Close the book on repairs whose service is healthy again, or that had their time."""
        for service, p in list(self._pending.items()):
            healed = health.get(service, False)
            if not healed and now - p.at < self.config.verify_s:
                continue
            del self._pending[service]
            self.metrics.repairs.labels(p.repair.label, service, "healed" if healed else "not_healed").inc()
            self.audit.write({"event": "outcome", "repair_id": p.id, "target": service, "repair": p.repair.label,
                              "healed": healed, "after_s": round(now - p.at, 2)})  # fmt: skip
            came = f"healed it in {now - p.at:.1f} s" if healed else f"did not heal it in {now - p.at:.1f} s"
            self._notify("healed" if healed else "not_healed", service, p.repair, f"repair {p.id} {came}",
                         repair_id=p.id)  # fmt: skip
            if healed:
                self.guards.outcome(service, True, now)
            else:
                self._fail(service, now)

    def _fail(self, service: str, now: float) -> None:
        if self.guards.outcome(service, False, now):
            until = self.config.guards.breaker_reset_s
            self.log(f"ALERT: circuit breaker open: {self.config.guards.breaker_failures} repairs in a row did not "
                     f"restore health; no repairs for {until:.0f} s")  # fmt: skip
            self.audit.write({"event": "circuit_open", "failures": self.config.guards.breaker_failures,
                              "closed_for_s": until})  # fmt: skip
            self.metrics.breaker.set(1.0)

    def _ask(self, service: str, repair: Repair, now: float) -> tuple[str | None, dict[str, Any]]:
        """The approval book's say on a repair the guards allow: None (approved: apply it), or why it
        is held back; and the request's id. A new request is logged, told, and notified."""
        assert self.approvals is not None
        verdict, request = self.approvals.gate(service, repair, symptoms(self._saw_now, service), now)
        if verdict == "apply":
            return None, {"approval_id": request.id}
        if verdict == "requested":
            self.audit.write({"event": "approval_requested", **request.shown(now)})
            how = f"deeplops sidecar approve {request.id} --project {self.config.project}"
            lapse = f"it lapses in {self.approvals.timeout_s:g} s"
            self.log(f"sidecar: {repair.label} {service} awaits approval: {how} (or --deny); {lapse}")
            self._notify("awaiting_approval", service, repair, f"awaits approval ({how}, or POST "
                         f"/approvals/{request.id}/approve); {lapse}", approval_id=request.id)  # fmt: skip
        return ("denied" if verdict == "denied" else "awaiting_approval"), {"approval_id": request.id}

    def _answered(self, request: Request, by: str) -> None:
        """A human's answer, from the HTTP server's thread: logged and notified at once."""
        approved = request.state == "approved"
        self.audit.write({"event": "approval_granted" if approved else "approval_denied", "approval_id": request.id,
                          "target": request.service, "repair": request.repair.label, "by": by})  # fmt: skip
        what = "approved: applied when the policy next chooses it" if approved else "denied: held back"
        self._notify("approved" if approved else "denied", request.service, request.repair,
                     f"approval request {request.id} {what}", approval_id=request.id)  # fmt: skip

    def _notify(self, event: str, service: str, repair: Repair, what: str, **fields: Any) -> None:
        """Tell the webhooks, if any: what was done to which service, why, and what came of it."""
        if self.notifier is None:
            return
        why = symptoms(self._saw_now, service)
        self.notifier.send(event, f"{repair.label} {service}: {what}. It saw: {why}.", service=service,
                           repair=repair.label, symptoms=why, **fields)  # fmt: skip

    def _track(self, health: dict[str, bool], now: float) -> None:
        """Detection and recovery times, per service episode of ill health."""
        for service, ok in health.items():
            if not ok:
                self._down_since.setdefault(service, now)
            elif service in self._down_since:
                self.metrics.recovery.observe(now - self._down_since.pop(service))
                self._detected.discard(service)

    def _ensure_stack(self) -> live_mod.LiveStack:
        """The stack, attached afresh when its containers changed (added, removed or recreated)."""
        if self.stack is not None:
            now = self.stack.fingerprint()
            if now == self._fingerprint:
                return self.stack
            self.audit.write({"event": "stack_changed", "containers": len(now)})
            self._drop_stack()
        stack = live_mod.attach(self.config.project)
        return self._use(stack, stack.built_from)

    def _use(self, stack: live_mod.LiveStack, fingerprint: frozenset[str]) -> live_mod.LiveStack:
        """Watch ``stack`` from now on: a fresh policy, and readings that must settle again."""
        self.stack = stack
        self._fingerprint = fingerprint
        self._measured_at = None
        self.policy.reset(1)
        record: dict[str, Any] = {"event": "attached", "project": self.config.project,
                                  "services": list(stack.topology.names)}  # fmt: skip
        if stack.ignored:
            record["ignored"] = list(stack.ignored)
        record["repairs"] = {s: [r.label for r in stack.repairs_of(s)] for s in stack.topology.names}
        if stack.refused:
            record["refused"] = list(stack.refused)
        self._mask_now = self._mask(stack)
        self.audit.write(record)
        return stack

    def _changed(self, stack: live_mod.LiveStack) -> bool:
        """Whether the stack's containers are no longer those attached to (unknown counts as changed)."""
        try:
            return stack.fingerprint() != self._fingerprint
        except TRANSIENT:
            return True

    def _drop_stack(self) -> None:
        if self.stack is not None:
            self.stack.close()
        self.stack = None

    @staticmethod
    def _observation(stack: live_mod.LiveStack) -> dict[str, np.ndarray]:
        return {"services": stack.observe(), "adjacency": padded_adjacency(stack.topology)}

    @staticmethod
    def _mask(stack: live_mod.LiveStack) -> np.ndarray:
        """Noop, and the repairs that apply to each service of the stack (on a Compose project, those
        its labels declare; on a sandbox, clean_disk only where there is a volume)."""
        mask = np.zeros((1, N_ORDER_ACTIONS), np.bool_)
        mask[0, 0] = True
        for slot, service in enumerate(stack.topology.names):
            for repair in stack.repairs_of(service):
                mask[0, order_action(slot, repair)] = True
        mask.setflags(write=False)
        return mask

    @staticmethod
    def _saw(stack: live_mod.LiveStack) -> dict[str, dict[str, Any]]:
        feats = stack.observe()[0]
        keys = {
            "healthy": Feature.HEALTHY, "running": Feature.RUNNING, "latency": Feature.LATENCY,
            "errors": Feature.ERROR_RATE, "disk": Feature.DISK_USED, "cpu": Feature.CPU, "net": Feature.NET_RX,
        }  # fmt: skip
        return {
            s: {k: round(float(feats[i, f]), 3) for k, f in keys.items()} for i, s in enumerate(stack.topology.names)
        }
